"""ESPNet (Mehta et al., ECCV 2018): ESPNet-A, -B, -C and ESPNet with its light-weight decoder.

The path of the paper's appendix B, as one parametrised encoder:

* ESPNet-A: strided convolution stem, strided ESP down-sampling, alpha_l ESP
  modules per level; the width grows from 64 to 128 through a point-wise
  convolution (CBR) before the level-3 strided ESP; a point-wise classifier.
* ESPNet-B: the width expansion is a concatenation of the previous strided ESP
  output and the last ESP output at each level instead.
* ESPNet-C: ESPNet-B plus input reinforcement (the image average-pooled to each
  level is concatenated in).
* ESPNet: ESPNet-C plus the reduce-upsample-merge decoder back to full resolution.

ESPNet-A/B/C return logits at 1/8 of the input; ESPNet at the input resolution
(H and W must be multiples of 8).
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_seg.models.layers import AvgDown, BNAct, ConvBNAct, ESPBlock

ESPNET_EPS = 1e-3
LEVEL1, LEVEL2, LEVEL3 = 16, 64, 128


class ESPNetEncoder(nn.Module):
    """ESPNet-A/B/C. ``variant`` is "a", "b" or "c"; returns 1/8-resolution logits.

    ``forward_features`` exposes the three level outputs the decoder merges.
    """

    def __init__(self, num_classes: int, *, variant: str = "c", alpha2: int = 2, alpha3: int = 8, K: int = 5,
                 hff: bool = True):
        super().__init__()
        if variant not in ("a", "b", "c"):
            raise ValueError(f"unknown ESPNet encoder variant {variant!r}")
        self.variant = variant
        reinforce = variant == "c"
        concat = variant in ("b", "c")
        image = 3 if reinforce else 0
        esp = dict(k=K, hff=hff, eps=ESPNET_EPS)

        self.stem = ConvBNAct(3, LEVEL1, 3, 2, eps=ESPNET_EPS)
        self.pool1 = AvgDown(1) if reinforce else None
        self.pool2 = AvgDown(2) if reinforce else None
        self.fuse1 = BNAct(LEVEL1 + image, eps=ESPNET_EPS) if reinforce else nn.Identity()
        self.down2 = ESPBlock(LEVEL1 + image, LEVEL2, stride=2, **esp)
        self.stage2 = nn.Sequential(*(ESPBlock(LEVEL2, LEVEL2, **esp) for _ in range(alpha2)))
        if concat:
            self.level2_width = 2 * LEVEL2 + image
            self.fuse2 = BNAct(self.level2_width, eps=ESPNET_EPS)
        else:
            self.level2_width = LEVEL3
            self.fuse2 = ConvBNAct(LEVEL2, LEVEL3, 1, eps=ESPNET_EPS)
        self.down3 = ESPBlock(self.level2_width, LEVEL3, stride=2, **esp)
        self.stage3 = nn.Sequential(*(ESPBlock(LEVEL3, LEVEL3, **esp) for _ in range(alpha3)))
        self.level3_width = 2 * LEVEL3 if concat else LEVEL3
        self.fuse3 = BNAct(self.level3_width, eps=ESPNET_EPS) if concat else nn.Identity()
        self.classifier = nn.Conv2d(self.level3_width, num_classes, 1, bias=False)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Level-1 stem output, level-2 and level-3 fused features."""
        out0 = self.stem(x)
        level1 = self.fuse1(torch.cat([out0, self.pool1(x)], 1)) if self.pool1 is not None else out0
        d1 = self.down2(level1)
        e1 = self.stage2(d1)
        if self.variant == "a":
            level2 = self.fuse2(e1)
        elif self.pool2 is not None:
            level2 = self.fuse2(torch.cat([e1, d1, self.pool2(x)], 1))
        else:
            level2 = self.fuse2(torch.cat([e1, d1], 1))
        d2 = self.down3(level2)
        e2 = self.stage3(d2)
        level3 = e2 if self.variant == "a" else self.fuse3(torch.cat([d2, e2], 1))
        return out0, level2, level3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x)[2])


class ESPNet(nn.Module):
    """ESPNet-C with the reduce-upsample-merge decoder (the authors' released layout).

    Level-3 logits (BN) are upsampled x2 by a 2x2 transposed convolution and
    concatenated after the level-2 features projected to C; BN + PReLU and an ESP
    module (no residual) merge them; a transposed convolution (+BN + PReLU) brings
    them to 1/2, where they are concatenated with the 16-channel stem output and
    fused by a 3x3 CBR; a last transposed convolution gives full-resolution logits.
    """

    def __init__(self, num_classes: int, *, alpha2: int = 2, alpha3: int = 8, K: int = 5, hff: bool = True):
        super().__init__()
        c = num_classes
        self.encoder = ESPNetEncoder(c, variant="c", alpha2=alpha2, alpha3=alpha3, K=K, hff=hff)
        self.level3_norm = nn.BatchNorm2d(c, eps=ESPNET_EPS)
        self.up3 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        self.level2_proj = nn.Conv2d(self.encoder.level2_width, c, 1, bias=False)
        self.merge_norm = BNAct(2 * c, eps=ESPNET_EPS)
        self.merge = ESPBlock(2 * c, c, k=K, residual=False, hff=hff, eps=ESPNET_EPS)
        self.up2 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        self.up2_norm = BNAct(c, eps=ESPNET_EPS)
        self.level1_fuse = ConvBNAct(LEVEL1 + c, c, 3, eps=ESPNET_EPS)
        self.head = nn.ConvTranspose2d(c, c, 2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(f"ESPNet needs H and W divisible by 8, got {tuple(x.shape[2:])}")
        out0, level2, level3 = self.encoder.forward_features(x)
        up3 = self.up3(self.level3_norm(self.encoder.classifier(level3)))
        merged = self.merge(self.merge_norm(torch.cat([self.level2_proj(level2), up3], 1)))
        up2 = self.up2_norm(self.up2(merged))
        return self.head(self.level1_fuse(torch.cat([up2, out0], 1)))
