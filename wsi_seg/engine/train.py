"""The training loop: stages, epochs, validation, checkpoints, resume, DDP.

:func:`train` takes a validated :class:`~wsi_seg.config.TrainConfig` and runs
its stages in order (the ESPNet paper trains ESPNet-C on labels subsampled 8x,
then attaches the decoder and trains the whole ESPNet with the encoder
initialised from stage 1). Every input is checked before anything is written.

Run folder::

    RUN/config.yaml      the resolved configuration
    RUN/metrics.csv      one row per epoch (stage, epoch, step, lr, losses, IoUs, mIoU, time)
    RUN/last.pt          the latest epoch of the latest stage (what --resume reads)
    RUN/best.pt          the final stage's best epoch by validation mIoU
    RUN/<stage>/last.pt, RUN/<stage>/best.pt
    RUN/train.log        the log lines

Kills. Every file is replaced atomically, and an epoch is committed by writing
RUN/last.pt after its metrics row and best.pt: a run killed at any moment resumes
(``--resume``) from the last committed epoch, keeps the metrics rows up to it and
redoes the rest.

Determinism: the model is initialised from ``run.seed``; the sample order of
each epoch and every sample's augmentation seed are drawn from
``(seed, stage, epoch)``, so they do not depend on workers or on a resume.
Distributed runs (``torchrun``) are detected from ``WORLD_SIZE``/``RANK``;
each rank takes every ``world``-th sample, losses and confusion matrices are
summed across ranks, and only rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from wsi_seg.config import TrainConfig, dump_config
from wsi_seg.data.augment import Augmenter
from wsi_seg.data.image_pairs import ImagePairDataset, ImagePairs, open_pairs, pairs_histogram
from wsi_seg.data.patches import PatchDataset, StoreInfo, describe_store, label_statistics, split_slides
from wsi_seg.engine.losses import downsample_labels, enet_class_weights, segmentation_loss
from wsi_seg.engine.sampling import repeat_factors
from wsi_seg.engine.metrics import ConfusionMatrix
from wsi_seg.errors import CheckpointError, ConfigError, InputError, OutputError, WsiSegError
from wsi_seg.io.atomic import temp_file, write_text
from wsi_seg.models.checkpoint import (IMAGENET_NORMALIZATION, load_matching, make_checkpoint, read_checkpoint,
                                       save_checkpoint)
from wsi_seg.models.pretrained import ESPNET_CITYSCAPES_NORMALIZATION
from wsi_seg.models.registry import INPUT_MULTIPLE, OUTPUT_STRIDE, create_model

__all__ = ["train", "TrainResult", "StageResult", "EpochSampler", "transfer_weights"]

log = logging.getLogger("wsi_seg.train")


# ----------------------------------------------------------------------------- results


@dataclass
class StageResult:
    name: str
    model: str
    epochs: int
    steps: int
    best_miou: float
    best_epoch: int
    directory: Path


@dataclass
class TrainResult:
    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    stopped_by_time: bool = False

    @property
    def best_miou(self) -> float:
        return self.stages[-1].best_miou if self.stages else float("nan")

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "best.pt"


# ----------------------------------------------------------------------------- distributed


class _Dist:
    """The process group of a torchrun launch (or a single process)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.started = True

    def stop(self) -> None:
        if self.started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.started = False

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any_(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        if not self.enabled:
            return bool(flag)
        return bool(self.sum_(torch.tensor([float(flag)])).item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def _device(name: str, dist: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {name!r} requested but CUDA is not available")
        if dist.enabled:
            torch.cuda.set_device(dist.local_rank)
            return torch.device("cuda", dist.local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None


# ----------------------------------------------------------------------------- sampling


class EpochSampler(Sampler):
    """Sample order fixed by ``(seed, stage, epoch)``; yields ``(index, sample_seed)``
    pairs when shuffling (the seed drives that sample's augmentation) and plain
    indices otherwise. With ``world`` ranks each takes every ``world``-th
    position, the list padded cyclically so that all ranks get as many samples
    (like ``DistributedSampler``); ``pad=False`` for validation, where each
    sample must count once. With ``weights`` (shuffling only) an epoch draws
    ``size`` samples with replacement, each with probability proportional to its
    weight (rare-class oversampling, :mod:`wsi_seg.engine.sampling`)."""

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 pad: bool = True, weights: np.ndarray | None = None):
        self.size, self.shuffle, self.seed = int(size), shuffle, int(seed)
        self.rank, self.world, self.pad = rank, world, pad
        self.stage, self.epoch = 0, 0
        self.probabilities = None
        if weights is not None:
            weights = np.asarray(weights, np.float64)
            if weights.shape != (self.size,) or not np.all(weights >= 0) or not weights.sum() > 0:
                raise ValueError(f"weights must be {self.size} non-negative numbers, not all zero")
            self.probabilities = weights / weights.sum()

    def set_epoch(self, stage: int, epoch: int) -> None:
        self.stage, self.epoch = int(stage), int(epoch)

    def _order(self) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.shuffle:
            order, seeds = np.arange(self.size), None
        else:
            rng = np.random.default_rng([self.seed, self.stage, self.epoch])
            if self.probabilities is None:
                order = rng.permutation(self.size)
            else:
                order = rng.choice(self.size, size=self.size, replace=True, p=self.probabilities)
            seeds = rng.integers(0, 2**63 - 1, self.size)
        if self.pad and self.world > 1 and self.size:
            total = math.ceil(self.size / self.world) * self.world
            take = np.resize(np.arange(self.size), total)
            order = order[take]
            seeds = seeds[take] if seeds is not None else None
        return order, seeds

    def __iter__(self) -> Iterator:
        order, seeds = self._order()
        positions = range(self.rank, len(order), self.world)
        if seeds is None:
            return iter([int(order[p]) for p in positions])
        return iter([(int(order[p]), int(seeds[p])) for p in positions])

    def __len__(self) -> int:
        total = math.ceil(self.size / self.world) * self.world if (self.pad and self.world > 1) else self.size
        return len(range(self.rank, total, self.world))


# ----------------------------------------------------------------------------- weights


def transfer_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Load what fits of ``state_dict`` into ``model``; an ESPNet-C state dict goes
    into an ESPNet's ``encoder`` and an ESPNet's encoder into an ESPNet-C.
    Returns ``(tensors loaded, model keys left at their initialisation)``."""
    own = set(model.state_dict())
    has_encoder = hasattr(model, "encoder")
    if has_encoder and not any(k.startswith("encoder.") for k in state_dict):
        state_dict = {f"encoder.{k}": v for k, v in state_dict.items()}
    elif not has_encoder and any(k.startswith("encoder.") for k in state_dict) and not any(
            k.startswith("encoder.") for k in own):
        state_dict = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    reinitialised = load_matching(model, state_dict)
    loaded = sum(1 for k in own if k not in reinitialised and not k.endswith("num_batches_tracked"))
    return loaded, reinitialised


# ----------------------------------------------------------------------------- RNG state


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": version, "internal": list(internal), "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- preparation


NORMALIZATIONS = {"imagenet": IMAGENET_NORMALIZATION, "espnet-cityscapes": ESPNET_CITYSCAPES_NORMALIZATION}


@dataclass
class _Plan:
    config: TrainConfig
    run_dir: Path
    store: StoreInfo | None  # data.kind patches
    train_slides: list[str]
    val_slides: list[str]
    class_weights: torch.Tensor | None
    normalization: dict[str, Any]
    crop: int
    init: dict[str, Any] | None
    init_path: Path | None
    resume: dict[str, Any] | None
    images: tuple[ImagePairs, ImagePairs | None] | None = None  # data.kind cityscapes / voc
    sample_weights: np.ndarray | None = None  # per training patch (data.oversample), None = uniform

    def datasets(self, augment: Augmenter) -> tuple[Any, Any]:
        """The training dataset (augmented) and the validation dataset (or None)."""
        if self.images is not None:
            train_pairs, val_pairs = self.images
            size = self.config.data.size
            train_ds = ImagePairDataset(train_pairs, normalization=self.normalization, size=size, transform=augment)
            val_ds = ImagePairDataset(val_pairs, normalization=self.normalization, size=size) \
                if val_pairs is not None else None
            return train_ds, val_ds
        cache = self.config.data.cache_mb
        train_ds = PatchDataset(self.store.path, self.train_slides, normalization=self.normalization,
                                transform=augment, cache_mb=cache)
        val_ds = PatchDataset(self.store.path, self.val_slides, normalization=self.normalization,
                              cache_mb=cache) if self.val_slides else None
        return train_ds, val_ds

    def describe(self) -> str:
        if self.images is not None:
            train_pairs, val_pairs = self.images
            size = "x".join(map(str, self.config.data.size))
            return (f"{train_pairs.dataset} {self.config.data.root}: {len(train_pairs)} training image(s) "
                    f"({train_pairs.split}), {len(val_pairs) if val_pairs else 0} validation image(s), "
                    f"resized to {size}, crop {self.crop}")
        store = self.store
        return (f"store {store.path}: {len(self.train_slides)} training slide(s) "
                f"({sum(store.slides[s] for s in self.train_slides)} patches), {len(self.val_slides)} validation "
                f"slide(s) ({sum(store.slides[s] for s in self.val_slides)} patches), mpp {store.mpp:g}, "
                f"patch {store.patch}, crop {self.crop}")


def _check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise InputError(f"--resume: {last} not found (nothing to resume)")
        ckpt = read_checkpoint(last)
        if "train_state" not in ckpt:
            raise CheckpointError(f"{last}: holds no training state, cannot resume")
        return ckpt
    if last.exists() and not overwrite:
        raise OutputError(f"{run_dir}: already holds a training run (last.pt); pass --resume to continue it "
                          f"or --overwrite to start again")
    return None


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{run_dir}: output folder is not writable ({exc.strerror or exc})") from None


def _prepare_images(config: TrainConfig) -> tuple[tuple[ImagePairs, ImagePairs | None], int, np.ndarray | None]:
    """Splits, crop and (for ENet weights) class pixel counts of a cityscapes/voc run."""
    data, num_classes = config.data, len(config.classes)
    if data.root is None:
        raise ConfigError(f"data.root: no {data.kind} dataset root given (set it in the config or pass --data ROOT)")
    if data.size is None:
        raise ConfigError(f"data.size: give the [width, height] {data.kind} images are resized to")

    def open_split(split: str) -> ImagePairs:
        return open_pairs(data.kind, data.root, split, num_classes, ignore_index=config.optim.ignore_index,
                          sbd_root=data.sbd_root if split == data.train_split else None)

    train_pairs = open_split(data.train_split)
    val_pairs = open_split(data.val_split) if data.val_split else None
    crop = data.crop or min(data.size)
    for i in range(len(config.stages)):
        multiple = INPUT_MULTIPLE[config.stage_model(i)]
        for what, size in (("data.crop", crop), ("data.size", data.size[0]), ("data.size", data.size[1])):
            if size % multiple:
                raise ConfigError(f"{what}: {size} px is not a multiple of {multiple}, "
                                  f"which {config.stage_model(i)} needs")
    counts = None
    if config.optim.class_weights == "enet":
        counts = pairs_histogram(train_pairs, num_classes, config.optim.ignore_index)
        if counts.sum() == 0:
            raise InputError(f"{data.root}: the {data.train_split} labels hold no labelled pixels")
    return (train_pairs, val_pairs), crop, counts


def _prepare(config: TrainConfig, *, resume: bool, init: Path | None, overwrite: bool) -> _Plan:
    if config.data.kind != "patches":
        images, crop, counts = _prepare_images(config)
        return _finish_plan(config, None, [], [], crop, counts, resume=resume, init=init, overwrite=overwrite,
                            images=images)
    if config.data.store is None:
        raise ConfigError("data.store: no patch store given (set it in the config or pass --data STORE.zarr)")
    store = describe_store(config.data.store)
    num_classes = len(config.classes)
    if store.class_names is not None and len(store.class_names) != num_classes:
        raise ConfigError(f"classes: the config lists {num_classes} classes but {store.path} was tiled with "
                          f"{len(store.class_names)} ({', '.join(store.class_names)})")
    if store.class_names is not None and list(store.class_names) != config.class_names:
        log.warning("class names differ between the config and %s (%s); the config's names are used",
                    store.path, ", ".join(store.class_names))
    train_slides, val_slides = split_slides(store.names, val_fraction=config.data.val_fraction,
                                            seed=config.data.split_seed, train=config.data.train_slides,
                                            val=config.data.val_slides)
    if not train_slides:
        raise InputError(f"{store.path}: no slide left for training")
    unlabelled = [s for s in train_slides + val_slides if not store.labelled[s]]
    if unlabelled:
        raise InputError(f"{store.path}: slide(s) {', '.join(unlabelled)} have no labels (tile with --masks)")
    if sum(store.slides[s] for s in train_slides) == 0:
        raise InputError(f"{store.path}: the training slides hold no patches")
    crop = config.data.crop or store.patch
    for i in range(len(config.stages)):
        multiple = INPUT_MULTIPLE[config.stage_model(i)]
        for what, size in (("data.crop", crop), (f"the store's patch size ({store.path})", store.patch)):
            if size % multiple:
                raise ConfigError(f"{what}: {size} px is not a multiple of {multiple}, "
                                  f"which {config.stage_model(i)} needs")
    if crop > store.patch:
        raise ConfigError(f"data.crop: {crop} px is larger than the store's patches ({store.patch} px)")
    counts, sample_weights = None, None
    if config.optim.class_weights == "enet" or config.data.oversample > 0:
        histogram, presence = label_statistics(store.path, train_slides, num_classes, config.optim.ignore_index)
        if histogram.sum() == 0:
            raise InputError(f"{store.path}: the training slides hold no labelled pixels")
        counts = histogram if config.optim.class_weights == "enet" else None
        if config.data.oversample > 0:
            sample_weights = repeat_factors(presence, config.data.oversample)
    return _finish_plan(config, store, train_slides, val_slides, crop, counts, resume=resume, init=init,
                        overwrite=overwrite, sample_weights=sample_weights)


def _finish_plan(config: TrainConfig, store: StoreInfo | None, train_slides: list[str], val_slides: list[str],
                 crop: int, counts: np.ndarray | None, *, resume: bool, init: Path | None, overwrite: bool,
                 images: tuple[ImagePairs, ImagePairs | None] | None = None,
                 sample_weights: np.ndarray | None = None) -> _Plan:
    run_dir = Path(config.output.dir)
    resume_ckpt = _check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    init_ckpt, normalization = None, dict(NORMALIZATIONS[config.data.normalization])
    if resume_ckpt is not None:
        normalization = dict(resume_ckpt["normalization"])
    elif init is not None:
        init_ckpt = read_checkpoint(init)
        normalization = dict(init_ckpt["normalization"])
    weights = enet_class_weights(counts, config.optim.enet_c) if counts is not None else None
    _check_writable(run_dir)
    return _Plan(config, run_dir, store, train_slides, val_slides, weights, normalization, crop,
                 init_ckpt, Path(init) if init is not None else None, resume_ckpt, images, sample_weights)


# ----------------------------------------------------------------------------- outputs


class _Outputs:
    """Rank 0's writers: metrics.csv, train.log, TensorBoard (when importable)."""

    def __init__(self, plan: _Plan, enabled: bool, resume_point: tuple[int, int] | None):
        self.enabled = enabled
        self.run_dir = plan.run_dir
        names = [n.replace(" ", "_") for n in plan.config.class_names]
        self.columns = (["stage", "epoch", "step", "lr", "train_loss", "val_loss"]
                        + [f"iou_{n}" for n in names] + ["miou", "pixel_accuracy", "time_s"])
        self.tb = None
        self.handler = None
        if not enabled:
            return
        path = self.run_dir / "metrics.csv"
        kept = []
        if resume_point is not None and path.is_file():  # keep rows up to the resumed checkpoint
            order = {plan.config.stage_name(i): i for i in range(len(plan.config.stages))}
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("time_s") in (None, "") or not str(row.get("epoch", "")).isdigit():
                        continue  # a row cut short by a kill: its epoch is redone
                    if (order.get(row["stage"], len(order)), int(row["epoch"])) <= resume_point:
                        kept.append({key: row.get(key, "") for key in self.columns})
        tmp = temp_file(path)
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, self.columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)
        self.handler = logging.FileHandler(self.run_dir / "train.log")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self.handler)
        if plan.config.output.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: no event files (metrics.csv has every value)")
            else:
                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def row(self, values: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.csv", "a", newline="") as fh:
            csv.DictWriter(fh, self.columns).writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()})
        if self.tb is not None:
            for key, value in values.items():
                if key not in ("stage", "epoch", "step") and isinstance(value, float) and not math.isnan(value):
                    self.tb.add_scalar(f"{values['stage']}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()


# ----------------------------------------------------------------------------- the loop


class _StageRunner:
    def __init__(self, plan: _Plan, dist: _Dist, device: torch.device, outputs: _Outputs, progress: bool):
        self.plan, self.dist, self.device, self.outputs, self.progress = plan, dist, device, outputs, progress
        self.config = plan.config
        self.num_classes = len(self.config.classes)
        # NHWC activations: ~18 % faster training steps for ESPNet on the CPU (docs/training.md)
        self.memory_format = torch.channels_last if self.config.run.channels_last else torch.contiguous_format

    # --- checkpoints

    def _checkpoint(self, stage: int, model: nn.Module, train_state: dict | None, hparams: dict) -> dict:
        return make_checkpoint(
            self.config.stage_model(stage), self.num_classes, hparams,
            {key: value.contiguous() for key, value in model.state_dict().items()},
            class_names=self.config.class_names, class_colors=self.config.class_colors(),
            normalization=self.plan.normalization, mpp=self.plan.store.mpp if self.plan.store else None,
            patch_size=self.plan.store.patch if self.plan.store else None,
            source=f"wsi-seg train: {self.plan.run_dir} {self.config.stage_name(stage)}", train_state=train_state)

    def _loaders(self, stage: int, train_ds, val_ds, train_sampler, val_sampler):
        workers = self.config.data.workers
        common = {"num_workers": workers, "pin_memory": self.device.type == "cuda"}
        if workers:  # persistent: each worker keeps its open store and chunk cache across epochs
            common["persistent_workers"] = True
            common["multiprocessing_context"] = "fork" if os.name == "posix" else None
        train_loader = DataLoader(train_ds, batch_size=self.config.data.batch_size, sampler=train_sampler,
                                  drop_last=False, **common)
        val_loader = DataLoader(val_ds, batch_size=self.config.data.batch_size, sampler=val_sampler,
                                **common) if val_ds is not None else None
        return train_loader, val_loader

    def run(self, stage: int, state: dict | None, deadline: float | None) -> tuple[StageResult, bool]:
        cfg, plan, dist, device = self.config, self.plan, self.dist, self.device
        name, model_name = cfg.stage_name(stage), cfg.stage_model(stage)
        epochs = cfg.stages[stage].epochs
        hparams = cfg.stage_hparams(stage)
        stage_dir = plan.run_dir / name
        if dist.main:
            stage_dir.mkdir(parents=True, exist_ok=True)
        stride = OUTPUT_STRIDE[model_name]

        torch.manual_seed(cfg.run.seed * 1000 + stage)
        model = create_model(model_name, self.num_classes, **hparams)
        if state is not None:
            model.load_state_dict(state["state_dict"])
        elif stage == 0 and plan.init is not None:
            loaded, reinit = transfer_weights(model, plan.init["state_dict"])
            log.info("init: loaded %d tensors from %s; re-initialised %d: %s", loaded, plan.init_path,
                     len(reinit), ", ".join(reinit) or "none")
        elif stage > 0:
            previous = plan.run_dir / cfg.stage_name(stage - 1)
            source = previous / "best.pt" if (previous / "best.pt").is_file() else previous / "last.pt"
            loaded, reinit = transfer_weights(model, read_checkpoint(source)["state_dict"])
            log.info("%s: %s initialised from %s (%d tensors); fresh: %d tensors", name, model_name, source,
                     loaded, len(reinit))
        model.to(device, memory_format=self.memory_format)
        net = model
        if dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        lr = cfg.stages[stage].lr or cfg.optim.lr
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.optim.lr_step_epochs, cfg.optim.lr_gamma)
        use_amp = cfg.optim.amp and device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        weights = plan.class_weights.to(device) if plan.class_weights is not None else None
        criterion = segmentation_loss(weights, cfg.optim.ignore_index)

        start_epoch, step, best, best_epoch = 0, 0, float("-inf"), 0
        if state is not None:
            ts = state["train_state"]
            optimizer.load_state_dict(ts["optimizer"])
            scheduler.load_state_dict(ts["scheduler"])
            if "scaler" in ts and scaler.is_enabled():
                scaler.load_state_dict(ts["scaler"])
            start_epoch, step = int(ts["epoch"]), int(ts["step"])
            best, best_epoch = float(ts["best_miou"]), int(ts["best_epoch"])
            _set_rng_state(ts["rng"])

        augment = Augmenter(cfg.augment, plan.crop, ignore_index=cfg.optim.ignore_index)
        train_ds, val_ds = plan.datasets(augment)
        train_sampler = EpochSampler(len(train_ds), shuffle=True, seed=cfg.run.seed, rank=dist.rank,
                                     world=dist.world, weights=plan.sample_weights)
        val_sampler = EpochSampler(len(val_ds), shuffle=False, rank=dist.rank, world=dist.world, pad=False) \
            if val_ds is not None else None
        train_loader, val_loader = self._loaders(stage, train_ds, val_ds, train_sampler, val_sampler)

        stopped_by_time = False
        epochs_done = start_epoch
        epoch_times: list[float] = []
        for epoch in range(start_epoch, epochs):
            if dist.any_(deadline is not None and bool(epoch_times)
                         and time.monotonic() + np.mean(epoch_times[-3:]) > deadline):  # all ranks stop together
                stopped_by_time = True
                log.info("%s: stopping after %d epoch(s): the time budget (run.max_minutes) is spent", name, epoch)
                break
            started = time.monotonic()
            train_sampler.set_epoch(stage, epoch)
            lr_now = optimizer.param_groups[0]["lr"]
            train_loss, step = self._train_epoch(net, train_loader, optimizer, scaler, criterion, stride,
                                                 amp_dtype if use_amp else None, stage, epoch, epochs, step)
            train_seconds = time.monotonic() - started
            scheduler.step()
            val_loss, cm = self._validate(model, val_loader, criterion, stride, amp_dtype if use_amp else None)
            miou = cm.miou() if cm is not None else float("nan")
            elapsed = time.monotonic() - started
            epoch_times.append(elapsed)
            epochs_done = epoch + 1
            improved = (cm is None) or (not math.isnan(miou) and miou > best)
            if improved:
                best, best_epoch = (miou if cm is not None else best), epoch + 1
            if dist.main:
                train_state = {"stage": stage, "stage_name": name, "epoch": epoch + 1, "step": step,
                               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "best_miou": float(best), "best_epoch": best_epoch, "rng": _rng_state(),
                               "seed": cfg.run.seed, "world_size": dist.world,
                               "metrics": {"train_loss": train_loss, "val_loss": val_loss, "miou": miou}}
                if scaler.is_enabled():
                    train_state["scaler"] = scaler.state_dict()
                # RUN/last.pt is the commit point of an epoch, written last: a run killed before it
                # resumes from the previous epoch, whose later metrics row and best.pt it rewrites
                iou = cm.iou() if cm is not None else np.full(self.num_classes, np.nan)
                row = {"stage": name, "epoch": epoch + 1, "step": step, "lr": lr_now, "train_loss": train_loss,
                       "val_loss": val_loss}
                row.update({col: float(v) for col, v in zip(self.outputs.columns[6:6 + self.num_classes], iou)})
                row.update({"miou": miou, "pixel_accuracy": cm.pixel_accuracy() if cm is not None else float("nan"),
                            "time_s": round(elapsed, 3)})
                self.outputs.row(row, step)
                if improved:
                    best_ckpt = self._checkpoint(stage, model, None, hparams)
                    best_ckpt["metrics"] = {"miou": miou, "epoch": epoch + 1, "stage": name}
                    save_checkpoint(best_ckpt, stage_dir / "best.pt")
                    if stage == len(cfg.stages) - 1:
                        save_checkpoint(best_ckpt, plan.run_dir / "best.pt")
                ckpt = self._checkpoint(stage, model, train_state, hparams)
                save_checkpoint(ckpt, stage_dir / "last.pt")
                save_checkpoint(ckpt, plan.run_dir / "last.pt")
                rate = len(train_sampler) * dist.world / max(train_seconds, 1e-9)
                log.info("%s epoch %d/%d  step %d  lr %.2e  loss %.4f  val_loss %.4f  mIoU %.4f  %.1f patch/s  "
                         "%.1fs%s", name, epoch + 1, epochs, step, lr_now, train_loss, val_loss, miou, rate,
                         elapsed, "  *best" if improved and cm is not None else "")
            dist.barrier()
        return StageResult(name, model_name, epochs_done, step, best, best_epoch, stage_dir), stopped_by_time

    def _forward(self, net, images, amp_dtype):
        if amp_dtype is None:
            return net(images)
        with torch.autocast("cuda", dtype=amp_dtype):
            return net(images)

    def _train_epoch(self, net, loader, optimizer, scaler, criterion, stride, amp_dtype, stage, epoch, epochs,
                     step) -> tuple[float, int]:
        from tqdm.auto import tqdm

        net.train()
        dist, device = self.dist, self.device
        loss_sum = torch.zeros(2, dtype=torch.float64)
        bar = tqdm(total=len(loader), desc=f"{self.config.stage_name(stage)} {epoch + 1}/{epochs}", unit="batch",
                   leave=False, disable=not (self.progress and dist.main), dynamic_ncols=True)
        started, seen = time.monotonic(), 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(device, non_blocking=True)
            target = downsample_labels(labels, stride)
            logits = self._forward(net, images, amp_dtype)
            loss = criterion(logits.float(), target)
            value = loss.detach().float().reshape(1).cpu()
            if dist.enabled:
                value = dist.sum_(value) / dist.world
            if not torch.isfinite(value).all():
                bar.close()
                raise WsiSegError(
                    f"{self.config.stage_name(stage)} epoch {epoch + 1} step {step + 1}: the training loss is "
                    f"{value.item()}; training stopped, the last good checkpoint is {self.plan.run_dir / 'last.pt'} "
                    f"(lower optim.lr or check the labels)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if self.config.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), self.config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_sum += torch.tensor([value.item(), 1.0], dtype=torch.float64)
            seen += images.shape[0] * dist.world
            bar.update(1)
            bar.set_postfix(loss=f"{value.item():.4f}", img_s=f"{seen / max(time.monotonic() - started, 1e-9):.1f}")
        bar.close()
        return float(loss_sum[0] / max(loss_sum[1].item(), 1.0)), step

    @torch.no_grad()
    def _validate(self, model, loader, criterion, stride, amp_dtype) -> tuple[float, ConfusionMatrix | None]:
        if loader is None:
            return float("nan"), None
        model.eval()
        cm = ConfusionMatrix(self.num_classes, ignore_index=self.config.optim.ignore_index)
        sums = torch.zeros(2, dtype=torch.float64)
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(self.device, non_blocking=True)
            logits = self._forward(model, images, amp_dtype).float()
            loss = criterion(logits, downsample_labels(labels, stride))
            sums += torch.tensor([loss.item() * images.shape[0], images.shape[0]], dtype=torch.float64)
            if stride != 1:
                logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            cm.update(logits.argmax(1), labels)
        model.train()
        if self.dist.enabled:
            matrix = self.dist.sum_(torch.from_numpy(cm.matrix.copy()))
            cm.matrix[...] = matrix.numpy()
            sums = self.dist.sum_(sums)
        return float(sums[0] / max(sums[1].item(), 1.0)), cm


def train(config: TrainConfig, *, resume: bool = False, init: str | Path | None = None, overwrite: bool = False,
          progress: bool = True) -> TrainResult:
    """Run every stage of ``config``; see the module docstring for the run folder.

    ``resume`` continues from ``RUN/last.pt`` exactly (model, optimiser, scheduler,
    epoch, step, RNG states). ``init`` is a wsi-seg checkpoint whose fitting tensors
    initialise the first stage (its normalisation is adopted). ``overwrite`` allows
    starting again in a folder that holds a run. Raises :mod:`wsi_seg.errors`
    exceptions for bad input before writing anything.
    """
    if config.run.processes > 1 and "RANK" not in os.environ:
        from wsi_seg.engine.launch import train_in_processes

        return train_in_processes(config, config.run.processes, resume=resume, init=init, overwrite=overwrite,
                                  progress=progress)
    dist = _Dist()
    device = _device(config.run.device, dist)
    threads = torch.get_num_threads()
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    # As the learning rate decays, gradients and Adam's moments reach denormal floats, which
    # the CPU handles in microcode: late epochs ran ~1.5x slower. Flushed to zero they cost
    # nothing (docs/training.md).
    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(config, dist, device, resume=resume, init=init, overwrite=overwrite, progress=progress)
    finally:
        torch.set_num_threads(threads)
        if flushing:
            torch.set_flush_denormal(False)


def _train(config: TrainConfig, dist: _Dist, device: torch.device, *, resume: bool, init, overwrite: bool,
           progress: bool) -> TrainResult:
    if resume and init is not None:
        raise ConfigError("--init and --resume exclude each other (a resumed run already has its weights)")
    plan = _prepare(config, resume=resume, init=init, overwrite=overwrite)
    dist.start(device)
    start_stage, state, resume_point = 0, None, None
    if plan.resume is not None:
        ts = plan.resume["train_state"]
        start_stage = int(ts["stage"])
        resume_point = (start_stage, int(ts["epoch"]))
        if ts.get("world_size", 1) != dist.world:
            log.warning("resuming a %s-process run with %s process(es)", ts.get("world_size", 1), dist.world)
        if int(ts["epoch"]) >= config.stages[start_stage].epochs:
            start_stage += 1  # that stage was complete
        else:
            state = plan.resume
        if start_stage >= len(config.stages):
            log.info("%s: every stage is already complete", plan.run_dir)
    outputs = _Outputs(plan, dist.main, resume_point)
    try:
        if dist.main:
            write_text(plan.run_dir / "config.yaml", dump_config(config))
            log.info("training on %s (%d process(es)); %s", device, dist.world, plan.describe())
            if plan.class_weights is not None:
                log.info("class weights (ENet): %s", " ".join(f"{w:.2f}" for w in plan.class_weights.tolist()))
            if plan.sample_weights is not None:
                factors = plan.sample_weights
                log.info("rare-class oversampling (t = %g): patch repeat factors %.2f to %.2f, %d of %d patches boosted",
                         config.data.oversample, factors.min(), factors.max(), int((factors > 1).sum()), factors.size)
        result = TrainResult(plan.run_dir)
        runner = _StageRunner(plan, dist, device, outputs, progress)
        budget_end = time.monotonic() + 60 * config.run.max_minutes if config.run.max_minutes else None
        for stage in range(start_stage, len(config.stages)):
            deadline = None
            if budget_end is not None:  # split what is left of the budget by the stages' epochs
                left = [config.stages[i].epochs for i in range(stage, len(config.stages))]
                share = left[0] / max(sum(left), 1)
                deadline = time.monotonic() + share * max(budget_end - time.monotonic(), 0.0)
            stage_result, stopped = runner.run(stage, state if stage == start_stage else None, deadline)
            result.stages.append(stage_result)
            result.stopped_by_time |= stopped
        if dist.main and result.stages and not (plan.run_dir / "best.pt").is_file() \
                and (plan.run_dir / "last.pt").is_file():
            final = read_checkpoint(plan.run_dir / "last.pt")
            final.pop("train_state", None)
            save_checkpoint(final, plan.run_dir / "best.pt")
        return result
    finally:
        outputs.close()
        dist.stop()
