"""Peak resident memory of `wsi-seg predict` as the slide grows.

    python benchmarks/memory.py [--sizes 5000x6000,10000x12000,20000x24000]

Each prediction runs in its own process (ru_maxrss of the child). Target: the
largest slide's peak is <= 1.3x the smallest's and <= 2 GB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import resource, sys, tempfile, torch
sys.path.insert(0, {here!r})
from pathlib import Path
from _slides import untrained_checkpoint
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.slide import PredictOptions, predict_slide
torch.set_num_threads(2)
predictor = TorchPredictor.from_checkpoint(untrained_checkpoint(mpp=1.0), device="cpu")
with tempfile.TemporaryDirectory() as tmp:
    r = predict_slide({svs!r}, Path(tmp) / "m.tif", predictor, PredictOptions(tile=1024, overlap=128, batch_size=2, progress=False))
print(r.tiles_run, r.tiles_total, round(r.seconds, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x6000,10000x12000,20000x24000")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _slides import synthetic_slide, untrained_checkpoint

    untrained_checkpoint(mpp=1.0)
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        svs = synthetic_slide(width, height)
        out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), svs=str(svs))],
                             capture_output=True, text=True, check=True)
        tiles_run, tiles_total, seconds, peak_kib = out.stdout.split()
        peak_mib = int(peak_kib) / 1024
        rows.append((size, peak_mib, tiles_run, tiles_total, seconds))
        print(f"{size:>12}: peak RSS {peak_mib:8.1f} MiB  ({tiles_run}/{tiles_total} tiles, {seconds} s)", flush=True)
    print(f"ratio largest/smallest: {rows[-1][1] / rows[0][1]:.3f}  (target <= 1.3; largest {rows[-1][1]:.0f} MiB, "
          f"target <= 2048)")


if __name__ == "__main__":
    main()
