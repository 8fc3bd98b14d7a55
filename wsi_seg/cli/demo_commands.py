"""The `demo` command: the whole pipeline on built-in synthetic biopsies."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_seg.inference.tta import TTA_MODES


def _size(ctx, param, value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT") from None
    if width < 512 or height < 512:
        raise click.BadParameter("both sides must be at least 512 px")
    return width, height


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo"), show_default=True,
              help="Where slides, patches, the run, the mask and the review folder go.")
@click.option("--config", type=click.Path(path_type=Path), default=Path("configs/demo.yaml"), show_default=True,
              help="The training recipe.")
@click.option("--size", default="6144x4608", show_default=True, callback=_size,
              help="Synthetic slide size WIDTHxHEIGHT at 0.5 um/px.")
@click.option("--minutes", type=float, default=None, help="Training budget in minutes (default: the recipe's).")
@click.option("--epochs", type=click.IntRange(1, 10000), default=None, help="Epochs per stage (default: the recipe's).")
@click.option("--tile", type=click.IntRange(64, 8192), default=None,
              help="Prediction tile size at the model's mpp [default: the training patch size].")
@click.option("--overlap", type=click.IntRange(0, 4096), default=None,
              help="Overlap between prediction tiles [default: a quarter of the tile, at most 128].")
@click.option("--tta", type=click.Choice(list(TTA_MODES)), default="flips", show_default=True,
              help="Test-time augmentation of the held-out prediction (as predict --tta).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo_command(workdir, config, size, minutes, epochs, tile, overlap, tta, seed, no_progress):
    """Synthesise 3 biopsies, tile 2 with Dask, train ESPNet, predict and evaluate
    the held-out one, and export its review folder.

    Rerunning resumes: finished steps are skipped and outputs older than their
    inputs are redone; WORKDIR/demo.json records the settings, and a rerun with
    another --size or --seed is refused.
    """
    from wsi_seg.demo import DemoOptions, run_demo

    result = run_demo(DemoOptions(workdir=workdir, config=config, size=size, seed=seed, minutes=minutes, epochs=epochs,
                                  tile=tile, overlap=overlap, tta=tta, progress=not no_progress), echo=click.echo)
    total = sum(result.seconds.values())
    click.echo("")
    click.echo(f"held-out mIoU {result.miou:.3f}  ({total / 60:.1f} min of work this run)")
    click.echo(f"  mask        {result.mask}")
    click.echo(f"  metrics     {result.metrics}")
    click.echo(f"  overview    {result.review / 'overview.png'}")
    click.echo(f"  viewer      {result.review / 'index.html'}  (open in a browser)")
    click.echo(f"  checkpoint  {result.workdir / 'run' / 'last.pt'}")


COMMANDS = [demo_command]
