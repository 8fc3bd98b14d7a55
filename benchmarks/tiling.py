"""Tiling throughput: ``tile_slides`` against a plain single-threaded loop, and image codecs.

    python benchmarks/tiling.py [--width 12000 --height 10000] [--workers 2] [--codecs ...]

Writes a synthetic slide (wsi_seg.synth) into a temporary folder, then measures side by
side in one run:

1. baseline: one thread reads the kept tissue patches with ``openslide.read_region`` at
   level 0 and writes them into a zarr array with the same codec and chunks;
2. ``tile_slides`` on the local threaded scheduler at the slide's mpp (same patches),
   wall time including tissue detection;
3. ``tile_slides`` for each codec: patches/s, store size, the time to read one random
   patch (what a training loader does) and the pixel error against uncompressed;
4. ``tile_slides`` with labels, and at a coarser mpp (resampled reads).

Prints patches/s and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import zarr

from wsi_seg.io.slide import open_slide
from wsi_seg.io.store import DEFAULT_CODEC, open_patch_store, parse_codec
from wsi_seg.synth import synthesize_slide
from wsi_seg.tiling import DEFAULT_BATCH, tile_slides
from wsi_seg.tissue import detect_tissue


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def baseline(slide_path: Path, coords: np.ndarray, patch: int, codec: str, out: Path) -> float:
    """Seconds for a plain loop: read_region at level 0, write batches into zarr."""
    start = time.perf_counter()
    with openslide.OpenSlide(str(slide_path)) as slide:
        root = zarr.open_group(str(out), mode="w")
        spec = parse_codec(codec)
        array = root.create_array("image", shape=(len(coords), patch, patch, 3), dtype="uint8",
                                  chunks=(1, patch, patch, 3), shards=(DEFAULT_BATCH, patch, patch, 3),
                                  config={"write_empty_chunks": True}, **spec.array_kwargs())
        batch = np.empty((DEFAULT_BATCH, patch, patch, 3), dtype=np.uint8)
        for first in range(0, len(coords), DEFAULT_BATCH):
            part = coords[first:first + DEFAULT_BATCH]
            for index, (x0, y0) in enumerate(part.tolist()):
                batch[index] = np.asarray(slide.read_region((x0, y0), 0, (patch, patch)))[..., :3]
            array[first:first + len(part)] = batch[: len(part)]
    return time.perf_counter() - start


def timed_tiling(slide_path: Path, store: Path, **options) -> tuple[float, int]:
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    summary = tile_slides([slide_path], store, progress=False, **options)
    seconds = time.perf_counter() - start
    if summary.failed:
        raise SystemExit(f"tiling failed: {summary.failed}")
    return seconds, summary.patches_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=12000)
    parser.add_argument("--height", type=int, default=10000)
    parser.add_argument("--patch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder for the synthetic slide, reused by later runs (default: a temporary folder)")
    parser.add_argument("--codecs", nargs="*",
                        default=["none", "zstd:1", "zstd:3", "blosc-lz4", "jpeg:90", "webp:90", "jpegxl:90"])
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="wsi-seg-bench-") as tmp:
        tmp = Path(tmp)
        slides = args.keep or tmp
        start = time.perf_counter()
        slide_path, mask_path = synthesize_slide(slides, f"bench-{args.width}x{args.height}", width=args.width,
                                                 height=args.height, mpp=0.5)
        print(f"synthetic slide {args.width}x{args.height} @ 0.5 mpp: {time.perf_counter() - start:.1f} s, "
              f"{slide_path.stat().st_size / 2**20:.1f} MiB")
        common = dict(mpp=0.5, patch=args.patch, workers=args.workers)

        # alternate the two, best of --rounds: the machine is shared, loads come and go
        plain_s, tiling_s, plain_cpu, tiling_cpu = [], [], [], []
        for _ in range(args.rounds):
            cpu = time.process_time()
            seconds, count = timed_tiling(slide_path, tmp / "main.zarr", codec=DEFAULT_CODEC, **common)
            tiling_cpu.append(time.process_time() - cpu)
            tiling_s.append(seconds)
            coords = open_patch_store(tmp / "main.zarr")[0].coords
            cpu = time.process_time()
            plain_s.append(baseline(slide_path, coords, args.patch, DEFAULT_CODEC, tmp / "baseline.zarr"))
            plain_cpu.append(time.process_time() - cpu)
        start = time.perf_counter()
        detect_tissue(open_slide(slide_path), mpp=8.0)
        tissue_s = time.perf_counter() - start
        print(f"\n{count} tissue patches of {args.patch} px at level 0, codec {DEFAULT_CODEC}, "
              f"best of {args.rounds} alternating rounds")
        print(f"  plain loop (read_region + zarr, 1 thread):  {count / min(plain_s):7.1f} patches/s")
        print(f"  tile_slides (threads, incl. tissue map):    {count / min(tiling_s):7.1f} patches/s")
        print(f"  ratio tile_slides / plain loop:             {min(plain_s) / min(tiling_s):7.2f}")
        print(f"  (tissue map alone: {tissue_s:.2f} s of the tile_slides time)")
        print(f"  CPU per patch (all threads, best): plain {1000 * min(plain_cpu) / count:.1f} ms, "
              f"tile_slides {1000 * min(tiling_cpu) / count:.1f} ms")

        print(f"\ncodecs (tile_slides, {count} patches; raw {count * args.patch ** 2 * 3 / 2**20:.0f} MiB; "
              f"source slide {slide_path.stat().st_size / 2**20:.1f} MiB)")
        print(f"  {'codec':<10} {'patches/s':>10} {'store MiB':>10} {'1 patch ms':>11} {'max err':>8} {'mean err':>9}")
        reference = None
        for codec in args.codecs:
            store = tmp / f"codec-{codec.replace(':', '-')}.zarr"
            seconds, count = timed_tiling(slide_path, store, codec=codec, **common)
            array = open_patch_store(store)[0].image
            picks = np.random.default_rng(0).permutation(array.shape[0])[:32]
            start = time.perf_counter()
            for index in picks:
                array[int(index)]
            one_ms = 1000 * (time.perf_counter() - start) / len(picks)
            images = array[...]
            if codec == "none":
                reference = images
            error = "" if reference is None else np.abs(images.astype(np.int16) - reference.astype(np.int16))
            max_err = "" if reference is None else f"{int(error.max()):d}"
            mean_err = "" if reference is None else f"{float(error.mean()):.2f}"
            print(f"  {codec:<10} {count / seconds:10.1f} {_size_mib(store):10.1f} {one_ms:11.1f} {max_err:>8} "
                  f"{mean_err:>9}")
            shutil.rmtree(store)

        seconds, count = timed_tiling(slide_path, tmp / "labels.zarr", masks_dir=mask_path.parent, codec=DEFAULT_CODEC, **common)
        print(f"\nwith labels ({DEFAULT_CODEC} + zstd labels): {count / seconds:.1f} patches/s")
        seconds, count = timed_tiling(slide_path, tmp / "mpp1.zarr", codec=DEFAULT_CODEC,
                                      **{**common, "mpp": 1.0})
        print(f"at mpp 1.0 (resampled, {count} patches): {count / seconds:.1f} patches/s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
