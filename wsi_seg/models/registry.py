"""Model registry: short names -> builders taking (num_classes, **hparams).

Variants are data, not subclasses: ESPNet-A/B/C share one encoder class and
differ by arguments, ESPNetv2 widths are a ``scale`` argument.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from wsi_seg.models.espnet import ESPNet, ESPNetEncoder
from wsi_seg.models.espnetv2 import ESPNetv2
from wsi_seg.models.shapes import INPUT_MULTIPLE, OUTPUT_STRIDE  # noqa: F401 (re-exported)

_ESPNET_HPARAMS = {"K": 5, "alpha2": 2, "alpha3": 8, "hff": True}
_ESPNETV2_HPARAMS = {"scale": 2.0, "K": 4}


def _encoder(variant: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **hparams) -> nn.Module:
        return ESPNetEncoder(num_classes, variant=variant, **hparams)

    return build


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "espnet_a": (_encoder("a"), _ESPNET_HPARAMS),
    "espnet_b": (_encoder("b"), _ESPNET_HPARAMS),
    "espnet_c": (_encoder("c"), _ESPNET_HPARAMS),
    "espnet": (ESPNet, _ESPNET_HPARAMS),
    "espnetv2": (ESPNetv2, _ESPNETV2_HPARAMS),
}



def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(_REGISTRY)


def default_hparams(name: str) -> dict:
    """The hyper-parameters a model is built with when none are given."""
    return dict(_lookup(name)[1])


def resolve_hparams(name: str, **hparams) -> dict:
    """Defaults overridden by ``hparams``; unknown names are refused."""
    defaults = default_hparams(name)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"model {name!r} has no hyper-parameter(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **hparams}


def create_model(name: str, num_classes: int, **hparams) -> nn.Module:
    """Build a registered model with freshly initialised weights.

    ``hparams``: ESPNet family ``K`` (branches, 5), ``alpha2`` (2), ``alpha3`` (8),
    ``hff`` (True); ESPNetv2 ``scale`` in {0.5, 1.0, 1.25, 1.5, 2.0} (2.0) and ``K`` (4).
    """
    if num_classes < 1:
        raise ValueError("num_classes must be positive")
    builder, _ = _lookup(name)
    return builder(num_classes, **resolve_hparams(name, **hparams))


def _lookup(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}") from None
