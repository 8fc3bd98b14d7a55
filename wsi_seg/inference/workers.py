"""Slide prediction on dask.distributed workers (``wsi-seg predict --scheduler/--cluster``).

One task per slide. A task carries the slide and output paths, a
:class:`~wsi_seg.inference.backends.ModelSpec` and the
:class:`~wsi_seg.inference.slide.PredictOptions`, never open handles: the worker opens
the slide itself and runs :func:`~wsi_seg.inference.slide.predict_slide`, which writes
the mask to a temporary file and renames it when complete, as a local run does. Paths
are made absolute here, so the workers must see the same files under the same paths.

The model is loaded once per worker process, not once per task: :func:`worker_predictor`
keeps the predictors loaded in the process in a small cache keyed by the model file
(resolved path, modification time, size) and the way it runs (backend, device,
BatchNorm folding, threads). The worker's next slide with the same model reuses it; a
rewritten model file is loaded again. Torch runs ``PredictOptions.worker_threads``
threads in each worker (1 by default: one single-threaded worker process per core).

Slides are submitted largest file first, so that a big slide does not start last.
Outcomes come back as slides finish; the error of one slide (a
:class:`~wsi_seg.errors.WsiSegError` from ``predict_slide`` on its worker, returned as
the task's result, or its worker process dying) is that slide's outcome and the others
go on.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from wsi_seg.errors import WsiSegError
from wsi_seg.inference.backends import ModelSpec
from wsi_seg.inference.slide import PredictOptions, SlidePrediction, predict_slide

#: Predictors kept per worker process (the most recently used).
CACHE_SIZE = 2

_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()
_counts = {"loads": 0, "slides": 0}


def _cache_key(model: ModelSpec, threads: int | None) -> tuple:
    path = model.path.resolve()
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # loading reports it
        version = None
    return str(path), version, model.backend, model.device, model.optimize, model.tta, threads


def worker_predictor(model: ModelSpec, *, threads: int | None = None):
    """The predictor of ``model`` in this process: loaded on first use, then reused."""
    key = _cache_key(model, threads)
    with _lock:
        predictor = _cache.get(key)
        if predictor is not None:
            _cache.move_to_end(key)
            return predictor
        predictor = model.load(threads=threads)
        _counts["loads"] += 1
        _cache[key] = predictor
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return predictor


def worker_counts() -> dict[str, int]:
    """This process's id, how many models it loaded and how many slides it predicted
    (``client.run(worker_counts)`` asks every worker)."""
    with _lock:
        return {"pid": os.getpid(), **_counts}


def _predict_task(slide: str, output: str, model: ModelSpec,
                  options: PredictOptions) -> SlidePrediction | WsiSegError:
    """Predict one slide in a worker process. A bad slide's :class:`WsiSegError` is
    returned, not raised: it is that slide's result, reported at the end of the batch,
    and a raised one would make dask log the task as failed, traceback and all."""
    threads = options.worker_threads
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    try:
        result = predict_slide(slide, output, worker_predictor(model, threads=threads), options)
    except WsiSegError as exc:
        return exc
    with _lock:
        _counts["slides"] += 1
    return result


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def predict_on_workers(client, jobs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], model: ModelSpec,
                       options: PredictOptions | None = None) -> Iterator[tuple[int, SlidePrediction | WsiSegError]]:
    """Predict each ``(slide, output)`` of ``jobs`` on the workers of ``client``; yield
    ``(index in jobs, prediction or error)`` as slides finish. Errors other than a
    :class:`WsiSegError` are raised, as on a local run; unfinished tasks are then cancelled."""
    from distributed import KilledWorker, as_completed

    if not isinstance(model, ModelSpec):
        raise TypeError("a cluster run takes the model as a ModelSpec (paths travel to the workers, "
                        f"loaded models do not), got {type(model).__name__}")
    opts = replace(options or PredictOptions(), progress=False)
    if opts.probabilities is not None:
        opts = replace(opts, probabilities=Path(opts.probabilities).absolute())
    model = replace(model, path=model.path.absolute())
    jobs = [(Path(slide), Path(output)) for slide, output in jobs]
    futures = {}
    for index, (slide, output) in enumerate(jobs):
        future = client.submit(_predict_task, str(slide.absolute()), str(output.absolute()), model, opts,
                               key=f"predict-{slide.name}-{uuid.uuid4().hex[:12]}", pure=False,
                               priority=_file_size(slide))
        futures[future] = index
    try:
        for future in as_completed(futures):
            index = futures[future]
            slide, output = jobs[index]
            try:
                result = future.result()
            except KilledWorker as exc:
                yield index, WsiSegError(f"{slide}: the worker process predicting it died ({exc})")
                continue
            if isinstance(result, WsiSegError):
                yield index, result
                continue
            yield index, replace(result, slide=slide, output=output)
    finally:
        client.cancel(list(futures))
