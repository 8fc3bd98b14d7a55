"""The shared body of the dataset recipes (train_cityscapes.py, train_voc.py): train with
a config, then evaluate the run's best checkpoint on the val split, through the CLI."""

import sys

from wsi_seg.cli import main


def train_and_evaluate(config: str, usage: str) -> None:
    """``python pipelines/train_X.py ROOT OUT [train options]``; exits with ``usage`` when
    the arguments are missing and with the command's code when a step fails."""
    if len(sys.argv) < 3:
        sys.exit(usage)
    root, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    train = ["train", "--config", config, "--data", root, "--out", out, *extra]
    evaluate = ["evaluate-dataset", "--config", config, "--data", root, "--model", f"{out}/best.pt", "--split", "val",
                "--json", f"{out}/val_metrics.json"]
    for args in (train, evaluate):
        try:
            main(args, prog_name="wsi-seg")
        except SystemExit as exc:
            if exc.code:
                raise
