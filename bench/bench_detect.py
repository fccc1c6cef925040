"""Benchmark: detector prediction, PyTorch eager (model.pkl) vs onnxruntime (model.onnx), end to end per
file as `chiquito predict` runs it (decode, resize, model, box decoding, numpy NMS), side by side on the
same files, same threads.

Run: .venv/bin/python bench/bench_detect.py [RUN_DIR] [--reps 3]
Exports RUN_DIR/model.onnx first if it is missing. Prints ms per image for each and the ratio.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    from bench._env import as_chiquito_runs

    as_chiquito_runs()
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default=str(ROOT / "runs/objects"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bs", type=int, default=16)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import json

    import torch

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.export import export_onnx
    from chiquito_or_not.stages.predict import predict_paths

    run = Path(args.run)
    if not (run / "model.onnx").is_file():
        export_onnx(run)
    files = sorted((Path(json.loads((run / "state.json").read_text())["dataset"]) / "valid" / "images").glob("*.jpg"))
    torch_model = load_model(run / "model.pkl", notice=lambda _: None)
    onnx_model = load_model(run / "model.onnx")
    results = {}
    for name, model in (("pytorch", torch_model), ("onnxruntime", onnx_model)):
        predict_paths(model, files[: args.bs], bs=args.bs)  # warm-up
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            out = predict_paths(model, files, bs=args.bs)
            times.append(time.perf_counter() - t)
        results[name] = (statistics.median(times) / len(files) * 1000, out)
    same = sum(
        1
        for a, b in zip(results["pytorch"][1], results["onnxruntime"][1])
        if [x["label"] for x in a.boxes] == [x["label"] for x in b.boxes]
    )
    print(f"{len(files)} validation images, batch {args.bs}, {torch.get_num_threads()} threads, median of {args.reps}")
    print(f"  pytorch eager  {results['pytorch'][0]:7.1f} ms/image")
    print(f"  onnxruntime    {results['onnxruntime'][0]:7.1f} ms/image")
    print(
        f"  ratio pytorch/onnxruntime {results['pytorch'][0] / results['onnxruntime'][0]:.2f}x; "
        f"same labels in {same}/{len(files)} images"
    )


if __name__ == "__main__":
    main()
