"""Atomic outputs: temporary names that say who made them, and cleaning up after killed writers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wsi_seg.errors import OutputError
from wsi_seg.io.atomic import owner, remove_stale, replacing, temp_dir, temp_file, write_text


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_names_carry_owner_and_pid(tmp_path):
    out = tmp_path / "mask.tif"
    tmp = temp_file(out, ".part")
    folder = temp_dir(out, ".levels")
    prefix = f".mask.tif.{owner()}.{os.getpid()}."
    assert tmp.name.startswith(prefix) and tmp.name.endswith(".part") and tmp.is_file()
    assert folder.name.startswith(prefix) and folder.is_dir()
    assert "." not in owner()


def test_remove_stale_takes_only_what_killed_writers_of_this_machine_left(tmp_path):
    out = tmp_path / "mask.tif"
    dead = _dead_pid()
    stale_file = tmp_path / f".mask.tif.{owner()}.{dead}.abc.part"
    stale_dir = tmp_path / f".mask.tif.{owner()}.{dead}.def.levels"
    stale_file.write_bytes(b"half a mask")
    stale_dir.mkdir()
    (stale_dir / "level1.raw").write_bytes(b"spool")
    running = tmp_path / f".mask.tif.{owner()}.{os.getppid()}.ghi.part"  # a live process
    elsewhere = tmp_path / f".mask.tif.otherhost-1.{dead}.jkl.part"  # another machine of a cluster
    other_output = tmp_path / f".other.tif.{owner()}.{dead}.mno.part"
    legacy = tmp_path / ".mask.tif.x1y2z3.part"  # older names say nothing about their writer
    for path in (running, elsewhere, other_output, legacy):
        path.write_bytes(b"")
    removed = remove_stale(out)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(path.exists() for path in (running, elsewhere, other_output, legacy))


def test_a_new_temporary_file_clears_the_stale_ones_first(tmp_path):
    out = tmp_path / "m.pt"
    stale = tmp_path / f".m.pt.{owner()}.{_dead_pid()}.x.tmp"
    stale.write_bytes(b"")
    tmp = temp_file(out)
    assert not stale.exists() and tmp.exists()


def test_write_text_is_atomic_and_reports_unwritable_folders(tmp_path):
    path = write_text(tmp_path / "r.json", "{}")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"r.json: cannot write"):
        write_text(blocker / "r.json", "{}")


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_get_the_umask_permissions_of_a_plain_open(tmp_path, mask, file_mode, dir_mode):
    previous = os.umask(mask)
    try:
        text = write_text(tmp_path / "r.json", "{}")
        with replacing(tmp_path / "m.tif") as tmp:
            tmp.write_bytes(b"x")
        folder = temp_dir(tmp_path / "review")
    finally:
        os.umask(previous)
    assert oct(text.stat().st_mode & 0o777) == oct(file_mode)
    assert oct((tmp_path / "m.tif").stat().st_mode & 0o777) == oct(file_mode)
    assert oct(folder.stat().st_mode & 0o777) == oct(dir_mode)
