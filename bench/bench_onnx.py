"""Benchmark 4: onnxruntime vs PyTorch eager, same model, same input batch, same threads.

Run: .venv/bin/python bench/bench_onnx.py [RUN_DIR] [--bs 32] [--reps 10]
Exports RUN_DIR/model.onnx first if it is missing. Bar: ONNX not slower (ratio torch/onnx >= 1).
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, reps):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    from bench._env import as_chiquito_runs

    as_chiquito_runs()
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default=str(ROOT / "runs/face-or-not"))
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.export import export_onnx
    from chiquito_or_not.tasks.classify.class_runtime import OnnxClassifier

    run = Path(args.run)
    if not (run / "model.onnx").is_file():
        export_onnx(run)
    learn = load_model(run / "model.pkl")
    onnx_model = OnnxClassifier(run / "model.onnx")
    W, H = onnx_model.spec["size_wh"]
    x = np.random.default_rng(0).standard_normal((args.bs, 3, H, W)).astype(np.float32)
    model = torch.nn.Sequential(learn.learn.model, torch.nn.Softmax(dim=1)).eval()
    xt = torch.from_numpy(x)

    def eager():
        with torch.inference_mode():
            return model(xt)

    def ort():
        return onnx_model.session.run(None, {onnx_model.input: x})[0]

    diff = float(np.abs(eager().numpy() - ort()).max())
    t_torch, t_onnx = timed(eager, args.reps), timed(ort, args.reps)
    print(f"batch {args.bs} x 3 x {H} x {W}, {torch.get_num_threads()} torch threads, median of {args.reps}")
    print(f"  PyTorch eager  {1000 * t_torch:8.1f} ms  {1000 * t_torch / args.bs:6.2f} ms/image")
    print(f"  onnxruntime    {1000 * t_onnx:8.1f} ms  {1000 * t_onnx / args.bs:6.2f} ms/image")
    print(f"ratio torch/onnx: {t_torch / t_onnx:.2f}x (bar >= 1.0); max |diff| {diff:.1e}")
    q = run / "model.int8.onnx"
    if q.is_file():
        qm = OnnxClassifier(q)
        t_q = timed(lambda: qm.session.run(None, {qm.input: x}), args.reps)
        print(f"  onnxruntime int8 {1000 * t_q:6.1f} ms  ratio torch/int8 {t_torch / t_q:.2f}x")


if __name__ == "__main__":
    main()
