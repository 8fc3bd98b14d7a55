"""docs/cli.md is the commands' own --help, and the README names every command."""

from __future__ import annotations

from pathlib import Path

from wsi_seg.cli import main
from wsi_seg.cli.reference import render_reference

REPO = Path(__file__).resolve().parents[2]


def test_cli_reference_matches_help():
    assert (REPO / "docs/cli.md").read_text() == render_reference(), \
        "regenerate with: python -m wsi_seg.cli.reference > docs/cli.md"


def test_readme_lists_every_command():
    readme = (REPO / "README.md").read_text()
    for name in main.commands:
        assert f"`wsi-seg {name}" in readme, name
