"""``wsi-seg train``: train ESPNet on a zarr patch store from a YAML recipe."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from wsi_seg.errors import ConfigError


class _EchoHandler(logging.Handler):
    """Log records as plain lines on stderr (tqdm-safe)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


@click.command("train")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Training recipe (YAML), e.g. configs/biopsy.yaml [with --resume: RUN_DIR/config.yaml].")
@click.option("--data", "store", type=click.Path(path_type=Path), help="Patch store (overrides data.store), or the dataset root for data.kind "
                   "cityscapes/voc (overrides data.root).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Run folder (overrides output.dir).")
@click.option("--epochs", type=click.IntRange(min=0), help="Epochs of every stage (overrides stages[*].epochs).")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its last.pt.")
@click.option("--init", "init", type=click.Path(path_type=Path),
              help="wsi-seg checkpoint whose fitting weights initialise the first stage.")
@click.option("--overwrite", is_flag=True, help="Start again in a run folder that already holds a run.")
@click.option("--seed", type=int, help="Random seed (overrides run.seed).")
@click.option("--device", help="auto, cpu, cuda, cuda:N (overrides run.device).")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader worker processes (overrides data.workers).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Patches per batch and process (overrides data.batch_size).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Time budget: stop before an epoch that would overrun it (overrides run.max_minutes).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads per process (overrides run.threads).")
@click.option("--processes", type=click.IntRange(min=1),
              help="Data-parallel training processes started on this machine (overrides run.processes; "
                   "ignored under torchrun).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars (log lines stay).")
@click.option("--quiet", is_flag=True, help="No progress bars and no log lines.")
def train(config_path, store, out, epochs, resume, init, overwrite, seed, device, workers, batch_size,
          max_minutes, threads, processes, no_progress, quiet):
    """Train the model a recipe describes on a patch store.

    Writes RUN_DIR/last.pt, best.pt (by validation mIoU), metrics.csv and config.yaml.
    Runs under torchrun for data-parallel training, or starts run.processes
    (--processes) data-parallel processes itself.
    """
    from wsi_seg.config import load_train_config
    from wsi_seg.engine.train import train as run_training

    if config_path is None:
        if resume and out is not None:
            config_path = out / "config.yaml"
        else:
            raise ConfigError("--config: required (or --resume with --out RUN_DIR to reuse RUN_DIR/config.yaml)")
    config = load_train_config(config_path, store=store, out=out, epochs=epochs, seed=seed, device=device,
                               workers=workers, batch_size=batch_size, max_minutes=max_minutes, threads=threads,
                               processes=processes)
    logger = logging.getLogger("wsi_seg.train")
    handler = None
    if not quiet and int(os.environ.get("RANK", "0")) == 0:  # one log stream under torchrun
        handler = _EchoHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = run_training(config, resume=resume, init=init, overwrite=overwrite, progress=not (quiet or no_progress))
    finally:
        if handler is not None:
            logger.removeHandler(handler)

    if int(os.environ.get("RANK", "0")) == 0:
        stages = ", ".join(f"{s.name} ({s.model}) {s.epochs} epoch(s), best mIoU {s.best_miou:.4f}"
                           for s in result.stages)
        budget = " (stopped by the time budget)" if result.stopped_by_time else ""
        click.echo(f"{result.run_dir}: {stages or 'nothing left to train'}{budget}; model {result.checkpoint}")


COMMANDS = [train]
