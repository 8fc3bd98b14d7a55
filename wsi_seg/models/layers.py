"""Building blocks shared by the ESPNet family.

Conventions: every convolution is bias-free unless stated; "BN + PReLU" means a
BatchNorm2d followed by a per-channel PReLU. ESPNet uses BatchNorm eps 1e-3,
ESPNetv2 the PyTorch default 1e-5, so every block takes ``eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """k x k convolution, BatchNorm, PReLU (``act=False`` drops the PReLU)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, *, groups: int = 1,
                 eps: float = 1e-5, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=eps)
        if act:
            self.act = nn.PReLU(c_out)


class BNAct(nn.Sequential):
    """BatchNorm followed by PReLU."""

    def __init__(self, channels: int, *, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        self.act = nn.PReLU(channels)


def branch_widths(n_out: int, k: int) -> tuple[int, int]:
    """Channel split of an ESP module (paper, footnote 4).

    Returns ``(d, d1)``: every branch has ``d = floor(N / K)`` channels except the
    first, which absorbs the remainder, ``d1 = N - (K - 1) * d``.
    """
    if k < 1 or n_out < k:
        raise ValueError(f"cannot split {n_out} channels into {k} branches")
    d = n_out // k
    return d, n_out - (k - 1) * d


def esp_dilations(k: int) -> list[int]:
    """Dilation rates 2^(k-1) of the K parallel branches, k = 1..K."""
    return [2 ** i for i in range(k)]


def esp_receptive_field(k: int, n: int = 3) -> int:
    """Side of the effective receptive field of one ESP module, (n - 1) 2^(K-1) + 1."""
    return (n - 1) * 2 ** (k - 1) + 1


class ESPBlock(nn.Module):
    """Efficient spatial pyramid module (Mehta et al., ECCV 2018, Fig. 1b).

    Reduce: a point-wise convolution M -> d (a strided 3x3 one when ``stride=2``);
    split/transform: K dilated 3x3 convolutions at dilation 2^(k-1); hierarchical
    feature fusion: the outputs of branches 2..K are summed cumulatively before the
    concatenation (the first, finest branch is concatenated as it is); merge:
    concatenation back to N channels, residual addition when ``residual`` and the
    shapes match, then BN + PReLU.

    ``hff=False`` concatenates the raw branch outputs (the paper's ablation).
    """

    def __init__(self, c_in: int, c_out: int, *, k: int = 5, stride: int = 1, residual: bool = True,
                 hff: bool = True, eps: float = 1e-3):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("ESP stride must be 1 or 2")
        d, d1 = branch_widths(c_out, k)
        self.stride = stride
        self.residual = residual and stride == 1 and c_in == c_out
        self.hff = hff
        reduce_k = 3 if stride == 2 else 1
        self.reduce = nn.Conv2d(c_in, d, reduce_k, stride, (reduce_k - 1) // 2, bias=False)
        self.branches = nn.ModuleList(
            nn.Conv2d(d, d1 if i == 0 else d, 3, 1, dilation, dilation=dilation, bias=False)
            for i, dilation in enumerate(esp_dilations(k))
        )
        self.norm = nn.BatchNorm2d(c_out, eps=eps)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs = [branch(reduced) for branch in self.branches]
        if self.hff:
            for i in range(2, len(outputs)):
                outputs[i] = outputs[i] + outputs[i - 1]
        y = torch.cat(outputs, 1)
        if self.residual:
            y = y + x
        return self.act(self.norm(y))


class AvgDown(nn.Module):
    """The input image average-pooled ``times`` times (3x3, stride 2, padding 1)."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = F.avg_pool2d(x, 3, 2, 1)
        return x


# ---------------------------------------------------------------------------- ESPNetv2 blocks


def eesp_dilations(k: int, r_lim: int) -> list[int]:
    """Branch dilations of an EESP unit: nominal kernels 3, 5, 7, ... capped at r_lim
    (falling back to 3), sorted, each mapped to the dilation of a 3x3 kernel."""
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= r_lim else 3 for i in range(k))
    return [(s - 1) // 2 for s in sizes]


class EESP(nn.Module):
    """Extremely efficient spatial pyramid unit of ESPNetv2.

    Grouped point-wise reduce (BN + PReLU), K depth-wise dilated 3x3 branches
    (carrying the stride), hierarchical fusion starting at the first branch, BN +
    PReLU on the concatenation, grouped point-wise expansion (BN), residual when
    the shapes match, PReLU. With ``stride=2`` and ``pre_activation_out`` the unit
    returns the expansion output directly (used inside :class:`EESPDown`).
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, k: int = 4, r_lim: int = 7,
                 pre_activation_out: bool = False):
        super().__init__()
        if c_out % k:
            raise ValueError(f"EESP output width {c_out} is not divisible by K={k}")
        n = c_out // k
        self.stride = stride
        self.pre_activation_out = pre_activation_out and stride == 2
        self.reduce = ConvBNAct(c_in, n, 1, groups=k)
        self.branches = nn.ModuleList(
            nn.Conv2d(n, n, 3, stride, d, dilation=d, groups=n, bias=False) for d in eesp_dilations(k, r_lim)
        )
        self.merge_norm = BNAct(c_out)
        self.expand = ConvBNAct(c_out, c_out, 1, groups=k, act=False)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs = [self.branches[0](reduced)]
        for branch in self.branches[1:]:
            outputs.append(branch(reduced) + outputs[-1])
        y = self.expand(self.merge_norm(torch.cat(outputs, 1)))
        if self.pre_activation_out:
            return y
        if y.shape == x.shape:
            y = y + x
        return self.act(y)


class EESPDown(nn.Module):
    """Strided EESP with an average-pooled shortcut and input reinforcement.

    Output = PReLU(concat[avgpool(x), EESP_s2(x)] + proj(image pooled to the same size)).
    """

    def __init__(self, c_in: int, c_out: int, *, k: int = 4, r_lim: int = 9):
        super().__init__()
        self.eesp = EESP(c_in, c_out - c_in, stride=2, k=k, r_lim=r_lim, pre_activation_out=True)
        self.reinforce = nn.Sequential(ConvBNAct(3, 3, 3), ConvBNAct(3, c_out, 1, act=False))
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.avg_pool2d(x, 3, 2, 1), self.eesp(x)], 1)
        while image.shape[2] != y.shape[2]:
            image = F.avg_pool2d(image, 3, 2, 1)
        return self.act(y + self.reinforce(image))


