"""Print how closely wsi-seg reproduces the ESPNet authors' outputs with their weights.

    python benchmarks/reference_parity.py [REFERENCE_DIR]

REFERENCE_DIR defaults to ../shared/reference/espnet (or $WSI_SEG_REFERENCE_DIR/espnet).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsi_seg.data.transforms import preprocess
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION
from wsi_seg.models.pretrained import ESPNET_CITYSCAPES_NORMALIZATION, convert_weights

FRANKFURT = "frankfurt_000000_000294_leftImg8bit"


def main() -> None:
    default = Path(os.environ.get("WSI_SEG_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared/reference"))
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else default / "espnet"
    torch.set_num_threads(2)
    city = np.asarray(Image.open(ref / "data/ESPNet/test_data" / f"{FRANKFURT}.png").convert("RGB"))
    voc = np.asarray(Image.open(ref / "data/EdgeNets/sample_images/sample5.jpg").convert("RGB"))
    cases = [
        ("ESPNet p2q8 city", "ESPNet/pretrained/decoder/espnet_p_2_q_8.pth", "espnet", 20, {"alpha3": 8},
         preprocess(city, ESPNET_CITYSCAPES_NORMALIZATION, (1024, 512)), f"espnet_p2q8_city_{FRANKFURT}_logits.npz"),
        ("ESPNet-C p2q8 city", "ESPNet/pretrained/encoder/espnet_p_2_q_8.pth", "espnet_c", 20, {"alpha3": 8},
         preprocess(city, ESPNET_CITYSCAPES_NORMALIZATION, (1024, 512)), f"espnet_c_p2q8_city_{FRANKFURT}_logits.npz"),
        ("ESPNetv2 s2.0 city", "EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_city_1024x512.pth", "espnetv2", 20,
         {"scale": 2.0}, preprocess(city, IMAGENET_NORMALIZATION, (1024, 512)),
         f"espnetv2_s2.0_city_{FRANKFURT}_logits.npz"),
        ("ESPNetv2 s2.0 VOC sample5", "EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_pascal_384x384.pth", "espnetv2", 21,
         {"scale": 2.0}, preprocess(voc, IMAGENET_NORMALIZATION, (384, 384)),
         "espnetv2_s2.0_pascal_sample5_test384_logits.npz"),
    ]
    print(f"{'model':<28} {'max |dlogit|':>12} {'argmax agree':>13} {'forward s':>10}")
    for label, rel, arch, classes, hp, x, logits in cases:
        ckpt = convert_weights(ref / "data" / rel, arch=arch, num_classes=classes, hparams=hp)
        model = create_model(arch, classes, **ckpt["model"]["hparams"])
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        start = time.perf_counter()
        with torch.inference_mode():
            ours = model(torch.from_numpy(x)[None])[0].numpy()
        seconds = time.perf_counter() - start
        theirs = np.load(ref / logits)["logits"].astype(np.float32)
        agree = (ours.argmax(0) == theirs.argmax(0)).mean()
        print(f"{label:<28} {np.abs(ours - theirs).max():>12.5f} {100 * agree:>12.4f}% {seconds:>10.2f}")


if __name__ == "__main__":
    main()
