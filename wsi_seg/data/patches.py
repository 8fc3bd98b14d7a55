"""A torch Dataset over the zarr patch store, and slide-level splits.

The dataset holds the store path, slide names and integer indices only; the
zarr groups are opened lazily in whichever process reads (DataLoader workers
included), never pickled. Items are addressed by an integer or by an
``(index, seed)`` pair: the seed drives that sample's augmentation, so the same
pair always gives the same tensors, in any worker and after a resume.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from wsi_seg.data.transforms import normalize
from wsi_seg.errors import InputError
from wsi_seg.io.store import open_patch_store

__all__ = ["PatchDataset", "StoreInfo", "describe_store", "split_slides", "label_histogram", "label_statistics"]

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class StoreInfo:
    """What training needs to know about a store: slides, sizes, mpp, patch, class names."""

    def __init__(self, path: Path, slides: dict[str, int], labelled: dict[str, bool], mpp: float, patch: int,
                 class_names: list[str] | None):
        self.path = path
        self.slides = slides  # name -> patch count
        self.labelled = labelled
        self.mpp = mpp
        self.patch = patch
        self.class_names = class_names

    @property
    def names(self) -> list[str]:
        return list(self.slides)


def describe_store(path: str | Path) -> StoreInfo:
    """Open a store and check it is usable for training: at least one complete slide group,
    one mpp and one patch size across slides. Raises :class:`InputError` naming the store."""
    path = Path(path)
    groups = open_patch_store(path)
    if not groups:
        raise InputError(f"{path}: the patch store holds no complete slide group (run `wsi-seg tile` first)")
    slides, labelled, mpps, patches, names = {}, {}, set(), set(), None
    for g in groups:
        attrs = g.attrs
        slides[g.name] = len(g)
        labelled[g.name] = g.label is not None
        mpps.add(float(attrs.get("mpp", 0.0)))
        patches.add(int(g.image.shape[1]))
        names = names or attrs.get("class_names")
    if len(mpps) != 1 or len(patches) != 1:
        raise InputError(f"{path}: slide groups differ in mpp ({sorted(mpps)}) or patch size ({sorted(patches)})")
    if sum(slides.values()) == 0:
        raise InputError(f"{path}: the patch store holds no patches")
    return StoreInfo(path, slides, labelled, mpps.pop(), patches.pop(), list(names) if names else None)


def split_slides(names: Sequence[str], *, val_fraction: float = 0.25, seed: int = 0,
                 train: Sequence[str] | None = None, val: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Split slide names (never patches) into training and validation sets.

    Explicit lists win: ``train`` and/or ``val`` name slides (the other set is the
    rest); otherwise ``round(val_fraction * n)`` slides (at least one when the
    fraction is positive and there are two or more slides) go to validation, chosen
    with ``seed``. Unknown names raise :class:`InputError`.
    """
    names = sorted(names)
    for label, chosen in (("train_slides", train), ("val_slides", val)):
        unknown = sorted(set(chosen or ()) - set(names))
        if unknown:
            raise InputError(f"data.{label}: slide(s) {', '.join(unknown)} not in the store "
                             f"(it holds {', '.join(names)})")
    if train is not None or val is not None:
        val_set = set(val) if val is not None else set(names) - set(train)
        train_set = set(train) if train is not None else set(names) - val_set
        overlap = sorted(train_set & val_set)
        if overlap:
            raise InputError(f"data: slide(s) {', '.join(overlap)} in both the training and validation sets")
        return sorted(train_set), sorted(val_set)
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    val_set = {names[i] for i in order[:n_val]}
    return [n for n in names if n not in val_set], [n for n in names if n in val_set]


def label_histogram(store: str | Path, slides: Sequence[str], num_classes: int,
                    ignore_index: int = 255) -> np.ndarray:
    """Pixel counts per class over the labels of ``slides`` (``ignore_index`` skipped);
    a class id outside ``[0, num_classes)`` raises :class:`InputError`."""
    return label_statistics(store, slides, num_classes, ignore_index)[0]