class GatedPointwise(nn.Module):
    """ESPNetv2 decoder's efficient point-wise merge: a grouped 3x3 CBR expansion
    multiplied by a global-context sigmoid gate."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False), nn.Sigmoid())
        self.expand = ConvBNAct(c_in, c_out, 3, groups=math.gcd(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(x) * self.gate(x)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class PyramidPool(nn.Module):
    """ESPNetv2 decoder's efficient pyramid pooling.

    Project to P channels, filter a depth-wise 3x3 at scales (2, 1.5, 1, 0.5, 0.1)
    of the map (upsampled bilinearly or adaptive-average-pooled, at least 5 px),
    bring each back to the map size, BN + PReLU on the concatenation, shuffle so
    the five versions of each channel are adjacent, a grouped 3x3 CBR back to P,
    and a point-wise projection to the output width (with a bias when there is no
    trailing BN + PReLU).
    """

    scales = (2.0, 1.5, 1.0, 0.5, 0.1)

    def __init__(self, c_in: int, proj: int, c_out: int, *, last_bn_act: bool = True):
        super().__init__()
        n = len(self.scales)
        self.project = ConvBNAct(c_in, proj, 1)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in self.scales)
        self.merge_norm = BNAct(n * proj)
        self.merge = ConvBNAct(n * proj, proj, 3, groups=proj)
        self.out = nn.Conv2d(proj, c_out, 1, bias=not last_bn_act)
        self.out_norm = BNAct(c_out) if last_bn_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        h, w = x.shape[2:]
        pyramid = []
        for scale, stage in zip(self.scales, self.stages):
            size = (max(math.ceil(h * scale), 5), max(math.ceil(w * scale), 5))
            if scale > 1:
                y = F.adaptive_avg_pool2d(stage(_resize(x, size)), (h, w))
            elif scale < 1:
                y = _resize(stage(F.adaptive_avg_pool2d(x, size)), (h, w))
            else:
                y = stage(x)
            pyramid.append(y)
        y = self.merge_norm(torch.cat(pyramid, 1))
        b, c = y.shape[:2]
        y = y.view(b, len(self.scales), c // len(self.scales), h, w).transpose(1, 2).reshape(b, c, h, w)
        y = self.out(self.merge(y))
        return self.out_norm(y) if self.out_norm is not None else y
