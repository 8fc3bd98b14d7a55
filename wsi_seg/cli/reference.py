"""The CLI reference (docs/cli.md), generated from the commands' own --help.

    python -m wsi_seg.cli.reference > docs/cli.md

A test regenerates it and compares, so the document cannot drift from the code.
"""

from __future__ import annotations

import click

from wsi_seg.cli import main


def render_reference(group: click.Group = main) -> str:
    lines = ["# wsi-seg command reference", "",
             "Generated from `--help` by `python -m wsi_seg.cli.reference > docs/cli.md`; "
             "a test keeps it in step with the code.", ""]
    # the group's own settings (help option names): click caches the help option per command
    ctx = click.Context(group, info_name="wsi-seg", terminal_width=100, max_content_width=100,
                        **group.context_settings)
    lines += ["## wsi-seg", "", "```text", group.get_help(ctx).rstrip(), "```", ""]
    for name in sorted(group.commands):
        command = group.commands[name]
        sub = click.Context(command, info_name=f"wsi-seg {name}", parent=ctx, terminal_width=100,
                            max_content_width=100)
        lines += [f"## wsi-seg {name}", "", "```text", command.get_help(sub).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render_reference(), end="")
