"""CPU latency of ESPNet p2q8 (20 classes): eager PyTorch vs the optimised torch path vs onnxruntime.

    python benchmarks/model_latency.py [--threads 2] [--repeats 5] [--shapes 1x3x512x1024,8x3x512x512]

"eager" is the authors' layout as wsi-seg builds it, ``create_model("espnet", 20,
alpha3=8)``, unoptimised, in ``torch.inference_mode``. "torch-folded" is what
``TorchPredictor`` runs by default (BatchNorm folded into the convolutions);
"torch-folded-cl" adds channels_last memory format; "onnxruntime" runs the
``wsi-seg export-onnx`` graph on the CPU provider, "onnxruntime-1by1" the same session
one image of the batch at a time. Every variant uses the same
thread count and is timed in turn within each repeat (interleaved, so load
from other processes hits them alike); the median over repeats is reported
with best/eager (target <= 0.6) and the max abs logit difference from eager
(target <= 1e-4). BatchNorm statistics are randomised so that folding is tested
on non-trivial values.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _model():
    from wsi_seg.models import create_model

    torch.manual_seed(0)
    model = create_model("espnet", 20, alpha3=8)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _variants(model, onnx_dir: Path, threads: int):
    from wsi_seg.inference.onnx_export import export_model
    from wsi_seg.models.fuse import fold_batchnorm

    folded = fold_batchnorm(model)
    folded_cl = fold_batchnorm(model).to(memory_format=torch.channels_last)

    def torch_runner(m, channels_last=False):
        def run(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x)
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return m(t).contiguous().numpy()
        return run

    variants = {"eager": torch_runner(model), "torch-folded": torch_runner(folded),
                "torch-folded-cl": torch_runner(folded_cl, channels_last=True)}
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping it (pip install wsi-seg[onnx])")
        return variants
    meta = {"model": {"name": "espnet", "num_classes": 20, "hparams": {"alpha3": 8}}}
    path = export_model(model, meta, onnx_dir / "espnet.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    variants["onnxruntime"] = lambda x: session.run(None, {"input": x})[0]
    variants["onnxruntime-1by1"] = lambda x: np.concatenate(
        [session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default="1x3x512x1024,8x3x512x512")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved repeats")

    model = _model()
    with tempfile.TemporaryDirectory() as tmp:
        variants = _variants(model, Path(tmp), args.threads)
        for spec in args.shapes.split(","):
            shape = tuple(int(v) for v in spec.split("x"))
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            reference = variants["eager"](x)  # also the warm-up of eager
            diffs = {}
            for name, run in variants.items():
                diffs[name] = float(np.abs(run(x) - reference).max())  # warm-up + correctness
            times = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, run in variants.items():
                    start = time.perf_counter()
                    run(x)
                    times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(t) for name, t in times.items()}
            eager = medians["eager"]
            print(f"\ninput {spec}")
            print(f"  {'variant':<16} {'median ms':>10} {'vs eager':>9} {'max |diff|':>11}")
            for name, med in medians.items():
                print(f"  {name:<16} {med * 1e3:>10.1f} {med / eager:>9.3f} {diffs[name]:>11.2e}")
            best = min((n for n in medians if n != "eager"), key=medians.get)
            ok_speed = medians[best] / eager <= 0.6
            ok_diff = diffs[best] <= 1e-4
            print(f"  best: {best}, ratio best/eager {medians[best] / eager:.3f} (target <= 0.6: "
                  f"{'met' if ok_speed else 'not met'}), max abs diff {diffs[best]:.2e} "
                  f"(target <= 1e-4: {'met' if ok_diff else 'not met'})")


if __name__ == "__main__":
    main()
