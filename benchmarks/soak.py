"""Soak: many slides through the workers of a local cluster; does worker memory stay flat?

    python benchmarks/soak.py [--n 12] [--size 4000x3000] [--workers 2] [--tile 1024] [--batch-size 4]

``--n`` synthetic slides (seeds 0..N-1, cached; every slide a different file) go
through ``predict_slides(client=...)`` on ``dask_client(cluster="local:W")``: the
path ``wsi-seg predict SLIDES -o MASKS --cluster local:W`` takes, with its default
options and the untrained ESPNet checkpoint (1 um/px) on the CPU.

What is measured: the resident set size (RSS) of each worker process at the end of
each slide it predicts, taken inside the worker by a worker plugin when the slide's
task leaves the executing state (the worker runs one task at a time, so the next
slide has not started yet). Nothing is freed for the measurement: no
``gc.collect``, no ``malloc_trim``; the process's RSS is read as it is (dask's nanny
starts the workers with its usual ``MALLOC_TRIM_THRESHOLD_``, printed below). The
workers' RSS is also read once idle before the first slide and once idle after the
last.

Printed: one row per slide in completion order (worker, that worker's RSS after it);
for each worker its RSS after its first slides against after its last; and the
figure of the reliability target, the workers' total RSS after slide 3 against after
slide N (each worker counted at the end of its latest slide by then), with the ratio
and whether it is within 10 %. Then the masks written and any failures. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/distributed.py would hide the dask.distributed package while this folder
# leads sys.path: look here last (for _slides).
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE] + [str(HERE)]

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from _slides import synthetic_slide, untrained_checkpoint  # noqa: E402
from wsi_seg.cluster import dask_client  # noqa: E402
from wsi_seg.errors import BatchError  # noqa: E402
from wsi_seg.inference.predictor import ModelSpec  # noqa: E402
from wsi_seg.inference.slide import PredictOptions, predict_slides  # noqa: E402
from wsi_seg.inference.workers import worker_counts  # noqa: E402

PLUGIN = "soak-rss"
MIB = 1024 * 1024
#: The slide the target compares the last one with (the first ones load the model and warm up).
REFERENCE_SLIDE = 3


class SlideEndRSS(WorkerPlugin):
    """Records ``(time, task key, final state, RSS bytes)`` in the worker whenever a
    prediction task stops executing."""

    def setup(self, worker) -> None:
        import psutil

        self.process = psutil.Process()
        self.records: list[tuple[float, str, str, int]] = []

    def transition(self, key, start, finish, **kwargs) -> None:
        if start in ("executing", "long-running") and str(key).startswith("predict-"):
            self.records.append((time.time(), str(key), str(finish), self.process.memory_info().rss))


def _records(dask_worker) -> list[tuple[float, str, str, int]]:
    return list(dask_worker.plugins[PLUGIN].records)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _environ() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")}


def _slide_name(key: str) -> str:
    # predict-<slide file name>-<12 hex digits>
    return key[len("predict-"):-13]


def _total_after(rows: list[tuple], upto: int) -> tuple[int, int]:
    """(sum, max) over the workers of the RSS at the end of each one's latest slide among the first ``upto``."""
    latest: dict[str, int] = {}
    for _, worker, _, _, rss in rows[:upto]:
        latest[worker] = rss
    return sum(latest.values()), max(latest.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="slides (at least 3)")
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    if args.n < REFERENCE_SLIDE:
        parser.error(f"--n must be at least {REFERENCE_SLIDE}")
    width, height = (int(v) for v in args.size.split("x"))
    start = time.perf_counter()
    slides = [synthetic_slide(width, height, seed=seed) for seed in range(args.n)]
    synth_s = time.perf_counter() - start
    model = ModelSpec(untrained_checkpoint(mpp=1.0), device="cpu")
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "masks"
        out.mkdir()
        failures: list[tuple[str, str]] = []
        with dask_client(cluster=f"local:{args.workers}") as client:
            client.wait_for_workers(args.workers)
            client.register_plugin(SlideEndRSS(), name=PLUGIN)
            before = client.run(_rss)
            environ = client.run(_environ)
            start = time.perf_counter()
            try:
                predict_slides(slides, out, model, options, report=lambda line: None, client=client)
            except BatchError as exc:
                failures = exc.failures
            predict_s = time.perf_counter() - start
            after = client.run(_rss)
            records = client.run(_records)
            counts = client.run(worker_counts)
        written = sorted(out.glob("*.mask.tif"))

    names = {address: f"w{i + 1}" for i, address in enumerate(sorted(before))}
    rows = sorted((t, names[address], _slide_name(key), finish, rss)
                  for address, recs in records.items() for t, key, finish, rss in recs)

    print(f"{args.n} slides of {width}x{height} at 0.5 um/px (made or found in {synth_s:.1f} s); model espnet "
          f"(untrained) at 1 um/px on the CPU, tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}; "
          f"LocalCluster of {args.workers} workers, 1 thread each; predicted in {predict_s:.1f} s")
    for address in sorted(before):
        c = counts[address]
        env = ", ".join(f"{k}={v}" for k, v in environ[address].items())
        print(f"{names[address]}: pid {c['pid']}, {c['loads']} model load(s), {c['slides']} slide(s); {env}")
    print()
    print(f"{'slide':>5}  {'worker':<6}  {'slide file':<28}  {'state':<7}  {'worker RSS after (MiB)':>22}")
    for number, (_, worker, name, finish, rss) in enumerate(rows, 1):
        print(f"{number:>5}  {worker:<6}  {name:<28}  {finish:<7}  {rss / MIB:>22.1f}")
    print()

    for address in sorted(before):
        worker = names[address]
        mine = [rss for _, w, _, _, rss in rows if w == worker]
        head = ", ".join(f"{rss / MIB:.1f}" for rss in mine[:3])
        line = f"{worker}: idle before {before[address] / MIB:.1f} MiB; after its slides 1..{min(3, len(mine))}: {head}"
        if mine:
            line += (f"; after its last (slide {len(mine)}): {mine[-1] / MIB:.1f} MiB; idle after all: "
                     f"{after[address] / MIB:.1f} MiB; last / first {mine[-1] / mine[0]:.3f}")
            if len(mine) >= 2:
                line += f", last / second {mine[-1] / mine[1]:.3f}"
        print(line)

    if len(rows) >= REFERENCE_SLIDE:
        total_ref, max_ref = _total_after(rows, REFERENCE_SLIDE)
        total_end, max_end = _total_after(rows, len(rows))
        ratio = total_end / total_ref
        print(f"total worker RSS after slide {REFERENCE_SLIDE}: {total_ref / MIB:.1f} MiB; after slide {len(rows)}: "
              f"{total_end / MIB:.1f} MiB; ratio {ratio:.3f}")
        print(f"largest worker RSS after slide {REFERENCE_SLIDE}: {max_ref / MIB:.1f} MiB; after slide {len(rows)}: "
              f"{max_end / MIB:.1f} MiB; ratio {max_end / max_ref:.3f}")
        print(f"within 10%: {'yes' if abs(ratio - 1) <= 0.10 else 'no'}")
    else:
        print(f"fewer than {REFERENCE_SLIDE} slides finished: no ratio")
    print(f"masks written: {len(written)} of {args.n}; failures: {len(failures)}")
    for slide, reason in failures:
        print(f"  failed: {slide}: {reason}")


if __name__ == "__main__":
    main()
