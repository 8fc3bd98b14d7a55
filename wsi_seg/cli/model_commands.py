"""Model commands: convert-weights, model-info."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsi_seg.errors import InputError, OutputError


def _hparams(arch: str, alpha2, alpha3, k, scale) -> dict:
    """Collect the hyper-parameter options that apply to ``arch``; refuse the others."""
    espnet_family = {"alpha2": alpha2, "alpha3": alpha3, "K": k}
    if arch == "espnetv2":
        given = [f"--{n.lower()}" for n, v in espnet_family.items() if v is not None and n != "K"]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to the ESPNet family, not espnetv2 (use --scale)")
        return {k_: v for k_, v in {"scale": scale, "K": k}.items() if v is not None}
    if scale is not None:
        raise click.UsageError(f"--scale applies to espnetv2, not {arch}")
    return {k_: v for k_, v in espnet_family.items() if v is not None}


def _hparam_options(func):
    func = click.option("--scale", type=click.Choice(["0.5", "1.0", "1.25", "1.5", "2.0"]), default=None,
                        callback=lambda c, p, v: None if v is None else float(v),
                        help="ESPNetv2 width scale s.")(func)
    func = click.option("--K", "k", type=click.IntRange(1, 16), default=None,
                        help="Branches per ESP module (ESPNet: 5, ESPNetv2: 4).")(func)
    func = click.option("--alpha3", type=click.IntRange(0, 64), default=None,
                        help="ESP modules at level 3 (ESPNet family; default 8).")(func)
    func = click.option("--alpha2", type=click.IntRange(0, 64), default=None,
                        help="ESP modules at level 2 (ESPNet family; default 2).")(func)
    return func


@click.command("convert-weights")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="The wsi-seg checkpoint to write (.pt).")
@click.option("--arch", required=True, type=click.Choice(["espnet", "espnet_c", "espnetv2"]),
              help="Architecture of SRC: espnet (decoder files), espnet_c (encoder files), espnetv2.")
@click.option("--classes", "num_classes", required=True, type=click.IntRange(1, 1000),
              help="Number of classes the weights were trained with (Cityscapes 20, VOC 21).")
@click.option("--dataset", type=click.Choice(["cityscapes", "voc"]), default=None,
              help="Name the classes and colours after this dataset.")
@_hparam_options
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert_weights_command(src: Path, out: Path, arch: str, num_classes: int, dataset: str | None,
                            alpha2, alpha3, k, scale, overwrite: bool) -> None:
    """Convert the ESPNet authors' released weights SRC into a wsi-seg checkpoint.

    \b
    Examples:
      wsi-seg convert-weights espnet_p_2_q_8.pth -o espnet_city.pt --arch espnet \\
          --alpha2 2 --alpha3 8 --classes 20 --dataset cityscapes
      wsi-seg convert-weights espnetv2_s_2.0_pascal_384x384.pth -o v2_voc.pt \\
          --arch espnetv2 --scale 2.0 --classes 21 --dataset voc

    Every key is mapped and loaded strictly; a file of another architecture or
    class count is refused with the keys and shapes that do not fit.
    """
    from wsi_seg.models.checkpoint import save_checkpoint
    from wsi_seg.models.pretrained import convert_weights

    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists (pass --overwrite to replace it)")
    ckpt = convert_weights(src, arch=arch, num_classes=num_classes, hparams=_hparams(arch, alpha2, alpha3, k, scale),
                           dataset=dataset)
    save_checkpoint(ckpt, out)
    hp = ", ".join(f"{k_}={v}" for k_, v in ckpt["model"]["hparams"].items())
    click.echo(f"wrote {out}: {arch}({hp}), {num_classes} classes, {len(ckpt['state_dict'])} tensors")


def _parse_hw(ctx, param, value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH, e.g. 512x1024") from None
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"{value!r}: sizes must be positive")
    return h, w


@click.command("model-info")
@click.argument("arch")
@click.option("--classes", "num_classes", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Number of classes.")
@click.option("--input", "input_hw", default="512x1024", show_default=True, callback=_parse_hw,
              help="Input HEIGHTxWIDTH for the multiply-add count (512x1024 is a 1024x512 Cityscapes frame).")
@_hparam_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def model_info_command(arch: str, num_classes: int, input_hw: tuple[int, int], alpha2, alpha3, k, scale,
                       as_json: bool) -> None:
    """Parameters, fp32 size, multiply-adds and ESP receptive fields of ARCH.

    ARCH is one of: espnet_a, espnet_b, espnet_c, espnet, espnetv2.
    """
    from wsi_seg.models import create_model, list_models
    from wsi_seg.models.complexity import count_macs, count_parameters, esp_receptive_fields, size_mb
    from wsi_seg.models.registry import INPUT_MULTIPLE, resolve_hparams

    if arch not in list_models():
        raise InputError(f"unknown model {arch!r}; available: {', '.join(list_models())}")
    multiple = INPUT_MULTIPLE[arch]
    if input_hw[0] % multiple or input_hw[1] % multiple:
        raise InputError(f"--input {input_hw[0]}x{input_hw[1]}: {arch} needs sizes divisible by {multiple}")
    try:
        hp = resolve_hparams(arch, **_hparams(arch, alpha2, alpha3, k, scale))
        model = create_model(arch, num_classes, **hp)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    params = count_parameters(model)
    macs = count_macs(model, input_hw)
    fields = esp_receptive_fields(model)
    info = {
        "model": arch, "hparams": hp, "classes": num_classes, "params": params,
        "size_mb_fp32": round(size_mb(params), 3), "input_hw": list(input_hw), "macs": macs,
        "receptive_fields": [f.__dict__ for f in fields],
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    hp_text = ", ".join(f"{k_}={v}" for k_, v in hp.items())
    click.echo(f"{arch}({hp_text}), {num_classes} classes")
    click.echo(f"  parameters       {params:,}")
    click.echo(f"  size (fp32)      {info['size_mb_fp32']:.3f} MB")
    click.echo(f"  multiply-adds    {macs / 1e9:.3f} G at {input_hw[0]}x{input_hw[1]} (HxW)")
    click.echo("  receptive field of one ESP/EESP module per level:")
    for f in fields:
        click.echo(f"    stride {f.stride:>2}  {f.field_px:>3} x {f.field_px:<3} feature px = "
                   f"{f.field_input_px} x {f.field_input_px} input px  ({f.module})")


COMMANDS = [convert_weights_command, model_info_command]
