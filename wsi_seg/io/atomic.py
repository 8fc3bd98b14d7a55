"""Outputs that appear whole or not at all, and cleaning up after killed writers.

Every output (label mask, overlay, checkpoint, review folder, JSON report) is
written under a hidden temporary sibling name and renamed into place when complete,
so a crash, a full disk or a SIGKILL never leaves a partial file at the final path.

A killed writer cannot remove its temporary files, so their names say who made them::

    .<final name>.<owner>.<pid>.<random><suffix>

where ``owner`` identifies the machine and PID namespace. Before writing a path,
:func:`remove_stale` deletes that path's temporary siblings whose owner is this
machine and whose process has ended; files of writers still running, or running on
another machine of a cluster sharing the folder, are left alone.

Temporary files and folders are made with the permissions the process's umask gives a
plain ``open()`` or ``mkdir`` (usually ``rw-r--r--`` and ``rwxr-xr-x``), not the
owner-only ones of :mod:`tempfile`, so a mask written on a shared server is readable by
the colleagues the umask lets read it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from wsi_seg.errors import OutputError

#: errno values that mean "this output cannot be written here" (not a bug, not bad input).
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
                  errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


@lru_cache(maxsize=1)
def owner() -> str:
    """This machine and PID namespace, as a token safe in a file name."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40].strip("-") or "host"
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{host}-{namespace}"


def umask() -> int:
    """The process's file-creation mask, read without changing it where Linux says it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic with other threads)
    os.umask(mask)
    return mask


def _prefix(path: Path) -> str:
    return f".{path.name}.{owner()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings of ``path`` left by killed writers of this machine;
    returns what was removed."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(owner())}\.(\d+)\.")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to remove after all; it does no harm where it is
        removed.append(entry)
    return removed


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The one-line error for an output that cannot be written."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"{path}: cannot write ({reason})")


def is_output_problem(exc: BaseException) -> bool:
    """Whether an exception says the output location is unusable (permissions, space...)."""
    return isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS


def temp_file(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty temporary file next to ``path`` (see the module docstring); stale ones
    of the same path are removed first. Raises :class:`OutputError` when the folder
    cannot be written."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    remove_stale(path)
    try:
        fd, name = tempfile.mkstemp(prefix=_prefix(path), suffix=suffix, dir=folder)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(name)


def temp_dir(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty temporary folder next to ``path``, like :func:`temp_file`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    remove_stale(path)
    try:
        name = tempfile.mkdtemp(prefix=_prefix(path), suffix=suffix, dir=folder)
    except OSError as exc:
        raise output_error(path, exc) from None
    os.chmod(name, 0o777 & ~umask())
    return Path(name)


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Write ``path`` whole or not at all: yields a temporary sibling to write, renamed
    onto ``path`` when the block ends normally and removed otherwise. A location that
    cannot be written (permissions, space, ...) becomes :class:`OutputError`."""
    tmp = temp_file(path, suffix)  # OutputError when the folder cannot be written
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_output_problem(exc):
            raise output_error(path, exc) from None
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; :class:`OutputError` when it cannot be written."""
    path = Path(path)
    tmp = temp_file(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
