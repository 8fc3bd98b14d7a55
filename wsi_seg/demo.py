"""The end-to-end demo on built-in synthetic biopsies.

synthesise 3 slides (2 for training, 1 held out) -> tile them with Dask -> train
the two-stage ESPNet recipe for a bounded time -> predict the held-out slide ->
evaluate it against its ground truth -> export the review folder.

Every step skips work that is already done, so rerunning the demo resumes it: like
make, an output is redone when it is older than what it is made from (a mask older
than the checkpoint, a review folder older than the mask), and ``demo.json`` records
the settings the slides and the mask were made with, so a rerun with other slide
settings is refused and one with other prediction settings predicts again.
The library functions are the ones the CLI commands call; nothing here is
specific to the demo except the choice of sizes and paths.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wsi_seg.config import load_train_config
from wsi_seg.errors import InputError
from wsi_seg.io.atomic import write_text

TRAIN_SLIDES = ("synth_000", "synth_001")
HELD_OUT = "synth_002"


@dataclass
class DemoOptions:
    workdir: Path = Path("demo")
    config: Path = Path("configs/demo.yaml")
    size: tuple[int, int] = (6144, 4608)   # width, height at 0.5 um/px
    seed: int = 0
    patch_mpp: float = 2.0
    patch: int = 128
    minutes: float | None = None           # training budget (default: the config's)
    epochs: int | None = None              # per stage (default: the config's)
    tile: int | None = None                # prediction tile (default: the training patch size)
    overlap: int | None = None
    tta: str = "flips"                     # test-time flips (predict --tta)
    progress: bool = True


@dataclass
class DemoResult:
    workdir: Path
    mask: Path
    metrics: Path
    review: Path
    miou: float
    per_class: dict[str, float | None]
    seconds: dict[str, float] = field(default_factory=dict)


def up_to_date(output: Path, *inputs: Path) -> bool:
    """Whether ``output`` exists and is no older than any of ``inputs``."""
    if not output.exists():
        return False
    made = output.stat().st_mtime
    return all(made >= source.stat().st_mtime for source in inputs)


def _settings(options: DemoOptions) -> dict:
    return {"slides": {"size": list(options.size), "seed": options.seed},
            "prediction": {"tile": options.tile, "overlap": options.overlap, "tta": options.tta}}


def _check_slide_settings(record: Path, wanted: dict) -> dict | None:
    """The settings an earlier run of this workdir recorded; refuses other slide settings."""
    if not record.is_file():
        return None
    try:
        earlier = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    before = earlier.get("slides")
    if before is not None and before != wanted["slides"]:
        w, h = before.get("size", ("?", "?"))
        raise InputError(f"{record.parent}: holds a demo made with --size {w}x{h} --seed {before.get('seed')}; "
                         "delete it or choose another --workdir")
    return earlier


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> DemoResult:
    from wsi_seg.evaluation import evaluate_masks, format_table
    from wsi_seg.engine.train import train
    from wsi_seg.inference.backends import make_predictor
    from wsi_seg.inference.slide import PredictOptions, predict_slide
    from wsi_seg.review.classes import classes_from_checkpoint
    from wsi_seg.review.export import ExportOptions, export_review
    from wsi_seg.synth import is_synthesized, synthesize
    from wsi_seg.tiling import tile_slides

    work = Path(options.workdir)
    if not Path(options.config).is_file():
        raise InputError(f"{options.config}: demo recipe not found (run from the repository root)")
    work.mkdir(parents=True, exist_ok=True)
    slides_dir, store, run_dir = work / "slides", work / "patches.zarr", work / "run"
    mask, review, metrics = work / f"{HELD_OUT}.mask.tif", work / "review", work / "metrics.json"
    record, settings = work / "demo.json", _settings(options)
    earlier = _check_slide_settings(record, settings)
    seconds: dict[str, float] = {}

    def step(name: str, fn):
        echo(f"== {name}")
        start = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - start
        return out

    width, height = options.size
    present = [name for name in (*TRAIN_SLIDES, HELD_OUT) if is_synthesized(slides_dir, name)]
    step("synthesise 3 slides", lambda: synthesize(slides_dir, n=3, width=width, height=height, mpp=0.5,
                                                   seed=options.seed, progress=options.progress))
    if present:
        echo(f"   kept {len(present)} slide(s) already in {slides_dir}")
    write_text(record, json.dumps({**(earlier or {}), "slides": settings["slides"]}, indent=2))
    config = load_train_config(options.config, store=store, out=run_dir, epochs=options.epochs,
                               max_minutes=options.minutes)
    class_names = [c.name for c in config.classes]
    # The held-out slide is never seen in training nor used to pick a checkpoint:
    # no validation slide, every stage ends on its last epoch, and prediction uses last.pt.
    config.data.train_slides = list(TRAIN_SLIDES)
    config.data.val_slides = []

    def tile():
        summary = tile_slides([slides_dir / f"{s}.svs" for s in TRAIN_SLIDES], store,
                              masks_dir=slides_dir, class_names=class_names, mpp=options.patch_mpp,
                              patch=options.patch, min_tissue=0.2, progress=options.progress)
        if summary.failed:
            raise InputError(f"{store}: tiling failed for {len(summary.failed)} slide(s)")
        return summary

    tiled = step("tile with Dask", tile)
    if tiled.skipped:
        echo(f"   {len(tiled.skipped)} slide(s) already complete in {store}")

    final = run_dir / "last.pt"
    if final.exists() and (run_dir / "best.pt").exists():
        echo(f"   {run_dir} holds a finished run; delete it to train again")
    else:
        trained = step("train (two stages)", lambda: train(config, resume=(run_dir / "last.pt").exists(),
                                                           overwrite=True, progress=options.progress))
        planned = {config.stage_name(i): stage.epochs for i, stage in enumerate(config.stages)}
        echo("   " + ", ".join(f"{stage.name} {stage.epochs}/{planned.get(stage.name, '?')} epochs"
                               for stage in trained.stages))
        if trained.stopped_by_time:
            echo(f"   note: the training budget ({config.run.max_minutes:g} min, --minutes) ended training early; "
                 "the score is lower than a full run's")
    predicted_with = (earlier or {}).get("prediction")
    if up_to_date(mask, final) and predicted_with == settings["prediction"]:
        echo(f"   {mask} is up to date with {final}")
    else:
        predictor = make_predictor(final, tta=options.tta)
        step("predict the held-out slide",
             lambda: predict_slide(slides_dir / f"{HELD_OUT}.svs", mask, predictor,
                                   PredictOptions(tile=options.tile, overlap=options.overlap,
                                                  progress=options.progress)))
        write_text(record, json.dumps(settings, indent=2))
    evaluation = step("evaluate against the ground truth",
                      lambda: evaluate_masks(mask, slides_dir / f"{HELD_OUT}.mask.tif", class_names))
    echo(format_table(evaluation))
    summary = evaluation.as_dict()
    write_text(metrics, json.dumps(summary, indent=2))
    if up_to_date(review / "index.html", mask):
        echo(f"   {review} is up to date with {mask}")
    else:
        step("export the review folder",
             lambda: export_review(slides_dir / f"{HELD_OUT}.svs", mask, review,
                                   classes=classes_from_checkpoint(final), options=ExportOptions(overwrite=True)))
    return DemoResult(work, mask, metrics, review, float(summary["miou"]), summary["iou"], seconds)
