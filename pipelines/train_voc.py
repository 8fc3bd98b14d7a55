"""Train ESPNet on PASCAL VOC 2012 with configs/voc.yaml, then evaluate the best checkpoint on val.

    python pipelines/train_voc.py /data/VOCdevkit/VOC2012 runs/voc [--resume]

Runs exactly::

    wsi-seg train --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --out runs/voc [--resume]
    wsi-seg evaluate-dataset --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --model runs/voc/best.pt \\
        --split val --json runs/voc/val_metrics.json

The dataset root holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ in the official layout (docs/datasets.md).
"""

from _dataset_recipe import train_and_evaluate

CONFIG = "configs/voc.yaml"

if __name__ == "__main__":
    train_and_evaluate(CONFIG, __doc__)