def label_statistics(store: str | Path, slides: Sequence[str], num_classes: int,
                     ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, presence)`` in one pass over the labels of ``slides``: pixel counts
    per class (``ignore_index`` skipped) and an (N, num_classes) boolean array of the
    classes each patch contains, patches in :class:`PatchDataset` order. A class id
    outside ``[0, num_classes)`` raises :class:`InputError`."""
    groups = {g.name: g for g in open_patch_store(store)}
    counts = np.zeros(256, np.int64)
    presence = []
    for name in slides:
        label = groups[name].label
        if label is None:
            raise InputError(f"{store}: slide {name} has no labels")
        step = max(1, label.chunks[0])
        for start in range(0, label.shape[0], step):
            block = np.asarray(label[start:start + step]).reshape(min(step, label.shape[0] - start), -1)
            per_patch = np.zeros((block.shape[0], 256), np.int64)
            for row, values in enumerate(block):
                per_patch[row] = np.bincount(values, minlength=256)
            counts += per_patch.sum(axis=0)
            presence.append(per_patch[:, :num_classes] > 0)
    counts[ignore_index] = 0
    bad = np.flatnonzero(counts[num_classes:])
    if bad.size:
        raise InputError(f"{store}: labels hold class id {int(bad[0]) + num_classes}, but the config has "
                         f"{num_classes} classes (ids 0..{num_classes - 1})")
    present = np.concatenate(presence, axis=0) if presence else np.zeros((0, num_classes), bool)
    if ignore_index < num_classes:
        present[:, ignore_index] = False
    return counts[:num_classes], present


class PatchDataset(Dataset):
    """Patches of some slides of a store as ``(image float32 (3, S, S), label int64 (S, S))``.

    ``transform(image_uint8_hwc, label_hw, rng)`` augments jointly (training);
    without it the stored patch is returned unchanged (validation). ``normalization``
    is a checkpoint normalisation dict (see :func:`wsi_seg.data.transforms.normalize`).

    Reading one patch decodes its whole zarr chunk, so each process keeps decoded
    chunks in a least-recently-used cache of at most ``cache_mb`` megabytes (0: none).
    """

    def __init__(self, store: str | Path, slides: Sequence[str], *, normalization: Mapping[str, Any],
                 transform: Transform | None = None, require_labels: bool = True, cache_mb: float = 512):
        self.store = Path(store)
        self.slides = list(slides)
        self.normalization = dict(normalization)
        self.transform = transform
        groups = {g.name: g for g in open_patch_store(self.store)}
        missing = [s for s in self.slides if s not in groups]
        if missing:
            raise InputError(f"{self.store}: slide(s) {', '.join(missing)} not in the store")
        if require_labels:
            unlabelled = [s for s in self.slides if groups[s].label is None]
            if unlabelled:
                raise InputError(f"{self.store}: slide(s) {', '.join(unlabelled)} have no labels "
                                 f"(tile them with --masks)")
        sizes = [len(groups[s]) for s in self.slides]
        self._slide_of = np.repeat(np.arange(len(self.slides)), sizes).astype(np.int64)
        self._index_in = np.concatenate([np.arange(n) for n in sizes]).astype(np.int64) if sizes else np.zeros(0, np.int64)
        self.cache_bytes = int(cache_mb * 2**20)
        self._groups = None
        self._pid = None
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return int(self._slide_of.size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_groups"], state["_pid"] = None, None  # handles never cross a pickle
        state["_cache"], state["_cached"] = OrderedDict(), 0
        return state

    def _arrays(self):
        if self._groups is None or self._pid != os.getpid():
            groups = {g.name: g for g in open_patch_store(self.store)}
            self._groups = [(groups[s].image, groups[s].label) for s in self.slides]
            self._pid = os.getpid()
            self._cache, self._cached = OrderedDict(), 0
        return self._groups

    def _chunk(self, slide: int, which: int, array, row: int) -> np.ndarray:
        """The decoded chunk of ``array`` holding ``row`` and the row's offset in it."""
        rows = int(array.chunks[0])
        key = (slide, which, row // rows)
        block = self._cache.get(key)
        if block is None:
            start = (row // rows) * rows
            block = np.asarray(array[start:start + rows])
            if self.cache_bytes and block.nbytes <= self.cache_bytes:
                self._cache[key] = block
                self._cached += block.nbytes
                while self._cached > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached -= dropped.nbytes
        else:
            self._cache.move_to_end(key)
        return block[row % rows]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The stored uint8 patch and label of item ``index``."""
        slide = int(self._slide_of[index])
        image_array, label_array = self._arrays()[slide]
        row = int(self._index_in[index])
        if not self.cache_bytes:
            image = np.asarray(image_array[row])
            label = np.asarray(label_array[row]) if label_array is not None else None
            return image, label
        image = self._chunk(slide, 0, image_array, row).copy()
        label = self._chunk(slide, 1, label_array, row).copy() if label_array is not None else None
        return image, label

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not 0 <= int(index) < len(self):
            raise IndexError(index)
        image, label = self.read(int(index))
        if label is None:
            label = np.full(image.shape[:2], 255, np.uint8)
        if self.transform is not None:
            rng = np.random.default_rng(seed if seed is not None else None)
            image, label = self.transform(image, label, rng)
        return (torch.from_numpy(normalize(np.ascontiguousarray(image), self.normalization)),
                torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)))
