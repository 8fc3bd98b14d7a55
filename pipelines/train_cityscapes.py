"""Train ESPNet on Cityscapes with configs/cityscapes.yaml, then evaluate the best checkpoint on val.

    python pipelines/train_cityscapes.py /data/cityscapes runs/cityscapes [--resume]

Runs exactly::

    wsi-seg train --config configs/cityscapes.yaml --data /data/cityscapes --out runs/cityscapes [--resume]
    wsi-seg evaluate-dataset --config configs/cityscapes.yaml --data /data/cityscapes --model runs/cityscapes/best.pt \\
        --split val --json runs/cityscapes/val_metrics.json

The dataset root holds leftImg8bit/ and gtFine/ in the official layout (docs/datasets.md).
"""

import sys

from wsi_seg.cli import main

CONFIG = "configs/cityscapes.yaml"

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    train = ["train", "--config", CONFIG, "--data", root, "--out", out, *extra]
    evaluate = ["evaluate-dataset", "--config", CONFIG, "--data", root, "--model", f"{out}/best.pt", "--split", "val",
                "--json", f"{out}/val_metrics.json"]
    for args in (train, evaluate):
        try:
            main(args, prog_name="wsi-seg")
        except SystemExit as exc:
            if exc.code:
                raise
