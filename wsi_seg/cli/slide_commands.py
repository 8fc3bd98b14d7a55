"""`wsi-seg info`: what a slide holds (levels, mpp, objective, associated images)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsi_seg.errors import BatchError, MissingMppError, SlideError
from wsi_seg.io.slide import open_slide


def slide_summary(path: str, *, mpp: float | None = None) -> dict:
    """A JSON-ready description of one slide (raises SlideError when unusable)."""
    slide = open_slide(path, mpp=mpp)
    try:
        slide_mpp: float | None = slide.mpp
    except MissingMppError:
        slide_mpp = None
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": [
            {"level": i, "dimensions": list(dims), "downsample": downsample}
            for i, (dims, downsample) in enumerate(zip(slide.level_dimensions, slide.level_downsamples))
        ],
        "mpp": slide_mpp,
        "mpp_source": "--slide-mpp" if mpp is not None else ("metadata" if slide_mpp is not None else None),
        "objective_power": slide.objective_power,
        "associated_images": list(slide.associated_images),
    }


def _format_text(summary: dict) -> str:
    width, height = summary["dimensions"]
    if summary["mpp"] is None:
        mpp = "unknown (pass --slide-mpp)"
    else:
        mpp = f"{summary['mpp']:.4g} um/px ({summary['mpp_source']})"
    power = summary["objective_power"]
    lines = [
        f"{summary['path']}",
        f"  vendor: {summary['vendor'] or 'plain image'}",
        f"  size: {width} x {height} px (level 0)",
        f"  mpp: {mpp}",
        f"  objective power: {f'{power:g}x' if power else 'unknown'}",
        f"  levels: {len(summary['levels'])}",
    ]
    for level in summary["levels"]:
        w, h = level["dimensions"]
        lines.append(f"    {level['level']}: {w} x {h} px, downsample {level['downsample']:.4g}")
    lines.append(f"  associated images: {', '.join(summary['associated_images']) or 'none'}")
    return "\n".join(lines)


@click.command("info")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (a list, one object per slide).")
@click.option(
    "--slide-mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Level-0 microns per pixel, for slides without (or with wrong) metadata.",
)
def info(slides: tuple[str, ...], as_json: bool, slide_mpp: float | None) -> None:
    """Describe SLIDES: vendor, size, pyramid levels, mpp, objective, associated images."""
    summaries: list[dict] = []
    failures: list[tuple[str, str]] = []
    for path in slides:
        try:
            summary = slide_summary(path, mpp=slide_mpp)
        except SlideError as exc:
            message = str(exc)
            prefix = f"{Path(path).expanduser().absolute()}: "
            reason = message[len(prefix) :] if message.startswith(prefix) else message
            failures.append((path, reason))
            continue
        summaries.append(summary)
        if not as_json:
            click.echo(_format_text(summary))
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
    if failures:
        if len(slides) == 1:
            path, reason = failures[0]
            raise SlideError(f"{path}: {reason}")
        raise BatchError(failures, total=len(slides))


COMMANDS = [info]
