"""The zarr patch store written by ``wsi-seg tile`` and read by training.

Layout (zarr v3)::

    patches.zarr/                      root attrs: format, format_version
      <slide id>/                      one group per slide (sanitised stem, deduplicated)
        image   (N, P, P, 3) uint8     RGB patches at the target mpp
        label   (N, P, P)    uint8     class ids (only when a label source was found)
        coords  (N, 2)       int64     level-0 top-left x, y of each patch
        tissue  (N,)         float32   tissue fraction of each patch
        attrs: source, slide_width, slide_height, slide_mpp, mpp, patch, stride,
               class_names, has_labels, codec, format_version, then complete: true LAST

A group without ``complete: true`` is partial (an interrupted run) and is rebuilt on the
next run. Readers use :func:`open_patch_store`, which lists complete groups only.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wsi_seg.errors import InputError, OutputError
from wsi_seg.io.names import child, slide_id

FORMAT = "wsi-seg-patches"
FORMAT_VERSION = 1
DEFAULT_CODEC = "blosc-lz4"
#: Attributes that must match for a complete group to be reused by a rerun.
PARAMETER_ATTRS = ("mpp", "patch", "stride", "class_names", "has_labels")


# ----------------------------------------------------------------------------- codecs


@dataclass(frozen=True)
class Codec:
    """How patch images are compressed. Labels, coords and tissue are always lossless."""

    name: str
    level: int | None = None

    @property
    def lossless(self) -> bool:
        return self.name not in ("jpeg", "webp", "jpegxl")

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level}"

    def array_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``create_array`` (serializer / compressors)."""
        if self.name == "none":
            return {"compressors": None}
        if self.name == "zstd":
            return {"compressors": zarr.codecs.ZstdCodec(level=3 if self.level is None else self.level)}
        if self.name == "blosc-lz4":
            return {
                "compressors": zarr.codecs.BloscCodec(
                    cname="lz4", clevel=5 if self.level is None else self.level, shuffle="shuffle"
                )
            }
        serializer = _image_serializer(self.name, self.level)
        return {"serializer": serializer, "compressors": None}


def parse_codec(text: str) -> Codec:
    """Parse ``NAME[:LEVEL]``: none, zstd[:1-22], blosc-lz4[:1-9], jpeg[:quality], webp[:quality],
    jpegxl[:quality]."""
    name, _, level_text = str(text).strip().lower().partition(":")
    known = ("none", "zstd", "blosc-lz4", "jpeg", "webp", "jpegxl")
    if name not in known:
        raise InputError(f"unknown codec {text!r}; choose one of {', '.join(known)} (optionally NAME:LEVEL)")
    level = None
    if level_text:
        try:
            level = int(level_text)
        except ValueError:
            raise InputError(f"codec {text!r}: level must be an integer") from None
        if name == "none":
            raise InputError(f"codec {text!r}: 'none' takes no level")
    return Codec(name, level)


_IMAGE_CODECS: dict[str, type] = {}


def _image_serializer(name: str, level: int | None):
    """A zarr v3 array->bytes codec wrapping an imagecodecs JPEG/WebP/JPEG-XL codec.

    Chunks of such arrays hold one patch, so each chunk is one image.
    """
    import warnings

    _register_image_codecs()
    cls = _IMAGE_CODECS[name]
    quality = 90 if level is None else level
    # imagecodecs' WebP and JPEG-XL default to lossless; lossy with fast encoder settings
    # (method 0 / effort 1: ~10 ms per 512-px patch instead of 40-360 ms)
    options: dict[str, Any] = {"level": quality}
    if name == "webp":
        options.update(lossless=False, method=0)
    elif name == "jpegxl":
        options.update(lossless=False, effort=1)
    with warnings.catch_warnings():  # "not in the zarr v3 specification": documented in docs/tiling.md
        warnings.simplefilter("ignore")
        return cls(**options)


