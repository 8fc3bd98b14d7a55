"""Names derived from untrusted text (slide file names) that become file or group names.

Slide names come from scanners, LIMS exports and users; they end up as zarr group
names in the patch store and as file names in output folders. Every such name goes
through :func:`safe_name`, a pure function whose result is always one ordinary path
component: no separators (``/``, ``\\``), no NUL or other control characters, never
``.``, ``..``, empty or hidden (leading dot), at most :data:`MAX_NAME_BYTES` bytes of
UTF-8. Letters of any script, digits, spaces and punctuation are kept, so names stay
readable. :func:`child` joins such a name to a folder and checks, as a second line of
defence, that the result lies inside it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

#: Longest name in bytes (UTF-8); file systems allow 255, suffixes such as ``.mask.tif`` need room.
MAX_NAME_BYTES = 200

#: Separators of any platform, NUL and the other control characters.
_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]+")
#: What a zarr group name may hold besides letters and digits of any script.
_GROUP_UNSAFE = re.compile(r"[^\w.-]+")


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def safe_name(text: str, *, fallback: str = "slide") -> str:
    """``text`` as one safe path component (see the module docstring); ``fallback`` when
    nothing usable is left. Unicode is normalised to NFC, so the same visible name
    always gives the same result."""
    name = unicodedata.normalize("NFC", str(text))
    name = _FORBIDDEN.sub("_", name)
    name = name.strip().lstrip(".").rstrip(". ")
    name = _truncate(name, MAX_NAME_BYTES).rstrip(". ")
    return name or fallback


def slide_stem(path: str | os.PathLike) -> str:
    """The file name of a slide without its suffix (``.ome.tif``/``.ome.tiff`` count as one)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def slide_id(path: str | os.PathLike) -> str:
    """A patch-store group name from a slide path: the safe stem with anything but letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_`` (``case 1 é.svs`` -> ``case_1_é``)."""
    name = _GROUP_UNSAFE.sub("_", safe_name(slide_stem(path)))
    name = name.strip("._")  # zarr reserves names starting with "__"; no hidden groups
    return name or "slide"


def child(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name`` for a name from :func:`safe_name` or :func:`slide_id`; raises
    ``ValueError`` when the result would not be directly inside ``folder``."""
    folder = Path(folder)
    path = folder / name
    plain = bool(name) and not name.startswith(".") and not _FORBIDDEN.search(name)
    if not plain or path.parent != folder or path.name != name:
        raise ValueError(f"{name!r}: not a plain file name inside {folder}")
    return path
