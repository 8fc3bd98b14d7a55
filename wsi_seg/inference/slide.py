"""Whole-slide prediction: tissue tiles through the model, stitched without seams
into a pyramidal label TIFF, in memory that does not grow with the slide.

The flow, for one slide:

1. tissue detection on a thumbnail; tiles without tissue are never read or run;
2. a tile grid at the model's mpp (``tile`` px, ``overlap`` px between
   neighbours), read ahead by a thread pool while the model runs;
3. the :class:`~wsi_seg.inference.stitcher.StreamingStitcher` blends the
   overlapping probabilities and hands back finished label rows;
4. those rows are masked by the tissue map (non-tissue = class 0), resampled
   (nearest) to the output mpp (the slide's level 0 by default) and streamed
   into :func:`~wsi_seg.io.tiff.write_pyramidal_tiff`, which writes to a temp
   file and renames it when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from wsi_seg.errors import BatchError, InputError, OutputError, WsiSegError
from wsi_seg.inference.stitcher import TileGrid
from wsi_seg.inference.tiles import stitched_bands
from wsi_seg.io.slide import Slide, open_slide
from wsi_seg.io.tiff import write_pyramidal_tiff
from wsi_seg.prefetch import ordered_map
from wsi_seg.tissue import detect_tissue

OUTPUT_BAND_ROWS = 512


#: Tile size when the checkpoint does not record the patch size it was trained on.
FALLBACK_TILE = 1024
#: Largest automatic overlap between tiles (px at the model's mpp).
MAX_AUTO_OVERLAP = 128


def auto_tile(predictor) -> int:
    """The tile a model predicts best with: the patch size it was trained on.

    A network's output near a pixel depends on how much real image its receptive
    field sees rather than zero padding; ESPNet's dilated branches reach far (at
    level 3, dilation 16 on a 1/8 grid: 128 px either side), so a model trained on
    small patches learned with their padding and is most faithful on tiles of that
    size. Rounded up to a multiple the model accepts; :data:`FALLBACK_TILE` when the
    checkpoint records no patch size (converted weights)."""
    multiple = int(predictor.input_multiple)
    patch = predictor.meta.get("patch_size")
    if not patch:
        return FALLBACK_TILE
    return max(multiple, -(-int(patch) // multiple) * multiple)


@dataclass
class PredictOptions:
    tile: int | None = None           # px at the model's mpp; None: auto_tile (the training patch size)
    overlap: int | None = None        # None: a quarter of the tile, at most MAX_AUTO_OVERLAP
    mpp: float | None = None          # model mpp; default the checkpoint's
    mask_mpp: float | None = None     # output mpp; default the slide's level 0
    slide_mpp: float | None = None    # supplies/overrides the slide's own mpp
    batch_size: int = 4
    read_threads: int = 2
    prefetch: int = 8                 # tiles read ahead of the model
    tissue_mpp: float = 8.0
    probabilities: Path | None = None  # optional float16 per-class probabilities (zarr)
    progress: bool = True
    worker_threads: int = 1           # torch threads in each cluster worker (runs with a client)

    def resolved(self, predictor) -> "PredictOptions":
        """A copy with the automatic tile and overlap filled in for ``predictor``, after
        refusing tile settings the model cannot run (before any slide is touched)."""
        tile = self.tile if self.tile is not None else auto_tile(predictor)
        overlap = self.overlap if self.overlap is not None else min(MAX_AUTO_OVERLAP, tile // 4)
        multiple = predictor.input_multiple
        if tile <= 0 or tile % multiple:
            raise InputError(f"--tile {tile}: must be a positive multiple of {multiple} for this model")
        if not 0 <= overlap < tile // 2:
            raise InputError(f"--overlap {overlap}: must be in [0, tile/2) = [0, {tile // 2})")
        return replace(self, tile=tile, overlap=overlap)

    def validate(self, predictor) -> None:
        """Refuse tile settings the model cannot run (see :meth:`resolved`)."""
        self.resolved(predictor)


@dataclass
class SlidePrediction:
    slide: Path
    output: Path
    size: tuple[int, int]       # output (width, height)
    mask_mpp: float
    model_mpp: float
    tiles_total: int
    tiles_run: int
    seconds: float
    class_pixels: list[int] = field(default_factory=list)


def _ascii(text: str) -> str:
    """TIFF strings are 7-bit ASCII: escape anything else."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def output_path_for(slide: Path, out_dir: Path) -> Path:
    """``out_dir/<stem>.mask.tif``, the stem made safe: the mask is always a file directly in ``out_dir``."""
    from wsi_seg.io.names import child, safe_name

    return child(out_dir, f"{safe_name(Path(slide).stem)}.mask.tif")


def _nearest_index(n_out: int, out_mpp: float, src_mpp: float, n_src: int) -> np.ndarray:
    """For each output pixel, the source pixel whose area holds its centre."""
    idx = np.floor((np.arange(n_out) + 0.5) * (out_mpp / src_mpp)).astype(np.int64)
    return np.clip(idx, 0, n_src - 1)


