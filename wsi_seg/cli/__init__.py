"""The `wsi-seg` command line: a thin layer that validates options, calls one
library function per command and prints a summary.

Errors from :mod:`wsi_seg.errors` become one line on stderr and an exit code
(2 bad input, 1 some items of a batch failed); ``--debug`` shows tracebacks.
Usage errors (a bad option value) are one line too, exit code 2.
"""

from __future__ import annotations

import os
import sys

import click

from wsi_seg import __version__
from wsi_seg.errors import BatchError, WsiSegError


def _debug_enabled(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("WSI_SEG_DEBUG") == "1"


def _one_line(text: object) -> str:
    """A message on one line: YAML, torch and OS messages may span several."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _WsiSegGroup(click.Group):
    """A click group that maps library errors to one stderr line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.UsageError as exc:  # a bad option or argument: one line, and where to look
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"wsi-seg: error: {_one_line(exc.format_message())} (see '{command} --help')", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"wsi-seg: error: {_one_line(exc.format_message())}", err=True)
            ctx.exit(exc.exit_code)
        except BatchError as exc:
            if _debug_enabled(ctx):
                raise
            for item, reason in exc.failures:
                click.echo(f"wsi-seg: failed: {item}: {_one_line(reason)}", err=True)
            click.echo(f"wsi-seg: error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except WsiSegError as exc:
            if _debug_enabled(ctx):
                raise
            click.echo(f"wsi-seg: error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("wsi-seg: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # an unexpected failure: still one line unless --debug
            if _debug_enabled(ctx):
                raise
            click.echo(
                f"wsi-seg: internal error: {type(exc).__name__}: {_one_line(exc)} "
                "(rerun with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=_WsiSegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wsi-seg")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Segment whole-slide pathology images with ESPNet.

    \b
    Typical use:
      wsi-seg tile slides/ -o patches.zarr --masks labels/
      wsi-seg train --config configs/biopsy.yaml
      wsi-seg predict slide.svs -o mask.tif --model best.pt
    """


def _register() -> None:
    from wsi_seg.cli import model_commands
    from wsi_seg.cli import synth_commands
    from wsi_seg.cli import tile_commands
    from wsi_seg.cli import slide_commands
    from wsi_seg.cli import train_commands
    from wsi_seg.cli import predict_commands
    from wsi_seg.cli import review_commands
    from wsi_seg.cli import demo_commands
    from wsi_seg.cli import dataset_commands
    from wsi_seg.cli import onnx_commands

    for module in (model_commands, tile_commands, slide_commands, synth_commands, train_commands,
                   predict_commands, onnx_commands, dataset_commands, review_commands, demo_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
