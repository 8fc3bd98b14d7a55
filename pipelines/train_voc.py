"""Train ESPNet on PASCAL VOC 2012 with configs/voc.yaml, then evaluate the best checkpoint.

    python pipelines/train_voc.py --data /data/VOCdevkit/VOC2012 --out runs/voc

Equivalent to::

    wsi-seg train --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --out runs/voc
    wsi-seg evaluate-dataset --config configs/voc.yaml --data /data/VOCdevkit/VOC2012 --model runs/voc/best.pt \\
        --split val --json runs/voc/val_metrics.json

The dataset root holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ in the official layout
(docs/datasets.md). Add ``--resume`` to continue an interrupted training run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from wsi_seg.config import load_train_config
from wsi_seg.data.image_pairs import open_pairs
from wsi_seg.engine.dataset_eval import evaluate_pairs, format_report
from wsi_seg.engine.train import train
from wsi_seg.errors import WsiSegError
from wsi_seg.inference.predictor import TorchPredictor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--config", type=Path, default=Path("configs/voc.yaml"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_train_config(args.config, store=args.data, out=args.out, epochs=args.epochs)
        result = train(config, resume=args.resume)
        pairs = open_pairs(config.data.kind, config.data.root, config.data.val_split or "val", len(config.classes),
                           ignore_index=config.optim.ignore_index, void_as_background=False)
        metrics = evaluate_pairs(TorchPredictor.from_checkpoint(result.checkpoint), pairs, config.class_names,
                                 resize=tuple(config.data.size), ignore_index=config.optim.ignore_index)
    except WsiSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_report(metrics))
    (result.run_dir / "val_metrics.json").write_text(json.dumps(metrics.as_dict(), indent=2))
    print(f"model: {result.checkpoint}; metrics: {result.run_dir / 'val_metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
