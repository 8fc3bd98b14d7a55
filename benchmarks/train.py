"""Training quality in a time budget, and the cost of the data pipeline.

    python benchmarks/train.py [--minutes 10] [--size 6144x4608] [--mpp 2.0] [--patch 128]
                               [--batch N] [--processes N] [--threads 1] [--lr LR] [--epochs N1,N2] [--lr-step N]
                               [--oversample T] [--enet-c C] [--scale LO,HI] [--seed N]
                               [--work DIR]

1. Writes 3 synthetic biopsies (``--size`` at mpp 0.5, seeds 100-102) and tiles them
   at ``--mpp`` into ``--patch`` px patches with labels (min tissue 0.2).
2. Data-pipeline ratio: the same training steps (ESPNet, batch ``--batch``, one process) fed
   (a) by the training DataLoader (zarr reads + augmentation) with no worker process
   (reads in the training loop), (a') with one loader process (reads overlap the
   steps, what ``data.workers`` >= 1 gives) and (b) from batches already in memory;
   prints patches/s of each and the ratios a / b, a' / b.
3. Trains the default two-stage recipe (configs/biopsy.yaml; ``--lr``, ``--epochs``
   and ``--lr-step`` override it, the epochs also split the ``--minutes`` budget)
   on slides synth_000 and synth_001 with no validation slide, so nothing is chosen
   by looking at synth_002 (stage 2 starts from stage 1's last epoch, and the
   checkpoint judged is the final epoch's last.pt). ``--val-curve`` makes
   synth_002 the validation slide to print its per-epoch mIoU (costs time in the
   budget, and stage 2 then starts from stage 1's best epoch on synth_002).
   Prints the curve (metrics.csv), then the held-out scores of last.pt on
   synth_002: whole-slide (``wsi-seg predict`` of synth_002.svs + ``wsi-seg
   evaluate`` against its mask; again with ``predict --tta flips``, what the demo
   reports) and on its patches.

Nothing is asserted; the numbers are printed.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsi_seg.config import load_train_config
from wsi_seg.data.augment import Augmenter
from wsi_seg.data.patches import PatchDataset
from wsi_seg.engine.losses import downsample_labels, segmentation_loss
from wsi_seg.engine.metrics import ConfusionMatrix
from wsi_seg.engine.train import EpochSampler, train
from wsi_seg.evaluation import evaluate_masks
from wsi_seg.inference.backends import make_predictor
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.slide import PredictOptions, predict_slide
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION, load_checkpoint
from wsi_seg.synth import synthesize_slide
from wsi_seg.tiling import tile_slides

REPO = Path(__file__).resolve().parents[1]


def make_store(work: Path, size: tuple[int, int], mpp: float, patch: int, stride: int | None = None) -> Path:
    store = work / f"patches-{mpp}-{patch}-{stride or patch}.zarr"
    for i in range(3):
        synthesize_slide(work / "slides", f"synth_{i:03d}", width=size[0], height=size[1], mpp=0.5, seed=100 + i)
    tile_slides([work / "slides"], store, masks_dir=work / "slides", mpp=mpp, patch=patch, stride=stride,
                min_tissue=0.2, progress=False)
    return store


def pipeline_ratio(store: Path, batch: int, steps: int) -> None:
    """Training steps fed by the DataLoader (zarr reads + augmentation) with 0 and 1
    loader processes, against the same steps on batches already in memory."""
    config = load_train_config(REPO / "configs" / "biopsy.yaml", store=store)
    ds = PatchDataset(store, ["synth_000", "synth_001"], normalization=IMAGENET_NORMALIZATION,
                      transform=Augmenter(config.augment, config.data.crop or ds_patch(store)))
    model = create_model("espnet", len(config.classes))
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss_fn = segmentation_loss(None)

    def step(images, labels):
        loss = loss_fn(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def batches(workers: int):
        sampler = EpochSampler(len(ds), shuffle=True, seed=0)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                             persistent_workers=workers > 0)
        epoch = 0
        while True:
            sampler.set_epoch(0, epoch)
            yield from loader
            epoch += 1

    feeds = {"loader, 0 workers (reads in the loop)": batches(0), "loader, 1 worker process": batches(1)}
    memory = [next(feeds["loader, 0 workers (reads in the loop)"]) for _ in range(steps)]
    for images, labels in memory[:2]:  # warm-up of the kernels for this shape
        step(images, labels)
    for source in feeds.values():  # start the worker process outside the timing
        next(source)
    results: dict[str, list[float]] = {}
    for _ in range(3):  # alternate the feeds to share the machine's load fairly
        for name in (*feeds, "in memory"):
            started = time.perf_counter()
            for i in range(steps):
                images, labels = next(feeds[name]) if name in feeds else memory[i]
                step(images, labels)
            results.setdefault(name, []).append(steps * batch / (time.perf_counter() - started))
    mem = np.mean(results["in memory"])
    print(f"data pipeline ({steps} steps x 3 rounds, batch {batch}, ESPNet, threads {torch.get_num_threads()}):")
    print(f"  batches already in memory:                  {mem:6.1f} patches/s")
    for name in feeds:
        real = np.mean(results[name])
        print(f"  {name + ':':43s} {real:6.1f} patches/s, ratio {real / mem:.3f}")


def ds_patch(store: Path) -> int:
    from wsi_seg.data.patches import describe_store

    return describe_store(store).patch


def evaluate(checkpoint: Path, store: Path, names: list[str], slides=("synth_002",)) -> ConfusionMatrix:
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    ds = PatchDataset(store, list(slides), normalization=meta["normalization"])
    cm = ConfusionMatrix(len(names))
    with torch.no_grad():
        for start in range(0, len(ds), 16):
            items = [ds[i] for i in range(start, min(start + 16, len(ds)))]
            images = torch.stack([x for x, _ in items])
            labels = torch.stack([y for _, y in items])
            logits = model(images)
            if logits.shape[-1] != labels.shape[-1]:
                logits = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear")
            cm.update(logits.argmax(1), labels)
    return cm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--size", default="6144x4608")
    parser.add_argument("--mpp", type=float, default=2.0)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--stride", type=int, default=None, help="tiling stride in px (default: the patch size)")
    parser.add_argument("--batch", type=int, default=None, help="patches per batch and process (default: the recipe's)")
    parser.add_argument("--processes", type=int, default=None,
                        help="data-parallel training processes, run.processes (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    parser.add_argument("--epochs", default=None,
                        help="epochs of stage 1 and 2, e.g. 6,30 (default: the recipe's; the time budget "
                             "is split in this ratio)")
    parser.add_argument("--lr-step", type=int, default=None,
                        help="halve the lr every this many epochs (default: the recipe's)")
    parser.add_argument("--oversample", type=float, default=None,
                        help="data.oversample, the repeat-factor threshold (default: the recipe's)")
    parser.add_argument("--enet-c", type=float, default=None, help="optim.enet_c (default: the recipe's)")
    parser.add_argument("--weight-decay", type=float, default=None, help="optim.weight_decay (default: the recipe's)")
    parser.add_argument("--scale", default=None, help="augment.scale as LO,HI (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="run.seed, the training seed (default: the recipe's)")
    parser.add_argument("--val-curve", action="store_true",
                        help="validate on the held-out slide every epoch (prints its mIoU curve)")
    parser.add_argument("--ratio-steps", type=int, default=30)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="wsi-seg-train-bench-"))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()
    store = make_store(work, size, args.mpp, args.patch, args.stride)
    counts = {g: len(PatchDataset(store, [g], normalization=IMAGENET_NORMALIZATION))
              for g in ("synth_000", "synth_001", "synth_002")}
    print(f"store: 3 slides {args.size} px at mpp 0.5, tiled at mpp {args.mpp} into {args.patch} px patches "
          f"(min tissue 0.2): {counts} patches ({time.perf_counter() - started:.0f} s)")
    config = load_train_config(REPO / "configs" / "biopsy.yaml", store=store, out=work / "run", workers=0,
                               batch_size=args.batch, max_minutes=args.minutes, threads=args.threads,
                               processes=args.processes)
    batch = config.data.batch_size
    pipeline_ratio(store, batch, args.ratio_steps)
    if args.skip_training:
        return

    config.data.val_slides = ["synth_002"] if args.val_curve else []
    config.data.train_slides = ["synth_000", "synth_001"]
    if args.lr:
        config.optim.lr = args.lr
    if args.lr_step:
        config.optim.lr_step_epochs = args.lr_step
    if args.oversample is not None:
        config.data.oversample = args.oversample
    if args.enet_c is not None:
        config.optim.enet_c = args.enet_c
    if args.weight_decay is not None:
        config.optim.weight_decay = args.weight_decay
    if args.seed is not None:
        config.run.seed = args.seed
    if args.scale:
        config.augment.scale = tuple(float(v) for v in args.scale.split(","))
    if args.epochs:
        for stage, epochs in zip(config.stages, args.epochs.split(",")):
            stage.epochs = int(epochs)
    config.output.tensorboard = False
    print(f"training: {config.stage_model(0)} {config.stages[0].epochs} epochs then {config.stage_model(1)} "
          f"{config.stages[1].epochs} epochs, lr {config.optim.lr} halved every {config.optim.lr_step_epochs} epochs, "
          f"class weights {config.optim.class_weights} (c {config.optim.enet_c}), weight decay {config.optim.weight_decay}, scale {tuple(config.augment.scale)}, oversample {config.data.oversample}, alpha3 {config.model.hparams.get('alpha3')}, batch {batch} x "
          f"{config.run.processes} process(es), budget {args.minutes} min, threads {args.threads}")
    started = time.perf_counter()
    result = train(config, progress=False, overwrite=True)
    print(f"trained {time.perf_counter() - started:.0f} s; stages: "
          + ", ".join(f"{s.name} {s.epochs} epochs"
                      + (f" (best mIoU {s.best_miou:.4f} at {s.best_epoch})" if args.val_curve else "")
                      for s in result.stages))
    print("curve (training loss; mIoU on the held-out slide with --val-curve):")
    with open(work / "run" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            miou = f"  mIoU {float(row['miou']):.4f}" if row["miou"] else ""
            print(f"  {row['stage']} {int(row['epoch']):3d}  loss {float(row['train_loss']):.4f}{miou}  "
                  f"{float(row['time_s']):.1f}s")
    run = work / "run"
    started = time.perf_counter()
    mask = run / "synth_002.pred.mask.tif"
    predict_slide(work / "slides" / "synth_002.svs", mask, TorchPredictor.from_checkpoint(run / "last.pt"),
                  PredictOptions(progress=False))
    predicted = time.perf_counter() - started
    whole = evaluate_masks(mask, work / "slides" / "synth_002.mask.tif", config.class_names).as_dict()
    print(f"held-out slide synth_002, last.pt, whole slide (predict {predicted:.0f} s + evaluate): "
          f"mIoU {whole['miou']:.4f}  pixel accuracy {whole['pixel_accuracy']:.4f}")
    for name, value in whole["iou"].items():
        print(f"    {name:22s} IoU {value if value is None else f'{value:.4f}'}")
    flipped = run / "synth_002.pred-flips.mask.tif"
    predict_slide(work / "slides" / "synth_002.svs", flipped, make_predictor(run / "last.pt", tta="flips"),
                  PredictOptions(progress=False))
    with_flips = evaluate_masks(flipped, work / "slides" / "synth_002.mask.tif", config.class_names).as_dict()
    print(f"  the same with predict --tta flips: mIoU {with_flips['miou']:.4f}  "
          f"pixel accuracy {with_flips['pixel_accuracy']:.4f}  necrosis IoU {with_flips['iou']['necrosis']:.4f}")
    checkpoints = [("last.pt (final epoch)", run / "last.pt")]
    if args.val_curve:
        checkpoints.append(("best.pt (selected on the held-out slide, optimistic)", run / "best.pt"))
    for label, path in checkpoints:
        cm = evaluate(path, store, config.class_names)
        iou = cm.iou()
        print(f"held-out patches, {label}: mIoU {cm.miou():.4f}  pixel accuracy {cm.pixel_accuracy():.4f}")
        for name, value, support in zip(config.class_names, iou, cm.matrix.sum(1)):
            print(f"    {name:22s} IoU {value:.4f}  ({support} px)")
    train_cm = evaluate(run / "last.pt", store, config.class_names, slides=("synth_000", "synth_001"))
    print(f"training patches, last.pt: mIoU {train_cm.miou():.4f} (against held-out patches above: how much "
          "is fitting, how much generalising)")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
