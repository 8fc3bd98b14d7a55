"""``wsi-seg tile``: tissue patches of slides into a zarr patch store."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_seg.errors import BatchError, ConfigError


def _class_names(value: str | None) -> tuple[str, ...] | None:
    """Class names from a YAML file (a list, or ``classes:`` holding names or
    ``{name: ...}`` mappings) or from comma-separated names; ``None`` keeps the default."""
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        from wsi_seg.config import read_class_list

        return read_class_list(path)  # size-bounded, ConfigError naming the file
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ConfigError(f"--classes {value!r}: no class names")
    return names


@click.command("tile")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "store", required=True, type=click.Path(path_type=Path),
              help="Patch store to write (a .zarr folder).")
@click.option("--masks", "masks_dir", type=click.Path(path_type=Path),
              help="Folder of labels: <stem>.mask.tif, <stem>.png/.tif or QuPath <stem>.geojson.")
@click.option("--classes", help="Class list: a YAML file or comma-separated names (default: the 8 biopsy classes).")
@click.option("--mpp", type=float, default=1.0, show_default=True, help="Patch resolution, microns per pixel.")
@click.option("--patch", type=int, default=512, show_default=True, help="Patch size in pixels at --mpp.")
@click.option("--stride", type=int, default=None, help="Grid step in pixels at --mpp [default: --patch].")
@click.option("--min-tissue", type=float, default=0.5, show_default=True,
              help="Smallest tissue fraction of a kept patch.")
@click.option("--slide-mpp", type=float, default=None, help="Level-0 microns per pixel of slides that lack it.")
@click.option("--scheduler", default=None,
              help="dask.distributed scheduler address, tcp://HOST:8786 [default: local threads]; its workers "
                   "must see the slides and the store under the same paths.")
@click.option("--cluster", metavar="local:N", default=None,
              help="Start N worker processes of one thread on this machine for the run.")
@click.option("--workers", type=int, default=None, help="Local worker threads [default: one per core].")
@click.option("--overwrite", is_flag=True, help="Rebuild groups that are already complete.")
@click.option("--codec", default=None, help="Image codec: zstd[:LEVEL], blosc-lz4, none, jpeg[:Q], webp[:Q], jpegxl[:Q].")
@click.option("--no-progress", "--quiet", "no_progress", is_flag=True, help="Hide the progress bar.")
def tile(slides, store, masks_dir, classes, mpp, patch, stride, min_tissue, slide_mpp, scheduler, cluster, workers,
         overwrite, codec, no_progress):
    """Write the tissue patches of SLIDES (files or folders) into a zarr patch store.

    A rerun skips finished slides and rebuilds interrupted ones.
    """
    from wsi_seg.io.store import DEFAULT_CODEC
    from wsi_seg.tiling import tile_slides

    summary = tile_slides(
        slides, store, masks_dir=masks_dir, class_names=_class_names(classes), mpp=mpp, patch=patch,
        stride=stride, min_tissue=min_tissue, slide_mpp=slide_mpp, scheduler=scheduler, cluster=cluster,
        workers=workers, overwrite=overwrite, codec=codec or DEFAULT_CODEC, progress=not no_progress,
    )
    click.echo(
        f"{store}: {len(summary.done)} slide(s) tiled, {len(summary.skipped)} skipped (complete), "
        f"{len(summary.failed)} failed; {summary.patches_written} patches written"
    )
    if summary.failed:
        raise BatchError(summary.failed, summary.total)


COMMANDS = [tile]
