"""Benchmark: one model, four runtimes side by side: PyTorch eager, onnxruntime, LiteRT float, LiteRT int8.

Run: .venv/bin/python bench/bench_phone.py [RUN_DIR] [--images 32] [--reps 3] [--threads 2]
Exports RUN_DIR/model.onnx and model.tflite (+ model.int8.tflite) first where they are missing. Every
runtime gets the same validation images one at a time (batch 1, as a phone runs), each with its own
preprocessing (resize + normalise; LiteRT takes the resized pixels and normalises inside its graph);
ms per image is the median over `reps` passes of the model call alone. Prints file sizes and whether
each runtime gives PyTorch's answer (classifier: argmax; detector: the same labels above the threshold).
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_image_ms(run_one, xs, reps):
    run_one(xs[0])  # warm-up
    passes = []
    for _ in range(reps):
        t = time.perf_counter()
        for x in xs:
            run_one(x)
        passes.append((time.perf_counter() - t) / len(xs))
    return 1000 * statistics.median(passes)


def main():
    from bench._env import as_chiquito_runs

    as_chiquito_runs()
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default=str(ROOT / "runs/face-or-not"))
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from PIL import Image

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.export import _split_files, export_onnx
    from chiquito_or_not.stages.tflite import export_tflite

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    if not (run / "model.onnx").is_file():
        export_onnx(run)
    if not (run / "model.int8.tflite").is_file():
        export_tflite(run, int8=True)
    learn = load_model(run / "model.pkl", notice=lambda m: None)
    models = {
        "PyTorch eager": learn,
        "onnxruntime": load_model(run / "model.onnx", threads=args.threads),
        "LiteRT float": load_model(run / "model.tflite", threads=args.threads),
        "LiteRT int8": load_model(run / "model.int8.tflite", threads=args.threads),
    }
    files = _split_files(run, "valid", args.images)
    images = [Image.open(f).convert("RGB") for f in files]
    from chiquito_or_not.core.task_registry import task_of_model

    task = task_of_model(learn)
    print(
        f"{run.name} ({task.name}): {len(images)} validation images, batch 1, {args.threads} threads, "
        f"median of {args.reps} passes"
    )
    answers, base = {}, None
    for name, m in models.items():
        r = m  # every format has the same runtime surface: preprocess, run
        xs = [r.preprocess(im)[None] for im in images]
        ms = per_image_ms(r.run, xs, args.reps)
        outs = [r.run(x) for x in xs]
        if task.name == "detect":
            from chiquito_or_not.tasks.detect.box_inference import _detections

            ans = [
                sorted(d["label"] for d in _detections(r, b[0], s[0], im.width, im.height, r.spec["score_threshold"]))
                for (b, s), im in zip(outs, images)
            ]
        else:
            ans = [int(np.argmax(o[0])) for o in outs]
        answers[name] = ans
        base = base or ms
        path = {
            "onnxruntime": run / "model.onnx",
            "LiteRT float": run / "model.tflite",
            "LiteRT int8": run / "model.int8.tflite",
        }.get(name, run / "model.pkl")
        same = sum(a == b for a, b in zip(ans, answers["PyTorch eager"]))
        print(
            f"  {name:14s} {ms:7.2f} ms/image  ({base / ms:4.2f}x PyTorch)  {path.stat().st_size / 1e6:6.1f} MB "
            f"{path.name:18s} same answer as PyTorch {same}/{len(ans)}"
        )


if __name__ == "__main__":
    main()
