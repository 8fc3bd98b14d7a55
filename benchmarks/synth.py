"""Wall time and peak memory of `synthesize_slide` for one slide (default 12000x10000).

Runs the synthesis in a child process so that its peak resident memory
(ru_maxrss) is measured alone, then prints the numbers.

    python benchmarks/synth.py [--size 12000x10000] [--mpp 0.5]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from wsi_seg.synth import synthesize_slide
w, h, mpp, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
synthesize_slide(out, "bench", width=w, height=h, mpp=mpp, seed=0, overwrite=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="12000x10000")
    parser.add_argument("--mpp", type=float, default=0.5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD, str(width), str(height), str(args.mpp), out], check=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mib = usage.ru_maxrss / 1024
        cpu = usage.ru_utime + usage.ru_stime
        svs, mask = Path(out) / "bench.svs", Path(out) / "bench.mask.tif"
        image_mib = width * height * 3 / 2**20
        print(f"slide {width}x{height} at {args.mpp} um/px")
        print(f"wall time      {wall:6.1f} s (including interpreter start and imports)")
        print(f"CPU time       {cpu:6.1f} s (wall exceeds it when other processes share the cores)")
        print(f"peak RSS       {peak_mib:6.0f} MiB (the uncompressed RGB image is {image_mib:.0f} MiB)")
        print(f"svs size       {svs.stat().st_size / 2**20:6.1f} MiB")
        print(f"mask size      {mask.stat().st_size / 2**20:6.1f} MiB")


if __name__ == "__main__":
    main()
