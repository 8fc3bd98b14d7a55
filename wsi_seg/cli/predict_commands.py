"""Prediction commands: predict (slides -> label masks, images -> label PNGs) and evaluate (mask vs truth)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsi_seg.errors import InputError, OutputError
from wsi_seg.inference.tta import TTA_MODES

MASK_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be positive")
    return value


@click.command("predict")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="mask.tif for one slide, or a folder for <stem>.mask.tif per slide; "
                   "OUT.png for an ordinary image (PNG/JPEG).")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="A wsi-seg checkpoint (best.pt from training, or from convert-weights).")
@click.option("--mpp", type=float, default=None, callback=_positive,
              help="Microns per pixel the model runs at (default: the checkpoint's).")
@click.option("--tile", type=click.IntRange(16, 8192), default=None,
              help="Tile size in pixels at the model's mpp [default: the patch size the checkpoint was trained "
                   "on, where the model is most faithful; 1024 when it records none, and for images].")
@click.option("--overlap", type=click.IntRange(0, 4096), default=None,
              help="Overlap between neighbouring tiles, in pixels at the model's mpp [default: a quarter of "
                   "the tile, at most 128].")
@click.option("--mask-mpp", type=float, default=None, callback=_positive,
              help="Microns per pixel of the output mask (default: the slide's level 0).")
@click.option("--slide-mpp", type=float, default=None, callback=_positive,
              help="Microns per pixel of the slides' level 0, for slides without that metadata.")
@click.option("--batch-size", type=click.IntRange(1, 512), default=4, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Threads reading tiles ahead of the model.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="torch: --model is a checkpoint; onnx: --model is a file from `wsi-seg export-onnx`, "
                   "run by onnxruntime (pip install wsi-seg[onnx]).")
@click.option("--no-optimize", is_flag=True,
              help="torch backend: run the model as stored, without folding BatchNorms into convolutions.")
@click.option("--tta", type=click.Choice(list(TTA_MODES)), default="none", show_default=True,
              help="Test-time augmentation: average each tile's class probabilities over its 4 flips "
                   "(flips) or all 8 flips and transposes (d4); the model runs that many times.")
@click.option("--probabilities", type=click.Path(path_type=Path), default=None,
              help="Also keep float16 per-class probabilities at the model's mpp in this zarr folder "
                   "(one slide only).")
@click.option("--resize", default=None, metavar="WxH",
              help="Images only: resize the image to WIDTHxHEIGHT first (the checkpoint's way) and write the "
                   "label at that size, e.g. 1024x512 (Cityscapes), 384x384 (VOC).")
@click.option("--color", is_flag=True, help="Images only: also write a colour view, OUT.color.png.")
@click.option("--overwrite", is_flag=True, help="Redo slides whose mask already exists.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Run the slides on the dask.distributed scheduler at ADDRESS (tcp://HOST:8786), one task per "
                   "slide; its workers must see the slides, model and output under the same paths.")
@click.option("--cluster", metavar="local:N", default=None,
              help="Start N worker processes on this machine for the run (one slide at a time each).")
@click.option("--worker-threads", type=click.IntRange(1, 256), default=1, show_default=True, metavar="N",
              help="torch threads in each worker of --scheduler/--cluster.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def predict_command(slides, output, model_path, mpp, tile, overlap, mask_mpp, slide_mpp, batch_size, workers, device,
                    backend, no_optimize, tta, probabilities, resize, color, overwrite, scheduler, cluster, worker_threads,
                    no_progress):
    """Segment SLIDES into pyramidal label masks (TIFF, palette, mpp tags).

    \b
    Overlapping tiles of the tissue are run through the model and blended
    without seams; non-tissue is class 0. Memory does not grow with the slide.
    A folder in SLIDES means every slide in it.

    \b
    An ordinary image (.png, .jpg, .jpeg) with -o OUT.png gives a PNG of class
    ids (palette = class colours) at the image's size (tiled when larger than
    --tile), or at --resize WxH; --color adds OUT.color.png.

    \b
    --scheduler ADDRESS or --cluster local:N spread the slides over the
    workers of a dask.distributed cluster; each worker loads the model once.

    \b
    Examples:
      wsi-seg predict slide.svs -o slide.mask.tif --model run/best.pt
      wsi-seg predict slides/ -o masks/ --model run/best.pt --mask-mpp 2
      wsi-seg predict slides/ -o masks/ --model run/best.pt --cluster local:4
      wsi-seg predict street.png -o street.labels.png --model city.pt --resize 1024x512 --color
      wsi-seg predict slide.svs -o slide.mask.tif --model best.onnx --backend onnx
    """
    from wsi_seg.cluster import dask_client, parse_cluster
    from wsi_seg.inference.backends import ModelSpec
    from wsi_seg.inference.slide import PredictOptions, describe, predict_slide, predict_slides
    from wsi_seg.tiling import discover_slides

    if output.suffix.lower() == ".png" and any(p.suffix.lower() in IMAGE_SUFFIXES for p in slides):
        if scheduler is not None or cluster is not None:
            raise click.UsageError("--scheduler and --cluster apply to slides, not to ordinary images")
        predictor_args = {"backend": backend, "device": device, "optimize": not no_optimize, "tta": tta}
        _predict_image(slides, output, model_path, resize=resize, color=color, tile=tile or 1024,
                       overlap=128 if overlap is None else overlap,
                       batch_size=batch_size, predictor_args=predictor_args, overwrite=overwrite,
                       slide_only={"--mpp": mpp, "--mask-mpp": mask_mpp, "--slide-mpp": slide_mpp,
                                   "--probabilities": probabilities})
        return
    if resize is not None or color:
        raise click.UsageError("--resize and --color apply to ordinary images (IMAGE.png/.jpg -o OUT.png), "
                               "not to slides")

    if scheduler is not None and cluster is not None:
        raise click.UsageError("give --scheduler or --cluster, not both")
    if cluster is not None:
        parse_cluster(cluster)
    paths = discover_slides(slides)
    single_file = len(paths) == 1 and output.suffix.lower() in MASK_SUFFIXES
    if probabilities is not None and not single_file:
        raise click.UsageError("--probabilities needs one slide and a mask file as -o")
    if single_file:
        if output.is_dir():
            raise OutputError(f"{output}: is a directory; give a file name or drop the .tif suffix")
        if not output.parent.is_dir():
            raise OutputError(f"{output}: folder {output.parent} does not exist")
        if output.exists() and not overwrite:
            raise OutputError(f"{output}: already exists (pass --overwrite to replace it)")
        if probabilities is not None and probabilities.exists() and not overwrite:
            raise OutputError(f"{probabilities}: already exists (pass --overwrite to replace it)")
    else:
        if output.exists() and not output.is_dir():
            raise OutputError(f"{output}: exists and is not a folder (several slides need an output folder)")
        if not output.parent.is_dir():
            raise OutputError(f"{output}: folder {output.parent} does not exist")

    options = PredictOptions(tile=tile, overlap=overlap, mpp=mpp, mask_mpp=mask_mpp, slide_mpp=slide_mpp,
                             batch_size=batch_size, read_threads=workers, probabilities=probabilities,
                             progress=not no_progress, worker_threads=worker_threads)
    model = ModelSpec(model_path, backend=backend, device=device, optimize=not no_optimize, tta=tta)
    on_cluster = scheduler is not None or cluster is not None
    predictor = model if on_cluster else model.load()  # a cluster's workers load the model themselves
    options.validate(model.probe() if on_cluster else predictor)
    with dask_client(scheduler, cluster) as client:  # a bad address leaves nothing behind
        if single_file:
            click.echo(describe(predict_slide(paths[0], output, predictor, options, client=client)))
            return
        output.mkdir(exist_ok=True)
        results = predict_slides(paths, output, predictor, options, overwrite=overwrite, report=click.echo,
                                 client=client)
    click.echo(f"done: {len(results)} predicted, {len(paths) - len(results)} skipped")


def _predict_image(images, output, model_path, *, resize, color, tile, overlap, batch_size, predictor_args,
                   overwrite, slide_only):
    from wsi_seg.inference.image import parse_size, predict_image_file
    from wsi_seg.inference.backends import make_predictor

    if len(images) != 1:
        raise click.UsageError("an image prediction takes one IMAGE and -o OUT.png")
    given = [name for name, value in slide_only.items() if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)} apply to slides, not to ordinary images")
    size = parse_size(resize) if resize is not None else None
    predictor = make_predictor(model_path, **predictor_args)
    res = predict_image_file(images[0], output, predictor, resize=size, color=color, tile=tile, overlap=overlap,
                             batch_size=batch_size, overwrite=overwrite)
    extra = f" and {res.color}" if res.color is not None else ""
    click.echo(f"wrote {res.output}{extra} ({res.size[0]}x{res.size[1]} class ids; input "
               f"{res.input_size[0]}x{res.input_size[1]})")


@click.command("evaluate")
@click.option("--pred", "pred", required=True, type=click.Path(path_type=Path), help="Predicted label mask.")
@click.option("--truth", "truth", required=True, type=click.Path(path_type=Path), help="Ground-truth label mask.")
@click.option("--classes", default=None,
              help="Comma-separated class names, or a checkpoint (.pt) whose classes to use "
                   "(default: the 8 biopsy classes).")
@click.option("--ignore-index", type=int, default=255, show_default=True,
              help="Truth value of unlabelled pixels, skipped.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the metrics as JSON to this file.")
def evaluate_command(pred, truth, classes, ignore_index, json_out):
    """Per-class IoU, Dice, mIoU and pixel accuracy of PRED against TRUTH.

    The masks may differ in resolution by a scale factor (same aspect ratio);
    the confusion matrix is streamed in bands, so any slide size fits in memory.
    """
    from wsi_seg.evaluation import evaluate_masks, format_table

    names = _class_names(classes)
    result = evaluate_masks(pred, truth, names, ignore_index=ignore_index)
    click.echo(format_table(result))
    if json_out is not None:
        if not json_out.parent.is_dir():
            raise OutputError(f"{json_out}: folder {json_out.parent} does not exist")
        from wsi_seg.io.atomic import write_text

        write_text(json_out, json.dumps(result.as_dict(), indent=2))
        click.echo(f"wrote {json_out}")


def _class_names(value: str | None) -> list[str]:
    if value is None:
        from wsi_seg.synth import BIOPSY_CLASSES

        return [name for name, _ in BIOPSY_CLASSES]
    if value.endswith(".pt"):
        from wsi_seg.models.checkpoint import read_checkpoint

        return list(read_checkpoint(Path(value))["classes"]["names"])
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) < 2:
        raise InputError(f"--classes {value!r}: give at least two comma-separated names or a checkpoint")
    return names


COMMANDS = [predict_command, evaluate_command]