def _register_image_codecs() -> None:
    if _IMAGE_CODECS:
        return
    import warnings

    import imagecodecs.numcodecs as icn
    from zarr.codecs.numcodecs import _NumcodecsArrayBytesCodec
    from zarr.registry import register_codec

    icn.register_codecs(verbose=False)
    # zarr warns on every (re)construction that numcodecs codecs are outside the v3
    # specification; docs/tiling.md says so once, the warning would repeat per array
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
    for short, codec_id in (("jpeg", "imagecodecs_jpeg"), ("webp", "imagecodecs_webp"), ("jpegxl", "imagecodecs_jpegxl")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls = type(f"_{short.title()}Serializer", (_NumcodecsArrayBytesCodec,), {}, codec_name=codec_id)
        register_codec(f"numcodecs.{codec_id}", cls)
        _IMAGE_CODECS[short] = cls


def _ensure_codecs_for(group: zarr.Group) -> None:
    codec = group.attrs.get("codec")
    if codec and not parse_codec(codec).lossless:
        _register_image_codecs()


# ----------------------------------------------------------------------------- names


def sanitise_slide_id(path: str | Path) -> str:
    """A group name from a slide path: its stem made safe (:func:`wsi_seg.io.names.slide_id`);
    never a path that leads out of the store."""
    return slide_id(path)


# ----------------------------------------------------------------------------- store


@dataclass
class SlidePatches:
    """One complete slide group, for readers."""

    name: str
    group: zarr.Group

    @property
    def image(self) -> zarr.Array:
        return self.group["image"]

    @property
    def label(self) -> zarr.Array | None:
        return self.group["label"] if "label" in self.group.array_keys() else None

    @property
    def coords(self) -> np.ndarray:
        return self.group["coords"][...]

    @property
    def tissue(self) -> np.ndarray:
        return self.group["tissue"][...]

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def __len__(self) -> int:
        return int(self.group["image"].shape[0])


class PatchStore:
    """A patch store on disk: create, list, mark complete, delete slide groups."""

    def __init__(self, path: str | Path, root: zarr.Group):
        self.path = Path(path)
        self.root = root

    # --- opening

    @classmethod
    def create_or_open(cls, path: str | Path) -> "PatchStore":
        """Open a store for writing, creating it when missing; refuse other folders/files."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a zarr patch store (a file)")
        if path.is_dir() and any(path.iterdir()):
            root = _open_root(path, mode="r+")
            return cls(path, root)
        try:  # one metadata write: a store killed while being created is empty, never half-made
            root = zarr.open_group(str(path), mode="w", zarr_format=3,
                                   attributes={"format": FORMAT, "format_version": FORMAT_VERSION})
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the patch store ({exc.strerror or exc})") from None
        return cls(path, root)

    # --- groups

    def group_names(self) -> list[str]:
        return sorted(self.root.group_keys())

    def group(self, name: str) -> zarr.Group:
        return self.root[name]

    def is_complete(self, name: str) -> bool:
        return name in self.group_names() and self.root[name].attrs.get("complete") is True

    def find_group_for(self, source: str | Path) -> str | None:
        """The group whose ``source`` attr is this slide path (resolved), if any."""
        source = str(Path(source).resolve())
        for name in self.group_names():
            if self.root[name].attrs.get("source") == source:
                return name
        return None

    def assign_names(self, sources: Sequence[str | Path]) -> list[str]:
        """Stable group names for slide paths: reuse the group already made for the same
        path, else the sanitised stem, deduplicated with ``-2``, ``-3``... against existing
        groups and the other slides of this call."""
        taken = set(self.group_names())
        names: list[str | None] = [self.find_group_for(source) for source in sources]
        taken.update(name for name in names if name)
        for index, source in enumerate(sources):
            if names[index] is not None:
                continue
            base = sanitise_slide_id(source)
            candidate, suffix = base, 2
            while candidate in taken:
                candidate, suffix = f"{base}-{suffix}", suffix + 1
            taken.add(candidate)
            names[index] = candidate
        return [name for name in names if name is not None]

    def delete_group(self, name: str) -> None:
        if name in self.group_names():
            shutil.rmtree(child(self.path, name), ignore_errors=False)
            self.root = _open_root(self.path, mode="r+")

    def create_slide_group(
        self,
        name: str,
        *,
        coords0: np.ndarray,
        tissue: np.ndarray,
        patch_px: int,
        batch: int,
        with_labels: bool,
        codec: Codec,
        attrs: dict[str, Any],
    ) -> zarr.Group:
        """Create a slide group with arrays of known length; ``coords`` and ``tissue`` are
        written now, ``image``/``label`` by the writers, shard by shard.

        One patch per chunk (a training reader decodes only the patch it wants), ``batch``
        patches per shard (one file), so writers of disjoint batches never share a file.
        """
        count = int(len(coords0))
        child(self.path, name)  # a plain name inside the store, whoever chose it
        group = self.root.create_group(name, overwrite=True)
        group.attrs.update({**attrs, "codec": str(codec), "has_labels": bool(with_labels),
                            "format_version": FORMAT_VERSION, "complete": False})
        batch = max(1, int(batch))
        config = {"write_empty_chunks": True}
        lossless = {"compressors": zarr.codecs.ZstdCodec(level=3)}
        rows = max(count, 1)
        group.create_array("image", shape=(count, patch_px, patch_px, 3), dtype="uint8", fill_value=255,
                           chunks=(1, patch_px, patch_px, 3), shards=(batch, patch_px, patch_px, 3),
                           config=config, **codec.array_kwargs())
        if with_labels:
            group.create_array("label", shape=(count, patch_px, patch_px), dtype="uint8", fill_value=0,
                               chunks=(1, patch_px, patch_px), shards=(batch, patch_px, patch_px),
                               config=config, **lossless)
        coords_array = group.create_array("coords", shape=(count, 2), dtype="int64", fill_value=0,
                                          chunks=(rows, 2), config=config, **lossless)
        tissue_array = group.create_array("tissue", shape=(count,), dtype="float32", fill_value=0.0,
                                          chunks=(rows,), config=config, **lossless)
        if count:
            coords_array[...] = np.asarray(coords0, dtype=np.int64)[:, :2]
            tissue_array[...] = np.asarray(tissue, dtype=np.float32)
        return group

    def mark_complete(self, name: str) -> None:
        """Write the completion flag: the LAST write of a slide group."""
        self.root[name].attrs["complete"] = True


def write_patch_batch(
    store_path: str | Path, name: str, start: int, images: np.ndarray, labels: np.ndarray | None
) -> None:
    """Write a batch of patches at ``start`` into a slide group (called from workers)."""
    group = zarr.open_group(str(child(store_path, name)), mode="r+", zarr_format=3)
    _ensure_codecs_for(group)
    stop = start + len(images)
    group["image"][start:stop] = images
    if labels is not None:
        group["label"][start:stop] = labels


def _open_root(path: Path, mode: str) -> zarr.Group:
    try:
        root = zarr.open_group(str(path), mode=mode, zarr_format=3)  # stores are written as zarr v3 only
    except Exception as exc:  # zarr raises several types for a folder that is no store
        raise OutputError(f"{path}: not a wsi-seg patch store ({type(exc).__name__}: {exc})") from None
    if root.attrs.get("format") != FORMAT:
        raise OutputError(f"{path}: not a wsi-seg patch store (missing format attribute)")
    version = root.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise OutputError(f"{path}: patch store format version {version} is not supported (expected {FORMAT_VERSION})")
    return root


def open_patch_store(path: str | Path) -> list[SlidePatches]:
    """Open a patch store read-only and return its complete slide groups, sorted by name.

    Raises :class:`InputError` naming the path when it is missing or not a patch store.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: patch store not found")
    try:
        root = _open_root(path, mode="r")
    except OutputError as exc:
        raise InputError(str(exc)) from None
    slides = []
    for name in sorted(root.group_keys()):
        group = root[name]
        if group.attrs.get("complete") is True:
            _ensure_codecs_for(group)
            slides.append(SlidePatches(name, group))
    return slides
