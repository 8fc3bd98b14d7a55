"""Prediction time and peak memory as the slide grows: time per tissue megapixel.

    python benchmarks/scaling.py [--sizes 5000x6000,10000x12000,20000x24000] [--threads 2]

Each size is a synthetic slide at 0.5 um/px (seed 0, cached) predicted by
``predict_slide`` (tissue detection, reading, the model on the tissue tiles,
stitching, writing the mask TIFF) with the untrained ESPNet checkpoint at 1 um/px,
tile 1024, overlap 128, batch 2, on the CPU, each in its own process. Per size:
the prediction's wall time, the process's peak RSS (ru_maxrss), the tissue area in
level-0 megapixels (from the same tissue detection) and seconds per tissue
megapixel; linear growth shows as a constant seconds per megapixel, bounded
memory as a flat peak. ``--sizes 2000x2400,4000x4800`` makes a quick run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, resource, sys, tempfile, time, torch
sys.path.insert(0, {here!r})
from pathlib import Path
from _slides import untrained_checkpoint
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.slide import PredictOptions, predict_slide
torch.set_num_threads({threads})
predictor = TorchPredictor.from_checkpoint(untrained_checkpoint(mpp=1.0), device="cpu")
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    r = predict_slide({svs!r}, Path(tmp) / "m.tif", predictor, PredictOptions(tile=1024, overlap=128, batch_size=2, progress=False))
    seconds = time.perf_counter() - start
print(json.dumps({{"tiles_run": r.tiles_run, "tiles_total": r.tiles_total, "seconds": seconds,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def _tissue_megapixels(svs: Path) -> float:
    from wsi_seg.io.slide import Slide
    from wsi_seg.tissue import detect_tissue

    slide = Slide(svs)
    tissue = detect_tissue(slide, mpp=8.0)  # what predict uses
    return float(tissue.mask.sum()) * (tissue.mpp / slide.mpp) ** 2 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x6000,10000x12000,20000x24000")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each prediction")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _slides import synthetic_slide, untrained_checkpoint

    untrained_checkpoint(mpp=1.0)
    print(f"synthetic slides at 0.5 um/px; espnet (untrained) at 1 um/px on the CPU, tile 1024, overlap 128, "
          f"batch 2, torch threads {args.threads}; one process per slide", flush=True)
    print(f"{'slide':>12} {'tissue Mpx':>10} {'tiles':>9} {'time s':>8} {'s/tissue Mpx':>12} {'peak RSS MiB':>12}",
          flush=True)
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        svs = synthetic_slide(width, height)
        tissue_mpx = _tissue_megapixels(svs)
        out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), svs=str(svs), threads=args.threads)],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        per_mpx = result["seconds"] / tissue_mpx
        peak_mib = result["peak_kib"] / 1024
        rows.append((size, tissue_mpx, result["seconds"], per_mpx, peak_mib))
        print(f"{size:>12} {tissue_mpx:10.1f} {result['tiles_run']:>4}/{result['tiles_total']:<4} "
              f"{result['seconds']:8.1f} {per_mpx:12.3f} {peak_mib:12.1f}", flush=True)
    first, last = rows[0], rows[-1]
    print(f"largest / smallest: tissue {last[1] / first[1]:.2f}x, time {last[2] / first[2]:.2f}x, "
          f"s per tissue Mpx {last[3] / first[3]:.3f}x, peak RSS {last[4] / first[4]:.3f}x")


if __name__ == "__main__":
    main()
