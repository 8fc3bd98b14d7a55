"""`wsi-seg predict` against MONAI's sliding_window_inference on the same slide and model.

    pip install -e .[bench]        # MONAI (not a dependency of wsi-seg)
    python benchmarks/predict_vs_monai.py [--size 12000x10000] [--tile 1024] [--overlap 128] [--batch-size 2]
                                          [--threads 2]

One synthetic slide at 0.5 um/px (seed 0, cached), the untrained ESPNet checkpoint at
1 um/px with its BatchNorms folded (the same weights and the same per-tile computation
on both sides: normalisation, forward, bilinear upsampling, softmax), the CPU with
``--threads`` torch threads. Each side runs in its own process, timed from its start
to its exit (interpreter start-up and imports included on both sides); the peak RSS
is that process's ru_maxrss. Both sides read the slide from disk, detect tissue, run
the model and blend overlapping tiles, and write the level-0 label mask as a pyramidal
TIFF (non-tissue = class 0):

1. wsi-seg: the command ``wsi-seg predict SLIDE -o MASK --model CKPT --tile T --overlap O
   --batch-size B`` (tiles read through OpenSlide while the model runs, only tiles with
   tissue, streamed stitching, the mask written band by band); then the same with the
   checkpoint exported by ``wsi-seg export-onnx`` and ``--backend onnx`` (onnxruntime,
   no PyTorch in the process);
2. MONAI: the whole slide read into RAM at the model's mpp as the float32
   (1, 3, H, W) tensor ``sliding_window_inference`` takes (read in row bands, so no
   more than the tensor itself is held), ``sliding_window_inference(image, (T, T), B,
   model, overlap=O/T, mode="gaussian")`` over every window (MONAI has no notion of
   tissue), its probability map argmax-ed band by band into uint8 labels, masked by
   the same tissue detection, resampled (nearest) to level 0 and written with the same
   TIFF writer.

Targets: wall-time ratio wsi-seg / MONAI < 1, peak RSS ratio <= 0.25. The masks differ
where the blending windows differ (gaussian against wsi-seg's ramp, different tile
grids); their agreement is printed as a check that both did the same job.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

MONAI_CHILD = """
import json, sys
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.io.slide import Slide
from wsi_seg.io.tiff import write_pyramidal_tiff
from wsi_seg.tissue import detect_tissue

svs, out, ckpt, tile, overlap, batch = {svs!r}, {out!r}, {ckpt!r}, {tile}, {overlap}, {batch}
predictor = TorchPredictor.from_checkpoint(ckpt, device="cpu")
model_mpp = predictor.meta["mpp"]
colors = np.asarray(predictor.meta["classes"]["colors"], np.uint8)
slide = Slide(svs)
width0, height0 = slide.dimensions
width, height = slide.size_at(model_mpp)
scale = model_mpp / slide.mpp

image = torch.empty((1, 3, height, width), dtype=torch.float32)  # the whole slide, as MONAI takes it
for y in range(0, height, 1024):
    rows = min(1024, height - y)
    band = slide.read(0, int(round(y * scale)), width, rows, model_mpp)
    image[0, :, y:y + rows] = torch.from_numpy(band).permute(2, 0, 1)
tissue = detect_tissue(slide, mpp=8.0)

windows = 0
def run(batch_images):
    global windows
    windows += batch_images.shape[0]
    tiles = batch_images.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    return torch.from_numpy(predictor(tiles))

probabilities = sliding_window_inference(image, (tile, tile), batch, run, overlap=overlap / tile, mode="gaussian")
del image
labels = np.empty((height, width), np.uint8)
for y in range(0, height, 512):
    labels[y:y + 512] = probabilities[0, :, y:y + 512].argmax(0).numpy()
del probabilities

def nearest(n_out, out_mpp, src_mpp, n_src):
    return np.clip(np.floor((np.arange(n_out) + 0.5) * (out_mpp / src_mpp)).astype(np.int64), 0, n_src - 1)

cols = nearest(width0, slide.mpp, model_mpp, width)
rows_all = nearest(height0, slide.mpp, model_mpp, height)
tissue_cols = nearest(width0, slide.mpp, tissue.mpp, tissue.mask.shape[1])
tissue_rows = nearest(height0, slide.mpp, tissue.mpp, tissue.mask.shape[0])

