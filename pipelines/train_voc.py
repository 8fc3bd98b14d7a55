"""Train ESPNet on PASCAL VOC 2012 with configs/voc.yaml, then evaluate the best checkpoint on val.

    python pipelines/train_voc.py /data/VOCdevkit/VOC2012 runs/voc [--resume]

Runs exactly::

    wsi-seg train --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --out runs/voc [--resume]
    wsi-seg evaluate-dataset --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --model runs/voc/best.pt \\
        --split val --json runs/voc/val_metrics.json

The dataset root holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ in the official layout (docs/datasets.md).
"""

import sys

from wsi_seg.cli import main

CONFIG = "configs/voc.yaml"

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
