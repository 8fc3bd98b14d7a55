"""``wsi-seg evaluate-dataset``: a checkpoint's mIoU on a Cityscapes or PASCAL VOC split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsi_seg.errors import CheckpointError, ConfigError, OutputError


@click.command("evaluate-dataset")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="The dataset's recipe (configs/cityscapes.yaml, configs/voc.yaml): kind, classes, size.")
@click.option("--data", "root", type=click.Path(path_type=Path), help="Dataset root (overrides data.root).")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="A wsi-seg checkpoint with the dataset's class count.")
@click.option("--split", default="val", show_default=True, help="Split to evaluate (train, val, ...).")
@click.option("--resize", default=None, metavar="WxH|native",
              help="Size images are labelled at (default: the config's data.size); 'native': their own size.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the metrics (and confusion matrix) as JSON to this file.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def evaluate_dataset_command(config_path, root, model_path, split, resize, json_out, device, no_progress):
    """Class-wise mIoU (and for Cityscapes the 7 categories' mIoU) of a checkpoint on a dataset split.

    \b
    Predictions are made the checkpoint's way and compared with the labels at
    the dataset's full resolution. Cityscapes void pixels are ignored; with the
    ESPNet authors' 20-class weights, class 19 (background) is not evaluated.

    \b
    Example:
      wsi-seg evaluate-dataset --config configs/cityscapes.yaml --data cityscapes/ \\
          --model espnet_city.pt --split val --json val.json
    """
    from wsi_seg.config import load_train_config
    from wsi_seg.data.image_pairs import open_pairs
    from wsi_seg.engine.dataset_eval import evaluate_pairs, format_report
    from wsi_seg.inference.image import parse_size
    from wsi_seg.inference.predictor import TorchPredictor

    config = load_train_config(config_path, store=root)
    data = config.data
    if data.kind == "patches":
        raise ConfigError(f"{config_path}: data.kind is patches; evaluate-dataset needs cityscapes or voc "
                          f"(slides are evaluated with `wsi-seg evaluate`)")
    if data.root is None:
        raise ConfigError(f"{config_path}: data.root: no dataset root (set it or pass --data ROOT)")
    if json_out is not None and not json_out.parent.is_dir():
        raise OutputError(f"{json_out}: folder {json_out.parent} does not exist")
    if resize is None:
        size = tuple(data.size) if data.size is not None else None
    else:
        size = None if resize.lower() == "native" else parse_size(resize)
    num_classes = len(config.classes)
    pairs = open_pairs(data.kind, data.root, split, num_classes, ignore_index=config.optim.ignore_index,
                       void_as_background=False)
    predictor = TorchPredictor.from_checkpoint(model_path, device=device)
    if predictor.num_classes != num_classes:
        raise CheckpointError(f"{model_path}: the checkpoint has {predictor.num_classes} classes but the "
                              f"{data.kind} config {config_path} has {num_classes}")
    result = evaluate_pairs(predictor, pairs, config.class_names, resize=size,
                            ignore_index=config.optim.ignore_index, progress=not no_progress)
    click.echo(format_report(result))
    if json_out is not None:
        from wsi_seg.io.atomic import write_text

        write_text(json_out, json.dumps(result.as_dict(), indent=2))
        click.echo(f"wrote {json_out}")


COMMANDS = [evaluate_dataset_command]
