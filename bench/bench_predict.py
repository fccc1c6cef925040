"""Benchmark 3: `chiquito predict` (batched) on 200 images vs a loop of fastai's `learn.predict`.

Run: .venv/bin/python bench/bench_predict.py [MODEL.pkl] [IMAGES_DIR] [--n 200]
Same loaded learner, same files; each side's time covers decoding, preprocessing and the forward passes.
Bar: at least 5x. Also checks that both give the same labels.
"""

import argparse
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
    ap.add_argument("model", nargs="?", default=str(ROOT / "runs/face-or-not/model.pkl"))
    ap.add_argument("images", nargs="?", default=str(ROOT / "datasets/face-or-not"))
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds Learner.no_bar)

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.predict import expand_paths, predict_paths

    files = expand_paths([args.images])[: args.n]
    if len(files) < args.n:
        sys.exit(f"only {len(files)} images under {args.images}; need {args.n}")
    model = load_model(args.model)  # its fastai Learner is model.learn
    learn = model.learn
    predict_paths(model, files[:4])  # warm-up both paths once
    learn.predict(files[0])

    t = time.time()
    ours = predict_paths(model, files)
    ours_s = time.time() - t
    t = time.time()
    with learn.no_bar():
        loop = [learn.predict(f) for f in files]
    loop_s = time.time() - t
    same = sum(a.label == str(b[0]) for a, b in zip(ours, loop))
    print(f"{len(files)} images, model {args.model}")
    print(f"  learn.predict loop   {loop_s:7.2f}s  {1000 * loop_s / len(files):6.1f} ms/image")
    print(f"  chiquito predict     {ours_s:7.2f}s  {1000 * ours_s / len(files):6.1f} ms/image")
    print(f"speed-up: {loop_s / ours_s:.1f}x (bar >= 5x); same label for {same}/{len(files)}")
    onnx_path = Path(args.model).with_suffix(".onnx")
    if onnx_path.is_file():  # the same model exported by `chiquito export`
        onnx_model = load_model(onnx_path)
        predict_paths(onnx_model, files[:4])
        t = time.time()
        got = predict_paths(onnx_model, files)
        onnx_s = time.time() - t
        same = sum(a.label == str(b[0]) for a, b in zip(got, loop))
        print(f"  chiquito predict {onnx_path.name} {onnx_s:5.2f}s  {1000 * onnx_s / len(files):6.1f} ms/image")
        print(f"speed-up with ONNX: {loop_s / onnx_s:.1f}x; same label for {same}/{len(files)}")


if __name__ == "__main__":
    main()
