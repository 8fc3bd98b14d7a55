"""Inference-time model rewrites that keep outputs (up to float rounding).

:func:`fold_batchnorm` folds a BatchNorm into the convolution right before it
where that is exact: inside an ``nn.Sequential`` (e.g. ``ConvBNAct``), a
``Conv2d`` directly followed by a ``BatchNorm2d`` feeds that BatchNorm and
nothing else, so ``bn(conv(x)) == conv'(x)`` with
``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
BatchNorms applied after a concatenation or a residual sum (the ESP blocks'
``norm``, ``BNAct`` after ``torch.cat``) are left as they are.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A new eval-mode copy of ``model`` with every Conv2d -> BatchNorm2d pair of an
    ``nn.Sequential`` folded into one biased Conv2d (the BatchNorm becomes Identity).
    ``model`` itself is not changed."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_mean is not None):
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm2d layers a model still has."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
