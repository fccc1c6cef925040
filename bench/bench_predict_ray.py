"""Benchmark: `chiquito predict MODEL.onnx PHOTOS --out F.jsonl` in one process vs `--ray local` (a Ray
cluster started on this machine, one model worker per CPU), images per second, same files, same output.

Run: .venv/bin/python bench/bench_predict_ray.py MODEL.onnx IMAGES_DIR [--n 2000] [--workers 2]
Each side writes a fresh .jsonl; the times cover loading the model, decoding, preprocessing, the forward
passes and writing the lines; the cluster's include starting Ray (reported apart) and its workers. The
file list is the folder's images repeated up to --n (each a distinct path through a symlink).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    from bench._env import as_chiquito_runs

    as_chiquito_runs()
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(ROOT / "runs/face-or-not/model.onnx"))
    ap.add_argument("images", nargs="?", default=str(ROOT / "datasets/face-or-not"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.predict import expand_paths, predict_to_jsonl
    from chiquito_or_not.stages.predict_ray import predict_ray

    found = expand_paths([args.images])
    if not found:
        sys.exit(f"no images under {args.images}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i in range(args.n):  # distinct paths, so neither side skips a repeat
            link = tmp / "photos" / f"{i:06d}{found[i % len(found)].suffix}"
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(found[i % len(found)].resolve())
            files.append(link)

        t = time.time()
        c1 = predict_to_jsonl(load_model(args.model), files, tmp / "one.jsonl")
        one_s = time.time() - t

        t = time.time()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        start_s = time.time() - t
        t = time.time()
        c2 = predict_ray(Path(args.model), files, tmp / "ray.jsonl", "local", args.workers)
        ray_s = time.time() - t
        ray.shutdown()
        same = (tmp / "one.jsonl").read_text() == (tmp / "ray.jsonl").read_text()

    print(f"{args.n} images ({len(found)} distinct files from {args.images}), model {args.model}")
    print(f"{os.cpu_count()} CPUs")
    print(f"  one process         {one_s:7.2f}s  {args.n / one_s:7.1f} images/s  {c1}")
    print(
        f"  ray, {args.workers} workers      {ray_s:7.2f}s  {args.n / ray_s:7.1f} images/s  {c2}"
        f"  (+ {start_s:.1f}s to start the local cluster)"
    )
    print(f"ratio ray / one process: {one_s / ray_s:.2f}x; identical .jsonl: {same}")


if __name__ == "__main__":
    main()