class _ProbabilityStore:
    """float16 per-class probabilities at the model mpp, written block by block
    into a zarr array in a temporary folder that is renamed when complete."""

    def __init__(self, path: Path, classes: int, width: int, height: int, chunk: int, attrs: dict):
        import zarr

        from wsi_seg.io.atomic import temp_dir

        self.path = path
        self.tmp = temp_dir(path, ".partial")  # removed by the next write of path if this run is killed
        root = zarr.open_group(str(self.tmp), mode="w")
        root.attrs.update(attrs)
        self.array = root.create_array("probabilities", shape=(classes, height, width), dtype="float16",
                                       chunks=(classes, chunk, chunk), fill_value=0)

    def write(self, y: int, x: int, probs: np.ndarray) -> None:
        self.array[:, y:y + probs.shape[1], x:x + probs.shape[2]] = probs.astype(np.float16)

    def commit(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def predict_slide(slide_path: str | os.PathLike, output: str | os.PathLike, predictor,
                  options: PredictOptions | None = None, *, client=None) -> SlidePrediction:
    """Predict one slide into a pyramidal label TIFF at ``output`` (atomic).

    With a ``dask.distributed`` ``client``, ``predictor`` is a
    :class:`~wsi_seg.inference.backends.ModelSpec` and a worker of the cluster does the
    work (:mod:`wsi_seg.inference.workers`)."""
    from tqdm import tqdm

    if client is not None:
        from wsi_seg.inference.workers import predict_on_workers

        ((_, outcome),) = predict_on_workers(client, [(slide_path, output)], predictor, options)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    opts = options or PredictOptions()
    started = time.perf_counter()
    slide_path, output = Path(slide_path), Path(output)
    if not output.parent.is_dir():
        raise OutputError(f"{output}: folder {output.parent} does not exist")
    slide = open_slide(slide_path, mpp=opts.slide_mpp)
    slide_mpp = slide.mpp
    meta = predictor.meta
    model_mpp = opts.mpp or meta.get("mpp")
    if not model_mpp:
        raise InputError(f"{slide_path}: the checkpoint records no mpp; pass --mpp")
    opts = opts.resolved(predictor)
    num_classes = predictor.num_classes
    colors = np.asarray(meta["classes"]["colors"], np.uint8)

    width0, height0 = slide.dimensions
    mask_mpp = opts.mask_mpp or slide_mpp
    out_w, out_h = (width0, height0) if opts.mask_mpp is None else slide.size_at(mask_mpp)
    work_w, work_h = slide.size_at(model_mpp)
    scale = model_mpp / slide_mpp  # level-0 pixels per model pixel
    grid = TileGrid(work_w, work_h, opts.tile, opts.overlap)

    tissue = detect_tissue(slide, mpp=opts.tissue_mpp)
    positions = [(int(y), int(x)) for y in grid.ys for x in grid.xs]
    boxes0 = np.array([[x * scale, y * scale, opts.tile * scale, opts.tile * scale] for y, x in positions])
    has_tissue = tissue.fractions(boxes0, slide_mpp) > 0 if positions else np.zeros(0, bool)
    run_positions = [p for p, keep in zip(positions, has_tissue) if keep]

    probs_store = None
    if opts.probabilities is not None:
        probs_store = _ProbabilityStore(Path(opts.probabilities), num_classes, work_w, work_h, grid.stride,
                                        {"source": str(slide_path), "mpp": model_mpp,
                                         "classes": list(meta["classes"]["names"])})

    def read_tile(position: tuple[int, int]) -> np.ndarray:
        y, x = position
        return slide.read(int(round(x * scale)), int(round(y * scale)), opts.tile, opts.tile, model_mpp)

    tile_images = ordered_map(read_tile, run_positions, threads=opts.read_threads, ahead=opts.prefetch)
    counts = np.zeros(num_classes, np.int64)
    bar = tqdm(total=len(positions), desc=slide_path.name, unit="tile", disable=not opts.progress, leave=False)

    out_cols = _nearest_index(out_w, mask_mpp, model_mpp, work_w)
    tissue_h, tissue_w = tissue.mask.shape
    tissue_cols = _nearest_index(out_w, mask_mpp, tissue.mpp, tissue_w)

    def output_bands() -> Iterator[np.ndarray]:
        next_row = 0            # next output row to produce
        work_row0 = 0           # first work row of the current band
        pending: list[np.ndarray] = []
        pending_rows = 0
        src_rows_all = _nearest_index(out_h, mask_mpp, model_mpp, work_h)
        tissue_rows_all = _nearest_index(out_h, mask_mpp, tissue.mpp, tissue_h)
        bands = stitched_bands(grid, has_tissue, tile_images, predictor, opts.batch_size,
                               on_tile=lambda: bar.update(1),
                               on_probabilities=probs_store.write if probs_store else None)
        for band in bands:
            work_row1 = work_row0 + band.shape[0]
            stop = next_row
            while stop < out_h and src_rows_all[stop] < work_row1:
                stop += 1
            if stop > next_row:
                rows = np.take(band[src_rows_all[next_row:stop] - work_row0], out_cols, axis=1)
                rows *= np.take(tissue.mask[tissue_rows_all[next_row:stop]], tissue_cols, axis=1)
                counts[:] += np.bincount(rows.reshape(-1), minlength=num_classes)[:num_classes]
                pending.append(rows)
                pending_rows += rows.shape[0]
                next_row = stop
            work_row0 = work_row1
            while pending_rows >= OUTPUT_BAND_ROWS:
                merged = np.concatenate(pending, 0)
                yield merged[:OUTPUT_BAND_ROWS]
                rest = merged[OUTPUT_BAND_ROWS:]
                pending, pending_rows = ([rest] if len(rest) else []), len(rest)
        if pending_rows:
            yield np.concatenate(pending, 0)
        if next_row != out_h:
            raise WsiSegError(f"{slide_path}: internal stitching error ({next_row} of {out_h} rows)")

    try:
        write_pyramidal_tiff(output, width=out_w, height=out_h, bands=output_bands(),
                             band_height=OUTPUT_BAND_ROWS, mpp=mask_mpp, colormap=colors,
                             description=_ascii(f"wsi-seg label mask of {slide_path.name}; classes: "
                                                + ", ".join(meta["classes"]["names"])))
        if probs_store is not None:
            probs_store.commit()
    except BaseException:
        if probs_store is not None:
            probs_store.discard()
        raise
    finally:
        tile_images.close()
        bar.close()
    return SlidePrediction(slide_path, output, (out_w, out_h), mask_mpp, model_mpp, len(positions),
                           len(run_positions), time.perf_counter() - started, counts.tolist())


def describe(res: SlidePrediction) -> str:
    """The line that reports a finished slide."""
    return (f"wrote {res.output} ({res.size[0]}x{res.size[1]} at {res.mask_mpp:g} um/px; "
            f"{res.tiles_run}/{res.tiles_total} tiles with tissue; {res.seconds:.1f} s)")


def _predict_each(jobs, predictor, options) -> Iterator[tuple[int, SlidePrediction | WsiSegError]]:
    for index, (path, out) in enumerate(jobs):
        try:
            res = predict_slide(path, out, predictor, options)
        except WsiSegError as exc:
            yield index, exc
            continue
        except Exception as exc:  # an unexpected failure of one slide must not stop the batch
            yield index, WsiSegError(f"{path}: {type(exc).__name__}: {exc}")
            continue
        yield index, res


def predict_slides(slides: Sequence[Path], out_dir: Path, predictor, options: PredictOptions | None = None, *,
                   overwrite: bool = False, report: Callable[[str], None] = print,
                   client=None) -> list[SlidePrediction]:
    """Predict many slides into ``out_dir/<stem>.mask.tif``: finished outputs are
    skipped unless ``overwrite``; a bad slide is reported and the rest go on
    (:class:`BatchError` at the end).

    With a ``dask.distributed`` ``client``, ``predictor`` is a
    :class:`~wsi_seg.inference.backends.ModelSpec` and the slides are spread over the
    cluster's workers, one task per slide (:mod:`wsi_seg.inference.workers`); they are
    reported as they finish and returned in the order given."""
    targets: dict[Path, Path] = {}  # output -> slide
    for path in slides:  # two slides with one stem (a/x.svs, b/x.tif) would write one mask
        out = output_path_for(path, out_dir)
        if out in targets:
            raise InputError(f"{targets[out]} and {path} would both be written to {out}; "
                             "predict them into separate output folders or rename one")
        targets[out] = path
    jobs = []
    for out, path in targets.items():
        if out.exists() and not overwrite:
            report(f"skip {path.name}: {out} exists (pass --overwrite to redo)")
            continue
        jobs.append((path, out))
    if client is None:
        outcomes = _predict_each(jobs, predictor, options)
    else:
        from wsi_seg.inference.workers import predict_on_workers

        outcomes = predict_on_workers(client, jobs, predictor, options)
    done: dict[int, SlidePrediction] = {}
    failed: dict[int, tuple[str, str]] = {}
    for index, outcome in outcomes:
        path = jobs[index][0]
        if isinstance(outcome, WsiSegError):
            reason = str(outcome)
            for prefix in (f"{path.absolute()}: ", f"{path}: "):
                reason = reason.removeprefix(prefix)
            failed[index] = (str(path), reason)
            continue
        done[index] = outcome
        report(describe(outcome))
    if failed:
        raise BatchError([failed[index] for index in sorted(failed)], total=len(slides))
    return [done[index] for index in sorted(done)]

