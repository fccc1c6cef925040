"""Benchmark 1: the default recipe's whole schedule, plain fastai script vs `chiquito finetune`.

Run: .venv/bin/python bench/bench_train.py [RECIPE]   (after `chiquito dataset RECIPE`)
Both run in fresh processes, one after the other, on a copy of the same train/valid folders; ours starts
with an empty feature cache, so filling it is counted. Bar: ours at most 0.8x the plain script's wall
time, validation accuracy no more than half a point lower.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main():
    recipe = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "recipes/face-or-not.toml")
    name = recipe.stem
    src = ROOT / "datasets" / name
    if not (src / "train").is_dir():
        sys.exit(f"no dataset at {src}; run `chiquito dataset {recipe}` first")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        shutil.copytree(src, data / name, ignore=shutil.ignore_patterns("test"))
        env = {**os.environ, "CHIQUITO_DATA": str(data), "CHIQUITO_RUNS": str(tmp / "runs")}

        t = time.time()
        plain = subprocess.run([sys.executable, str(ROOT / "bench/plain_fastai.py"), str(data / name)],
                               capture_output=True, text=True, env=env, cwd=ROOT)
        plain_s = time.time() - t
        if plain.returncode:
            sys.exit(plain.stderr[-3000:])
        plain_acc = json.loads(plain.stdout.strip().splitlines()[-1])["valid_accuracy"]

        t = time.time()
        ours = subprocess.run([str(BIN / "chiquito"), "finetune", str(recipe)], capture_output=True, text=True,
                              env=env, cwd=ROOT)
        ours_s = time.time() - t
        if ours.returncode:
            sys.exit(ours.stderr[-3000:])
        m = json.loads((tmp / "runs" / name / "metrics.json").read_text())
        timings = json.loads((tmp / "runs" / name / "state.json").read_text())["timings"]
        ours_acc = m["valid"]["accuracy"]

    print(f"recipe {recipe.name}: {m['valid']['counts']['n']} validation images")
    print(f"{'':<28}{'wall s':>8}{'valid acc':>11}")
    print(f"{'plain fastai script':<28}{plain_s:>8.1f}{plain_acc:>11.4f}")
    print(f"{'chiquito finetune':<28}{ours_s:>8.1f}{ours_acc:>11.4f}")
    print(f"ratio ours/plain: {ours_s / plain_s:.2f}x time (bar <= 0.80), accuracy {ours_acc - plain_acc:+.4f} "
          f"(bar >= -0.005)")
    print("ours by stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
