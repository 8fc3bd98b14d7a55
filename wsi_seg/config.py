"""Typed configuration of a training run, parsed once at the edge.

A YAML file (``configs/biopsy.yaml``) is validated into :class:`TrainConfig`;
unknown keys and wrong types are refused with one line naming the file and the
dotted key (``configs/x.yaml: data.val_fraction: Input should be less than 1``).
Files are bounded before they are parsed (:data:`MAX_CONFIG_BYTES`, and
:data:`MAX_CONFIG_VALUES` once YAML aliases are expanded).
Command-line options override single values before validation
(:func:`load_train_config`), so the library only ever sees a validated object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wsi_seg.errors import ConfigError

__all__ = [
    "AugmentConfig", "ClassConfig", "DataConfig", "ModelConfig", "OptimConfig", "OutputConfig",
    "StageConfig", "TrainConfig", "RunConfig", "load_train_config", "parse_train_config", "dump_config",
    "read_class_list", "read_yaml_file", "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """The final network and the hyper-parameters shared by every stage."""

    name: str = "espnet"
    hparams: dict[str, Any] = Field(default_factory=dict)


class ClassConfig(_Strict):
    name: str = Field(min_length=1)
    color: tuple[int, int, int] | None = None

    @field_validator("color")
    @classmethod
    def _rgb(cls, value):
        if value is not None and any(not 0 <= c <= 255 for c in value):
            raise ValueError("colour components must be in 0..255")
        return value


class DataConfig(_Strict):
    """Where the training images come from and how they are split and batched.

    ``kind: patches`` (default) reads a zarr patch store (``store``, split by
    slide); ``cityscapes`` and ``voc`` read a dataset in its official layout
    under ``root`` (splits ``train_split``/``val_split``), resized to ``size``.
    """

    kind: Literal["patches", "cityscapes", "voc"] = "patches"
    store: Path | None = None
    root: Path | None = Field(None, description="dataset root (kind cityscapes or voc)")
    sbd_root: Path | None = Field(None, description="SBD release adding training images (kind voc)")
    train_split: str = "train"
    val_split: str | None = "val"
    size: tuple[int, int] | None = Field(None, description="(width, height) images are resized to (cityscapes, voc)")
    normalization: Literal["imagenet", "espnet-cityscapes"] = Field(
        "imagenet", description="input statistics of a fresh run (an --init or resumed checkpoint's win)")
    train_slides: list[str] | None = None
    val_slides: list[str] | None = None
    val_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    split_seed: int = 0
    crop: int | None = Field(None, gt=0, description="training crop in pixels (default: the store's patch size)")
    batch_size: int = Field(8, gt=0)
    workers: int = Field(0, ge=0)
    cache_mb: float = Field(512, ge=0, description="decoded zarr chunks kept per process (MB)")
    oversample: float = Field(0.0, ge=0.0, le=1.0, description=(
        "repeat-factor sampling threshold t (kind patches): patches holding a class found in fewer than a "
        "fraction t of the training patches are drawn more often (sqrt(t / f)); 0 = uniform"))

    @field_validator("size")
    @classmethod
    def _size(cls, value):
        if value is not None and min(value) <= 0:
            raise ValueError("size must be [width, height] with positive values")
        return value


class OptimConfig(_Strict):
    """Adam, step decay and the class-weighted cross-entropy (the ESPNet paper's recipe)."""

    optimizer: Literal["adam"] = "adam"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    lr_step_epochs: int = Field(100, gt=0)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    class_weights: Literal["enet", "none"] = "enet"
    enet_c: float = Field(1.02, gt=1.0)
    ignore_index: int = Field(255, ge=0, le=255)
    amp: bool = True
    grad_clip: float | None = Field(None, gt=0)


class AugmentConfig(_Strict):
    """Joint image/label augmentation; labels are always resampled nearest."""

    enabled: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    stain_scale: float = Field(0.05, ge=0, lt=1, description="HED channel factor drawn in 1 +- this")
    stain_shift: float = Field(0.02, ge=0, description="HED channel offset drawn in +- this (optical density)")
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)

    @field_validator("scale")
    @classmethod
    def _scale(cls, value):
        lo, hi = value
        if not 0 < lo <= hi:
            raise ValueError("scale must be [low, high] with 0 < low <= high")
        return value


