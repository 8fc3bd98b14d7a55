"""Tissue tiling with Dask: slides -> tissue patches -> a zarr patch store.

For every slide: detect tissue on a thumbnail, lay a grid of patches over the slide
(:func:`wsi_seg.geometry.tile_grid`), keep the patches whose tissue fraction reaches
``min_tissue``, create the slide group with its final length, then let coarse tasks
(``batch`` patches each) read the patches and write disjoint, chunk-aligned slices.
The group is marked complete after all its tasks succeeded.

Tasks carry paths and small parameters (a :class:`~wsi_seg.io.slide.Slide` pickles as
its path and mpp), never open handles, so the same graph runs on the threaded scheduler,
local processes or a ``dask.distributed`` cluster.

A failing slide is reported and the others go on; a rerun skips complete groups and
rebuilds partial ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from wsi_seg.cluster import dask_client
from wsi_seg.errors import InputError, WsiSegError
from wsi_seg.geometry import batch_slices, tile_grid
from wsi_seg.io.annotations import LabelSource, find_label_source, label_candidates
from wsi_seg.io.store import DEFAULT_CODEC, PatchStore, parse_codec, write_patch_batch

#: Suffixes of files taken as slides when a folder is given.
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu",
    ".png", ".jpg", ".jpeg",
)
#: Files with these endings are label images, never slides.
LABEL_FILE_ENDINGS = (".mask.tif", ".mask.tiff")

#: Patches read and written per task (and per image chunk of the store).
DEFAULT_BATCH = 16
#: Resolution at which tissue is detected.
TISSUE_MPP = 8.0


def _default_class_names() -> tuple[str, ...]:
    from wsi_seg.synth import BIOPSY_CLASSES

    return tuple(name for name, _ in BIOPSY_CLASSES)


# ----------------------------------------------------------------------------- inputs


def discover_slides(inputs: Sequence[str | Path], *, masks_dir: str | Path | None = None) -> list[Path]:
    """Slide files from files and folders (folders: files with slide suffixes, sorted,
    label files ``*.mask.tif`` skipped). A folder without slides is an :class:`InputError`.
    Files are kept as given, even when missing: opening them reports the problem per slide.

    When the masks folder is also a slide folder, the label images found there for a
    vendor-format slide (``a.png`` next to ``a.svs``) are labels, not slides.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            slides = sorted(
                child
                for child in path.iterdir()
                if child.is_file()
                and child.suffix.lower() in SLIDE_SUFFIXES
                and not child.name.lower().endswith(LABEL_FILE_ENDINGS)
            )
            if not slides:
                raise InputError(f"{path}: no slide files found (looked for {' '.join(SLIDE_SUFFIXES)})")
            found.extend(slides)
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.absolute(), path)
    if masks_dir is not None:
        plain = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
        labels = {
            candidate.absolute()
            for path in unique
            if path.suffix.lower() not in plain
            for candidate in label_candidates(masks_dir, path)
        }
        unique = {key: path for key, path in unique.items() if key not in labels}
    if not unique:
        raise InputError("no slides given")
    return list(unique.values())


# ----------------------------------------------------------------------------- results


@dataclass
class TilingSummary:
    """What a tiling run did."""

    store: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    patches_written: int = 0
    groups: dict[str, str] = field(default_factory=dict)  # slide path -> group name

    @property
    def total(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)


@dataclass
class _SlidePlan:
    """A slide ready to be written: its patches and where they go."""

    source: str
    slide: Any  # wsi_seg.io.slide.Slide
    slide_size0: tuple[int, int]
    slide_mpp: float
    boxes0: np.ndarray  # (N, 4) level-0 x, y, w, h of the kept patches
    tissue: np.ndarray  # (N,)
    labels: LabelSource | None


@dataclass(frozen=True)
class _Failure:
    source: str
    reason: str


def _reason(exc: BaseException, source: str) -> str:
    """The failure reason of a slide, without the slide path (reported next to it)."""
    message = str(exc) if isinstance(exc, WsiSegError) else f"{type(exc).__name__}: {exc}"
    return message.removeprefix(f"{source}: ")


# ----------------------------------------------------------------------------- tasks


def _plan_slide(
    source: str,
    *,
    slide_mpp: float | None,
    masks_dir: str | None,
    class_names: tuple[str, ...],
    mpp: float,
    patch: int,
    stride: int,
    min_tissue: float,
) -> _SlidePlan | _Failure:
    """Open a slide, find its tissue patches and its labels (runs on a worker)."""
    from wsi_seg.io.slide import open_slide
    from wsi_seg.tissue import detect_tissue

    try:
        slide = open_slide(source, mpp=slide_mpp)
        slide_mpp_value = slide.mpp
        width0, height0 = slide.dimensions
        labels = find_label_source(masks_dir, slide, class_names)
        boxes0 = tile_grid(width0, height0, slide_mpp=slide_mpp_value, target_mpp=mpp, patch_px=patch, stride_px=stride)
        tissue_map = detect_tissue(slide, mpp=max(TISSUE_MPP, mpp))
        fractions = np.asarray(tissue_map.fractions(boxes0, slide_mpp_value), dtype=np.float32)
        keep = fractions >= min_tissue
        return _SlidePlan(source, slide, (width0, height0), slide_mpp_value, boxes0[keep], fractions[keep], labels)
    except Exception as exc:  # one slide's failure must not stop the batch
        return _Failure(source, _reason(exc, source))


