"""Several slides through a local dask.distributed cluster against the local (in-process) run.

    python benchmarks/distributed.py [--slides 6] [--size 4000x3000] [--workers 2] [--tile 1024] [--overlap 128]

Both are measured in this one run on the same synthetic slides (seeds 0..N-1, cached),
the same untrained ESPNet checkpoint (1 um/px) and the same options, on the CPU:
(1) ``predict_slides`` in this process, one slide after the other, torch using
``--workers`` threads; (2) ``predict_slides(client=...)`` on a ``LocalCluster`` of
``--workers`` processes with one thread and one torch thread each, one task per
slide, each worker loading the model once. The cluster's start and stop are timed
apart from the prediction. The masks of (2) are compared with those of (1), every
pyramid level, pixel for pixel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# This file's name hides the dask.distributed package while its folder leads sys.path:
# look there last (for _slides).
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE] + [str(HERE)]

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402

from _slides import synthetic_slide, untrained_checkpoint  # noqa: E402
from wsi_seg.cluster import dask_client  # noqa: E402
from wsi_seg.inference.predictor import ModelSpec  # noqa: E402
from wsi_seg.inference.slide import PredictOptions, predict_slides  # noqa: E402


def _pages(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def _same(first: Path, second: Path) -> bool:
    a, b = _pages(first), _pages(second)
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    slides = [synthetic_slide(width, height, seed=seed) for seed in range(args.slides)]
    model = ModelSpec(untrained_checkpoint(mpp=1.0), device="cpu")
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, progress=False,
                             worker_threads=1)
    torch.set_num_threads(args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        local_out, cluster_out = Path(tmp) / "local", Path(tmp) / "cluster"
        local_out.mkdir()
        cluster_out.mkdir()

        start = time.perf_counter()
        local = predict_slides(slides, local_out, model.load(), options, report=lambda line: None)
        local_s = time.perf_counter() - start

        start = time.perf_counter()
        with dask_client(cluster=f"local:{args.workers}") as client:
            client.wait_for_workers(args.workers)
            started_s = time.perf_counter() - start
            start = time.perf_counter()
            predict_slides(slides, cluster_out, model, options, report=lambda line: None, client=client)
            cluster_s = time.perf_counter() - start
            start = time.perf_counter()
        stopped_s = time.perf_counter() - start

        identical = all(_same(local_out / r.output.name, cluster_out / r.output.name) for r in local)

    tiles = sum(r.tiles_run for r in local)
    print(f"{args.slides} slides of {width}x{height} at 0.5 um/px ({tiles} tissue tiles in all); model espnet "
          f"(untrained) at 1 um/px on the CPU, tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}")
    labels = [f"local (1 process, {args.workers} torch threads)",
              f"cluster ({args.workers} workers, 1 torch thread each)", "ratio cluster / local"]
    width = max(map(len, labels))
    print(f"{labels[0]:<{width}} : {local_s:8.2f} s")
    print(f"{labels[1]:<{width}} : {cluster_s:8.2f} s  (+ {started_s:.2f} s start, {stopped_s:.2f} s stop)")
    print(f"{labels[2]:<{width}} : {cluster_s / local_s:8.3f}  "
          f"(with start and stop: {(cluster_s + started_s + stopped_s) / local_s:.3f})")
    print(f"identical outputs: {'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