class StageConfig(_Strict):
    """One training stage. ``model`` defaults to the final model's name."""

    name: str | None = None
    model: str | None = None
    epochs: int = Field(100, ge=0)
    lr: float | None = Field(None, gt=0)
    hparams: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Strict):
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, gt=0, description="torch CPU threads per process (default: torch's choice)")
    max_minutes: float | None = Field(None, gt=0)
    channels_last: bool = Field(True, description="train with NHWC (channels-last) tensors")
    processes: int = Field(1, ge=1, description="data-parallel training processes on this machine (gloo; "
                                                "ignored under torchrun)")


class OutputConfig(_Strict):
    dir: Path = Path("runs/biopsy")
    tensorboard: bool = True


class TrainConfig(_Strict):
    """A complete training recipe."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    classes: list[ClassConfig] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig()], min_length=1)
    run: RunConfig = Field(default_factory=RunConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check(self):
        from wsi_seg.models.registry import list_models, resolve_hparams

        known = list_models()
        if self.model.name not in known:
            raise ValueError(f"model.name: unknown model {self.model.name!r}; known: {', '.join(known)}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("classes: class names must be unique")
        for i, stage in enumerate(self.stages):
            model = stage.model or self.model.name
            if model not in known:
                raise ValueError(f"stages.{i}.model: unknown model {model!r}; known: {', '.join(known)}")
            try:
                resolve_hparams(model, **{**self.model.hparams, **stage.hparams})
            except ValueError as exc:
                raise ValueError(f"stages.{i}: {exc}") from None
        last = self.stages[-1].model or self.model.name
        if last != self.model.name:
            raise ValueError(f"stages.{len(self.stages) - 1}.model: the last stage trains the final model "
                             f"({self.model.name!r}), not {last!r}")
        expected = {"cityscapes": (19, 20), "voc": (21,)}.get(self.data.kind)
        if expected is not None and len(self.classes) not in expected:
            raise ValueError(f"classes: data.kind {self.data.kind} needs "
                             f"{' or '.join(map(str, expected))} classes, the config lists {len(self.classes)}")
        if self.data.train_slides is not None and self.data.val_slides is not None:
            both = sorted(set(self.data.train_slides) & set(self.data.val_slides))
            if both:
                raise ValueError(f"data: slide(s) {', '.join(both)} in both train_slides and val_slides")
        return self

    # convenience views (no logic beyond naming)
    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def class_colors(self) -> list[list[int]] | None:
        if all(c.color is None for c in self.classes):
            return None
        from wsi_seg.models.checkpoint import default_colors

        fallback = default_colors(len(self.classes))
        return [list(c.color) if c.color is not None else fallback[i] for i, c in enumerate(self.classes)]

    def stage_name(self, index: int) -> str:
        return self.stages[index].name or f"stage{index + 1}"

    def stage_model(self, index: int) -> str:
        return self.stages[index].model or self.model.name

    def stage_hparams(self, index: int) -> dict[str, Any]:
        return {**self.model.hparams, **self.stages[index].hparams}


def _format_error(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (+{len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    where = f"{loc}: " if loc and not msg.startswith(loc) else ""
    return f"{source}: {where}{msg}{more}"


def parse_train_config(raw: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Validate a mapping (from YAML) into a :class:`TrainConfig`; errors name ``source`` and the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return TrainConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None


#: Largest configuration file read (a recipe or class list is a few kilobytes).
MAX_CONFIG_BYTES = 1024 * 1024
#: Most values (mapping keys, list items, scalars) a configuration may hold once its YAML
#: aliases are expanded: aliases can make a small file describe an enormous document.
MAX_CONFIG_VALUES = 100_000


def _count_values(node: Any, memo: dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded, counted without expanding them."""
    key = id(node)
    if key in memo:
        return memo[key]
    if isinstance(node, dict):
        count = 1 + sum(_count_values(k, memo) + _count_values(v, memo) for k, v in node.items())
    elif isinstance(node, (list, tuple)):
        count = 1 + sum(_count_values(item, memo) for item in node)
    else:
        return 1
    memo[key] = count
    return count


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """The YAML document of a small trusted-format file, bounded: at most
    :data:`MAX_CONFIG_BYTES` bytes and :data:`MAX_CONFIG_VALUES` values after alias
    expansion. Raises :class:`ConfigError` naming the file (``what`` names its role)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a {what}")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes, larger than the limit of {MAX_CONFIG_BYTES:,} bytes "
                          f"for a {what}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{path}: not valid YAML{where}" + (f" ({problem})" if problem else "")) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    try:
        values = _count_values(document, {})
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply or refers to itself (YAML aliases)") from None
    if values > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path}: {values:,} values once YAML aliases are expanded, more than the limit of "
                          f"{MAX_CONFIG_VALUES:,}")
    return document


def _read_yaml(path: Path) -> dict[str, Any]:
    document = read_yaml_file(path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return document


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """Class names from a YAML file: a list, or ``classes:`` holding names or ``{name: ...}``
    mappings (a training recipe's class list). Raises :class:`ConfigError` naming the file."""
    path = Path(path)
    document = read_yaml_file(path, "class list")
    if isinstance(document, dict):
        document = document.get("classes")
    if not isinstance(document, list) or not document:
        raise ConfigError(f"{path}: expected a list of class names (or 'classes:' holding one)")
    names = []
    for entry in document:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: class entry {entry!r} has no name")
        names.append(name.strip())
    return tuple(names)


def load_train_config(path: str | Path, *, store: str | Path | None = None, out: str | Path | None = None,
                      epochs: int | None = None, seed: int | None = None, device: str | None = None,
                      workers: int | None = None, batch_size: int | None = None,
                      max_minutes: float | None = None, threads: int | None = None,
                      processes: int | None = None) -> TrainConfig:
    """Read a YAML recipe and apply command-line overrides; ``epochs`` sets every stage's epochs."""
    path = Path(path)
    raw = _read_yaml(path)

    def section(name: str) -> dict:
        value = raw.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping")
        raw[name] = value
        return value

    if store is not None:  # --data: the patch store, or the dataset root of cityscapes/voc
        data = section("data")
        data["store" if data.get("kind", "patches") == "patches" else "root"] = str(store)
    if workers is not None:
        section("data")["workers"] = workers
    if batch_size is not None:
        section("data")["batch_size"] = batch_size
    if out is not None:
        section("output")["dir"] = str(out)
    if seed is not None:
        section("run")["seed"] = seed
    if device is not None:
        section("run")["device"] = device
    if max_minutes is not None:
        section("run")["max_minutes"] = max_minutes
    if threads is not None:
        section("run")["threads"] = threads
    if processes is not None:
        section("run")["processes"] = processes
    if epochs is not None:
        stages = raw.get("stages") or [{}]
        if not isinstance(stages, list):
            raise ConfigError(f"{path}: stages: expected a list")
        raw["stages"] = [{**s, "epochs": epochs} if isinstance(s, dict) else s for s in stages]
    return parse_train_config(raw, str(path))


def dump_config(config: TrainConfig) -> str:
    """The resolved configuration as YAML (what a run writes to ``config.yaml``)."""
    import yaml

    data = config.model_dump(mode="json")
    for cls in data["classes"]:
        if cls.get("color") is not None:
            cls["color"] = list(cls["color"])
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
