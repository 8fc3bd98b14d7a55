"""The `synth` command: synthetic H&E biopsy slides with ground-truth masks."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class _SizeType(click.ParamType):
    """WIDTHxHEIGHT in level-0 pixels, e.g. 12000x10000."""

    name = "WIDTHxHEIGHT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = _SIZE.match(str(value))
        if not match:
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels (e.g. 12000x10000)", param, ctx)
        width, height = int(match.group(1)), int(match.group(2))
        if width < 256 or height < 256:
            self.fail(f"{value!r}: both sides must be at least 256 px", param, ctx)
        return width, height


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=3, show_default=True, help="Number of slides.")
@click.option("--size", type=_SizeType(), default="12000x10000", show_default=True, help="Slide size in pixels.")
@click.option(
    "--mpp",
    type=click.FloatRange(min=0.05, max=20),
    default=0.5,
    show_default=True,
    help="Microns per pixel at level 0.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same slides).")
@click.option("--pen", is_flag=True, help="Add pen-marker strokes (labelled background).")
@click.option("--overwrite", is_flag=True, help="Rewrite slides whose outputs already exist.")
def synth(out_dir: Path, n: int, size: tuple[int, int], mpp: float, seed: int, pen: bool, overwrite: bool) -> None:
    """Write N synthetic H&E breast-biopsy slides to OUT_DIR.

    Each slide is OUT_DIR/synth_NNN.svs (Aperio layout) with its ground-truth
    label mask OUT_DIR/synth_NNN.mask.tif. Existing outputs are skipped
    unless --overwrite.
    """
    from wsi_seg.synth import synthesize

    width, height = size
    existing = sum(
        (out_dir / f"synth_{i:03d}.svs").exists() and (out_dir / f"synth_{i:03d}.mask.tif").exists()
        for i in range(n)
    )
    start = time.perf_counter()
    pairs = synthesize(
        out_dir, n=n, width=width, height=height, mpp=mpp, seed=seed, pen=pen, overwrite=overwrite, progress=True
    )
    skipped = 0 if overwrite else existing
    click.echo(
        f"wrote {len(pairs) - skipped} slide(s), skipped {skipped} existing, in {out_dir} "
        f"({width}x{height} px at {mpp:g} um/px, {time.perf_counter() - start:.1f} s)"
    )


COMMANDS = [synth]