def _write_batch(
    slide, labels: LabelSource | None, store: str, name: str, start: int, boxes0: np.ndarray, mpp: float, patch: int
) -> int | _Failure:
    """Read ``len(boxes0)`` patches and write them at ``start`` (runs on a worker)."""
    source = str(slide.path)
    try:
        images = np.empty((len(boxes0), patch, patch, 3), dtype=np.uint8)
        label_batch = None if labels is None else np.empty((len(boxes0), patch, patch), dtype=np.uint8)
        for index, (x0, y0, _, _) in enumerate(boxes0.tolist()):
            images[index] = slide.read(x0, y0, patch, patch, mpp)
            if label_batch is not None:
                label_batch[index] = labels.read(x0, y0, patch, patch, mpp)
        write_patch_batch(store, name, start, images, label_batch)
        return len(boxes0)
    except Exception as exc:  # reported by _finish_slide
        return _Failure(source, _reason(exc, source))


def _finish_slide(store: str, name: str, source: str, *results) -> int | _Failure:
    """Mark a slide group complete when every batch succeeded (the group's last write)."""
    for result in results:
        if isinstance(result, _Failure):
            return result
    try:
        PatchStore.create_or_open(store).mark_complete(name)
    except Exception as exc:
        return _Failure(source, _reason(exc, source))
    return int(sum(results))


# ----------------------------------------------------------------------------- running


_LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous")


def _compute(tasks: list, *, scheduler, client, workers: int | None, progress: bool, description: str) -> list:
    """Compute delayed tasks on a local dask scheduler or a dask.distributed client."""
    if not tasks:
        return []
    if client is None:
        name = scheduler or "threads"
        kwargs = {"scheduler": name}
        if workers and name in ("threads", "processes"):
            kwargs["num_workers"] = int(workers)
        if progress:
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc=description, unit="task"):
                return list(dask.compute(*tasks, **kwargs))
        return list(dask.compute(*tasks, **kwargs))
    futures = client.compute(tasks)
    if progress:
        from distributed import progress as show_progress

        print(description, flush=True)
        show_progress(futures)
    return list(client.gather(futures))


def _parameters(mpp, patch, stride, class_names) -> dict[str, Any]:
    return {"mpp": float(mpp), "patch": int(patch), "stride": int(stride), "class_names": list(class_names)}


def _validate(mpp, patch, stride, min_tissue, class_names, masks_dir, batch) -> None:
    if not (mpp > 0):
        raise InputError(f"--mpp must be positive, got {mpp}")
    if patch < 8:
        raise InputError(f"--patch must be at least 8 pixels, got {patch}")
    if stride < 1:
        raise InputError(f"--stride must be positive, got {stride}")
    if not 0.0 <= min_tissue <= 1.0:
        raise InputError(f"--min-tissue is a fraction of a patch in [0, 1], got {min_tissue}")
    if not class_names or len(class_names) > 256:
        raise InputError(f"the class list must hold 1 to 256 names, got {len(class_names)}")
    if len(set(class_names)) != len(class_names):
        raise InputError(f"the class list has duplicate names: {', '.join(class_names)}")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise InputError(f"{masks_dir}: masks folder not found")
    if batch < 1:
        raise InputError(f"batch must be positive, got {batch}")


def tile_slides(
    slides: Sequence[str | Path],
    store: str | Path,
    *,
    masks_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    mpp: float = 1.0,
    patch: int = 512,
    stride: int | None = None,
    min_tissue: float = 0.5,
    slide_mpp: float | None = None,
    scheduler=None,
    cluster: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    codec: str = DEFAULT_CODEC,
    batch: int = DEFAULT_BATCH,
    progress: bool = True,
) -> TilingSummary:
    """Write the tissue patches of ``slides`` (files or folders) into the zarr ``store``.

    ``mpp`` and ``patch`` give the patch resolution and size (pixels at ``mpp``);
    ``stride`` (default ``patch``) the grid step in pixels at ``mpp``; ``min_tissue`` the
    smallest kept tissue fraction. ``scheduler`` is ``None`` (local threads), a local
    scheduler name (``"threads"``, ``"processes"``, ``"sync"``), a ``dask.distributed``
    address or a ``Client``; ``cluster`` (``"local:N"``, instead of a scheduler) starts N
    worker processes on this machine for the run (:func:`wsi_seg.cluster.dask_client`).
    Complete groups are skipped unless ``overwrite``; partial groups are rebuilt.
    Per-slide failures are collected in the summary, not raised.
    """
    stride = patch if stride is None else stride
    class_names = tuple(class_names) if class_names is not None else _default_class_names()
    _validate(mpp, patch, stride, min_tissue, class_names, masks_dir, batch)
    codec_spec = parse_codec(codec)
    paths = discover_slides(slides, masks_dir=masks_dir)
    named_local = cluster is None and scheduler in _LOCAL_SCHEDULERS
    # connect before touching the store: a bad address leaves nothing behind
    with dask_client(None if named_local else scheduler, cluster) as client:
        return _tile(paths, store, client=client, scheduler=scheduler if named_local else None, workers=workers,
                     progress=progress, masks_dir=masks_dir, class_names=class_names, mpp=mpp, patch=patch,
                     stride=stride, min_tissue=min_tissue, slide_mpp=slide_mpp, overwrite=overwrite,
                     codec=codec_spec, batch=batch)


