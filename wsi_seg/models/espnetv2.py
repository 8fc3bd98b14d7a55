"""ESPNetv2 segmentation network (Mehta et al., CVPR 2019).

Encoder: the EESPNet classification network up to level 4 (strided stem, three
strided EESP units with input reinforcement, 3 EESP units at level 3 and 7 at
level 4, K = 4 branches, receptive-field limits 13/11/9/7). Decoder: efficient
pyramid pooling at 1/16, then three times: upsample x2, add the gated point-wise
projection of the encoder level, BN + PReLU, pyramid pooling. Logits are
bilinearly resized (align_corners=True) to the input size; H and W must be
multiples of 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsi_seg.models.layers import EESP, BNAct, ConvBNAct, EESPDown, GatedPointwise, PyramidPool

# Output widths of levels 1-4 for each width scale s.
ESPNETV2_WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (16, 32, 64, 128),
    1.0: (32, 64, 128, 256),
    1.25: (32, 80, 160, 320),
    1.5: (32, 96, 192, 384),
    2.0: (32, 128, 256, 512),
}
DECODER_WIDTHS = (64, 48, 32)
LEVEL3_UNITS, LEVEL4_UNITS = 3, 7
R_LIMITS = (13, 11, 9, 7)


class ESPNetv2(nn.Module):
    def __init__(self, num_classes: int, *, scale: float = 2.0, K: int = 4):
        super().__init__()
        if float(scale) not in ESPNETV2_WIDTHS:
            raise ValueError(f"ESPNetv2 scale must be one of {sorted(ESPNETV2_WIDTHS)}, got {scale}")
        c0, c1, c2, c3 = ESPNETV2_WIDTHS[float(scale)]
        r2, r3, r3u, r4u = R_LIMITS[0], R_LIMITS[1], R_LIMITS[2], R_LIMITS[3]
        self.stem = ConvBNAct(3, c0, 3, 2)
        self.down2 = EESPDown(c0, c1, k=K, r_lim=r2)
        self.down3 = EESPDown(c1, c2, k=K, r_lim=r3)
        self.stage3 = nn.Sequential(*(EESP(c2, c2, k=K, r_lim=r3u) for _ in range(LEVEL3_UNITS)))
        self.down4 = EESPDown(c2, c3, k=K, r_lim=r3u)
        self.stage4 = nn.Sequential(*(EESP(c3, c3, k=K, r_lim=r4u) for _ in range(LEVEL4_UNITS)))

        d1, d2, d3 = DECODER_WIDTHS
        proj = min(num_classes // 2, 16)
        self.pyramid4 = PyramidPool(c3, proj, d1)
        self.skip3 = GatedPointwise(c2, d1)
        self.norm3 = BNAct(d1)
        self.pyramid3 = PyramidPool(d1, proj, d2)
        self.skip2 = GatedPointwise(c1, d2)
        self.norm2 = BNAct(d2)
        self.pyramid2 = PyramidPool(d2, proj, d3)
        self.skip1 = GatedPointwise(c0, d3)
        self.norm1 = BNAct(d3)
        self.pyramid1 = PyramidPool(d3, proj, num_classes, last_bn_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"ESPNetv2 needs H and W divisible by 16, got {tuple(x.shape[2:])}")
        l1 = self.stem(x)
        l2 = self.down2(l1, x)
        l3 = self.stage3(self.down3(l2, x))
        l4 = self.stage4(self.down4(l3, x))

        y = self.pyramid4(l4)
        y = self.pyramid3(self.norm3(_up2(y) + self.skip3(l3)))
        y = self.pyramid2(self.norm2(_up2(y) + self.skip2(l2)))
        y = self.pyramid1(self.norm1(_up2(y) + self.skip1(l1)))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=True)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