def bands():
    for y in range(0, height0, 512):
        stop = min(height0, y + 512)
        band = np.take(labels[rows_all[y:stop]], cols, axis=1)
        band *= np.take(tissue.mask[tissue_rows[y:stop]], tissue_cols, axis=1)
        yield band

write_pyramidal_tiff(out, width=width0, height=height0, bands=bands(), band_height=512, mpp=slide.mpp,
                     colormap=colors, description="MONAI sliding_window_inference label mask")
print(json.dumps({{"windows": windows}}))
"""


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def _agreement(first: Path, second: Path) -> float:
    import numpy as np
    import tifffile

    a, b = tifffile.imread(first), tifffile.imread(second)
    return float(np.mean(a == b)) if a.shape == b.shape else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="12000x10000")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    args = parser.parse_args()
    if importlib.util.find_spec("monai") is None:
        raise SystemExit("MONAI is not installed; this benchmark needs it: pip install -e .[bench]")
    sys.path.insert(0, str(HERE))
    from _slides import synthetic_slide, untrained_checkpoint

    width, height = (int(v) for v in args.size.split("x"))
    svs = synthetic_slide(width, height)
    ckpt = untrained_checkpoint(mpp=1.0)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    with tempfile.TemporaryDirectory() as tmp:
        ours_mask, monai_mask = Path(tmp) / "wsi-seg.mask.tif", Path(tmp) / "monai.mask.tif"
        ours_s, ours_mib, ours_out = _run(
            [sys.executable, "-m", "wsi_seg", "predict", str(svs), "-o", str(ours_mask), "--model", str(ckpt),
             "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
             "--device", "cpu", "--no-progress"], env)
        onnx_path, onnx_mask = Path(tmp) / "model.onnx", Path(tmp) / "wsi-seg-onnx.mask.tif"
        subprocess.run([sys.executable, "-m", "wsi_seg", "export-onnx", str(ckpt), "-o", str(onnx_path)],
                       check=True, capture_output=True)
        onnx_s, onnx_mib, _ = _run(
            [sys.executable, "-m", "wsi_seg", "predict", str(svs), "-o", str(onnx_mask), "--model", str(onnx_path),
             "--backend", "onnx", "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch-size",
             str(args.batch_size), "--no-progress"], env)
        child = MONAI_CHILD.format(svs=str(svs), out=str(monai_mask), ckpt=str(ckpt), tile=args.tile,
                                   overlap=args.overlap, batch=args.batch_size)
        monai_s, monai_mib, monai_out = _run([sys.executable, "-c", child], env)
        agreement = _agreement(ours_mask, monai_mask)
        onnx_agreement = _agreement(ours_mask, onnx_mask)

    tiles = ours_out.split("; ")[1] if "; " in ours_out else "?"
    windows = json.loads(monai_out.strip().splitlines()[-1])["windows"]
    print(f"slide {width}x{height} at 0.5 um/px; espnet (untrained, BatchNorms folded) at 1 um/px on the CPU, "
          f"tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}, torch threads {args.threads}")
    print(f"wsi-seg predict : {ours_s:8.1f} s  peak RSS {ours_mib:8.1f} MiB  ({tiles})")
    print(f"wsi-seg --backend onnx : {onnx_s:8.1f} s  peak RSS {onnx_mib:8.1f} MiB  (the same graph in "
          "onnxruntime; the process never loads PyTorch)")
    print(f"MONAI           : {monai_s:8.1f} s  peak RSS {monai_mib:8.1f} MiB  ({windows} windows, gaussian)")
    print(f"time ratio wsi-seg / MONAI     : torch backend {ours_s / monai_s:6.3f}, onnx backend "
          f"{onnx_s / monai_s:6.3f}  (target < 1)")
    print(f"peak RSS ratio wsi-seg / MONAI : torch backend {ours_mib / monai_mib:6.3f}, onnx backend "
          f"{onnx_mib / monai_mib:6.3f}  (target <= 0.25)")
    print(f"masks agree on {100 * agreement:.2f}% of level-0 pixels (wsi-seg torch vs MONAI); "
          f"torch vs onnx backends {100 * onnx_agreement:.3f}%")


if __name__ == "__main__":
    main()
