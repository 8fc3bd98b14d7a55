"""Train ESPNet on Cityscapes with configs/cityscapes.yaml, then evaluate the best checkpoint on val.

    python pipelines/train_cityscapes.py /data/cityscapes runs/cityscapes [--resume]

Runs exactly::

    wsi-seg train --config configs/cityscapes.yaml --data /data/cityscapes --out runs/cityscapes [--resume]
    wsi-seg evaluate-dataset --config configs/cityscapes.yaml --data /data/cityscapes --model runs/cityscapes/best.pt \\
        --split val --json runs/cityscapes/val_metrics.json

The dataset root holds leftImg8bit/ and gtFine/ in the official layout (docs/datasets.md).
"""

from _dataset_recipe import train_and_evaluate

CONFIG = "configs/cityscapes.yaml"

if __name__ == "__main__":
    train_and_evaluate(CONFIG, __doc__)
