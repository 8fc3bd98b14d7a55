"""Tile labelled biopsy slides and train the two-stage ESPNet recipe on them.

    python pipelines/train_biopsy.py --slides slides/ --masks labels/ \
        --store patches.zarr --config configs/biopsy.yaml --out runs/biopsy --mpp 2.0 --patch 128

Equivalent to::

    wsi-seg tile slides/ -o patches.zarr --masks labels/ --classes configs/biopsy.yaml --mpp 2.0 --patch 128
    wsi-seg train --config configs/biopsy.yaml --data patches.zarr --out runs/biopsy

Rerunning skips slides already tiled; add ``--resume`` to continue an interrupted
training run. Under ``torchrun`` only the training step should be launched (tile first).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wsi_seg.config import load_train_config
from wsi_seg.engine.train import train
from wsi_seg.errors import WsiSegError
from wsi_seg.tiling import tile_slides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=Path, required=True, help="slide files or a folder")
    parser.add_argument("--masks", type=Path, required=True, help="folder of label images (<stem>.mask.tif, ...)")
    parser.add_argument("--store", type=Path, default=Path("patches.zarr"))
    parser.add_argument("--config", type=Path, default=Path("configs/biopsy.yaml"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--mpp", type=float, default=2.0)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_train_config(args.config, store=args.store, out=args.out, epochs=args.epochs)
        summary = tile_slides([args.slides], args.store, masks_dir=args.masks, class_names=config.class_names,
                              mpp=args.mpp, patch=args.patch)
        print(f"tiled: {len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed")
        result = train(config, resume=args.resume)
    except WsiSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"best mIoU {result.best_miou:.4f}; model: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
