"""Data-parallel training on one machine without torchrun (``run.processes``).

``train`` with ``run.processes: N`` (N > 1) starts N fresh Python processes
(spawned, never forked: the parent may hold threads and an initialised
PyTorch), gives them the environment torchrun would (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, a loopback ``MASTER_ADDR``/``MASTER_PORT``) and one torch
thread each unless ``run.threads`` says otherwise, and each runs the same
training as a torchrun rank: gloo on the CPU, gradients averaged every step,
only rank 0 writes. On a CPU with N cores this uses every core without the
fragility of N threads in one process, whose OpenMP barriers stall whenever
another program takes a core (docs/training.md has the measurements).

Rank 0 sends the :class:`~wsi_seg.engine.train.TrainResult` back; a
:class:`~wsi_seg.errors.WsiSegError` raised in any rank is raised again here
with its own message, after the other ranks are stopped. Log records of rank 0
go to the handlers of the ``wsi_seg.train`` logger in this process.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback

from wsi_seg.errors import WsiSegError

log = logging.getLogger("wsi_seg.train")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

#: Seconds the other ranks get to finish after one rank failed, before they are killed.
GRACE_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QueueHandler(logging.Handler):
    """In rank 0: forwards formatted log lines to the parent."""

    def __init__(self, queue):
        super().__init__()
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put(("log", record.levelno, record.getMessage()))


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies (a killed
    ``wsi-seg train`` must not leave ranks training on)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _rank_main(rank: int, world: int, port: int, threads: int, config, kwargs: dict, queue) -> None:
    _die_with_parent()
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": str(threads)})
    log.addHandler(_QueueHandler(queue) if rank == 0 else logging.NullHandler())
    log.setLevel(logging.INFO)
    try:
        import torch

        from wsi_seg.engine.train import train

        torch.set_num_threads(threads)  # run.threads, when set, is applied again by train()
        result = train(config, **kwargs)
    except WsiSegError as exc:
        queue.put(("error", rank, exc))
        raise SystemExit(1) from None
    except BaseException:
        queue.put(("crash", rank, traceback.format_exc()))
        raise SystemExit(1) from None
    if rank == 0:
        queue.put(("result", 0, result))


def _drain(queue, received: dict) -> None:
    """Handle what the ranks have sent: log lines, the result, the first failure."""
    while not queue.empty():
        kind, *payload = queue.get()
        if kind == "log":
            log.log(payload[0], "%s", payload[1])
        elif kind == "result":
            received["result"] = payload[1]
        elif received["failure"] is None:
            received["failure"] = payload


def train_in_processes(config, processes: int, **kwargs):
    """Run ``train(config, **kwargs)`` as ``processes`` data-parallel ranks; the rank-0 result."""
    threads = config.run.threads or 1
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    port = _free_port()
    ranks = [context.Process(target=_rank_main, args=(rank, processes, port, threads, config, kwargs, queue),
                             name=f"wsi-seg-train-rank{rank}") for rank in range(processes)]
    for process in ranks:
        process.start()
    received: dict = {"result": None, "failure": None}
    failed_at = None
    try:
        while True:
            _drain(queue, received)
            alive = [p for p in ranks if p.is_alive()]
            if not alive:
                break
            if failed_at is None and any(p.exitcode not in (None, 0) for p in ranks):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                for process in alive:
                    process.kill()
            alive[0].join(timeout=0.2)
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join()
    _drain(queue, received)  # anything sent just before the last exit
    result, failure = received["result"], received["failure"]
    if failure is not None:
        rank, detail = failure
        if isinstance(detail, WsiSegError):
            raise detail
        raise WsiSegError(f"training process {rank} failed: {detail.strip().splitlines()[-1]}")
    if result is None:
        codes = ", ".join(f"rank {i}: {p.exitcode}" for i, p in enumerate(ranks))
        raise WsiSegError(f"training processes ended without a result ({codes})")
    return result
