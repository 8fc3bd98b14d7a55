"""End-to-end `wsi-seg predict` against the pure model forward over the same tiles.

    python benchmarks/predict.py [--size 12000x10000] [--tile 1024] [--overlap 128] [--mpp 1.0]

Both are measured in this one run on a synthetic slide: (1) predict_slide end to
end (tissue detection, reading through OpenSlide, stitching, writing the TIFF);
(2) the model alone on the same tissue tiles, already decoded into tensors in
memory. Target: ratio (1) / (2) <= 1.25, i.e. reading and stitching hide behind
the model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _slides import synthetic_slide, untrained_checkpoint
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.slide import PredictOptions, predict_slide
from wsi_seg.inference.stitcher import TileGrid
from wsi_seg.io.slide import Slide
from wsi_seg.tissue import detect_tissue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="12000x10000")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--mpp", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    svs = synthetic_slide(width, height)
    predictor = TorchPredictor.from_checkpoint(untrained_checkpoint(mpp=args.mpp), device="cpu")
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = predict_slide(svs, Path(tmp) / "mask.tif", predictor, options)
        end_to_end = time.perf_counter() - start

    slide = Slide(svs)
    tissue = detect_tissue(slide)
    scale = args.mpp / slide.mpp
    grid = TileGrid(*slide.size_at(args.mpp), args.tile, args.overlap)
    boxes = np.array([[x * scale, y * scale, args.tile * scale, args.tile * scale] for y in grid.ys for x in grid.xs])
    keep = tissue.fractions(boxes, slide.mpp) > 0
    tiles = [slide.read(int(b[0]), int(b[1]), args.tile, args.tile, args.mpp) for b in boxes[keep]]
    batches = [predictor.preprocess(np.stack(tiles[i:i + args.batch_size]))
               for i in range(0, len(tiles), args.batch_size)]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            predictor.model(x)
    forward = time.perf_counter() - start

    print(f"slide {width}x{height} at 0.5 um/px; model espnet (untrained) at {args.mpp} um/px, "
          f"tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}, torch threads 2")
    print(f"tiles run: {result.tiles_run} of {result.tiles_total} (the rest have no tissue)")
    print(f"end-to-end predict : {end_to_end:8.2f} s")
    print(f"model forward only : {forward:8.2f} s")
    print(f"ratio              : {end_to_end / forward:8.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
