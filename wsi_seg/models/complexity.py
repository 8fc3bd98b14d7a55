"""Model complexity: parameters, size, multiply-adds and ESP receptive fields."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsi_seg.models.layers import ESPBlock, EESP, eesp_dilations, esp_receptive_field


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def size_mb(params: int) -> float:
    """fp32 size in decimal MB, params * 4 / 1e6, as the ESPNet paper reports it."""
    return params * 4 / 1e6


def count_macs(model: nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """Multiply-accumulates of all (transposed) convolutions for an input of
    (height, width): BN, PReLU, pooling and interpolation are not counted."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def deconv_hook(module: nn.ConvTranspose2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw

    handles = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(batch, 3, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


@dataclass(frozen=True)
class LevelField:
    module: str        # qualified name of the module
    stride: int        # feature-map stride relative to the input
    field_px: int      # side of one module's effective receptive field, in feature pixels
    field_input_px: int  # the same in input pixels (field_px * stride)


def esp_receptive_fields(model: nn.Module, input_size: tuple[int, int] = (256, 256)) -> list[LevelField]:
    """The effective receptive field of each ESP / EESP module, per spatial level.

    One field per distinct (module type, stride) is reported: modules repeated
    at a level share it.
    """
    strides: dict[str, int] = {}
    height = input_size[0]

    def hook(name):
        def record(module, inputs, output):
            strides[name] = height // output.shape[2]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (ESPBlock, EESP))]
    try:
        with torch.inference_mode():
            was = model.training
            model.eval()
            model(torch.zeros(1, 3, *input_size))
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    fields, seen = [], set()
    for name, m in model.named_modules():
        if name not in strides:
            continue
        if isinstance(m, ESPBlock):
            side = esp_receptive_field(len(m.branches))
        else:
            side = 2 * max(b.dilation[0] for b in m.branches) + 1
        key = (type(m).__name__, strides[name], side)
        if key in seen:
            continue
        seen.add(key)
        fields.append(LevelField(name, strides[name], side, side * strides[name]))
    return fields


__all__ = ["count_parameters", "size_mb", "count_macs", "esp_receptive_fields", "LevelField", "eesp_dilations"]