def _tile(paths, store, *, client, scheduler, workers, progress, masks_dir, class_names, mpp, patch, stride,
          min_tissue, slide_mpp, overwrite, codec, batch) -> TilingSummary:
    """Decide what to do per slide, then plan and write the pending ones."""
    patch_store = PatchStore.create_or_open(store)
    summary = TilingSummary(store=Path(store))
    names = patch_store.assign_names(paths)
    parameters = _parameters(mpp, patch, stride, class_names)

    pending: list[tuple[str, str]] = []  # (source, group name)
    for path, name in zip(paths, names):
        source = str(path.absolute())
        summary.groups[source] = name
        if overwrite or not patch_store.is_complete(name):
            pending.append((source, name))
            continue
        attrs = patch_store.group(name).attrs
        made_with = {key: attrs.get(key) for key in parameters}
        if made_with != parameters:
            differs = ", ".join(f"{key} {made_with[key]} (now {parameters[key]})" for key in parameters
                                if made_with[key] != parameters[key])
            summary.failed.append((source, f"store group '{name}' was made with {differs}; "
                                           "pass --overwrite to rebuild it"))
        else:
            summary.skipped.append(source)

    plan_tasks = [
        dask.delayed(_plan_slide, pure=False)(
            source, slide_mpp=slide_mpp, masks_dir=None if masks_dir is None else str(masks_dir),
            class_names=class_names, mpp=mpp, patch=patch, stride=stride, min_tissue=min_tissue,
        )
        for source, _ in pending
    ]
    _run(summary, patch_store, pending, plan_tasks, client=client, scheduler=scheduler, workers=workers,
         progress=progress, store=store, parameters=parameters, min_tissue=min_tissue, patch=patch,
         batch=batch, codec=codec, mpp=mpp)
    order = {str(path.absolute()): index for index, path in enumerate(paths)}
    summary.failed.sort(key=lambda item: order.get(item[0], len(order)))
    return summary


def _run(summary, patch_store, pending, plan_tasks, *, client, scheduler, workers, progress, store, parameters,
         min_tissue, patch, batch, codec, mpp) -> None:
    """Plan the pending slides, create their groups, write them, record the outcome."""
    plans = _compute(plan_tasks, scheduler=scheduler, client=client, workers=workers, progress=progress,
                     description=f"finding tissue in {len(plan_tasks)} slide(s)")

    finish_tasks, finish_names = [], []
    for (source, name), plan in zip(pending, plans):
        patch_store.delete_group(name)
        if isinstance(plan, _Failure):
            summary.failed.append((source, plan.reason))
            continue
        attrs = {
            "source": str(Path(source).resolve()),
            "slide_width": int(plan.slide_size0[0]),
            "slide_height": int(plan.slide_size0[1]),
            "slide_mpp": float(plan.slide_mpp),
            **parameters,
            "min_tissue": float(min_tissue),
            "label_source": None if plan.labels is None else str(plan.labels.path.resolve()),
        }
        patch_store.create_slide_group(
            name, coords0=plan.boxes0[:, :2], tissue=plan.tissue, patch_px=patch, batch=batch,
            with_labels=plan.labels is not None, codec=codec, attrs=attrs,
        )
        writes = [
            dask.delayed(_write_batch, pure=False)(
                plan.slide, plan.labels, str(store), name, part.start, plan.boxes0[part], mpp, patch
            )
            for part in batch_slices(len(plan.boxes0), batch)
        ]
        finish_tasks.append(dask.delayed(_finish_slide, pure=False)(str(store), name, source, *writes))
        finish_names.append((source, name))

    total_patches = sum(len(plan.boxes0) for plan in plans if isinstance(plan, _SlidePlan))
    results = _compute(finish_tasks, scheduler=scheduler, client=client, workers=workers, progress=progress,
                       description=f"tiling {len(finish_tasks)} slide(s), {total_patches} patches")
    for (source, name), result in zip(finish_names, results):
        if isinstance(result, _Failure):
            summary.failed.append((source, result.reason))
            patch_store.delete_group(name)
        else:
            summary.done.append(source)
            summary.patches_written += int(result)
