"""ONNX commands: export-onnx (a checkpoint -> a self-contained ONNX model)."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_seg.errors import InputError, OutputError


@click.command("export-onnx")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="The ONNX file to write, e.g. model.onnx.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def export_onnx_command(checkpoint, output, overwrite):
    """Export CHECKPOINT's model to ONNX (opset 17) for `predict --backend onnx`.

    \b
    Batch, height and width are dynamic axes (height and width must still be
    multiples of the model's input multiple). The file carries the checkpoint's
    meta (model and hyper-parameters, classes and colours, normalisation, mpp)
    as metadata, so it is all `wsi-seg predict --backend onnx --model model.onnx`
    needs. Requires the onnx extra: pip install wsi-seg[onnx].

    \b
    Example:
      wsi-seg export-onnx run/best.pt -o best.onnx
    """
    from wsi_seg.inference.onnx_export import OPSET, export_checkpoint

    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (pass --overwrite to replace it)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise InputError("export-onnx needs onnx: pip install wsi-seg[onnx]") from None
    path = export_checkpoint(checkpoint, output)
    click.echo(f"wrote {path} (opset {OPSET}, dynamic batch/height/width)")


COMMANDS = [export_onnx_command]
