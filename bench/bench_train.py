"""Benchmark 1: a recipe's whole schedule, plain fastai script vs `chiquito finetune`, for several seeds.

Run: .venv/bin/python bench/bench_train.py [RECIPE] [--seeds N]   (after `chiquito dataset RECIPE`)
Both run in fresh processes, one after the other, on a copy of the same train/valid folders; ours starts
each seed with an empty feature cache, so filling it is counted. Prints the time ratio and the validation
accuracy difference (ours - plain) with its 95 % interval, paired on the same images: on the default
recipe both sides score 45/45, so "equal accuracy" says nothing there; run it on a recipe that is not
saturated (recipes/concepts.toml) to see a difference. Bar: ours at most 0.8x the plain script's wall
time, accuracy no more than half a point lower.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


def seeded_recipe(recipe: Path, seed: int, folder: Path) -> Path:
    """A copy of the recipe with `seed` (and its name kept), for one side's run."""
    text = recipe.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^seed\s*=.*$", "", text)
    if not re.search(r"(?m)^name\s*=", text):
        text = f'name = "{recipe.stem}"\n' + text
    out = folder / f"{recipe.stem}-seed{seed}.toml"
    out.write_text(f"seed = {seed}\n" + text, encoding="utf-8")
    return out


def ours_outcomes(run: Path, data: Path) -> dict:
    """{valid/relative/path: 1 or 0} from our metrics.json (outcomes in evaluate's file order)."""
    from chiquito_or_not.tasks.classify.class_data import labelled_files

    m = json.loads((run / "metrics.json").read_text())["valid"]
    files, _ = labelled_files(data / "valid", list(m["per_class"]))
    return {str(f.relative_to(data / "valid")): int(c) for f, c in zip(files, m["outcomes"])}


def paired_difference(pairs: list[tuple[int, int]]) -> tuple[float, float, float, dict]:
    """(ours - plain accuracy, 95 % low, high) over (ours, plain) right/wrong pairs on the same images
    (normal approximation on the discordant pairs), with McNemar's exact test."""
    from chiquito_or_not.core.stats import Z, mcnemar

    n = len(pairs)
    b = sum(1 for o, p in pairs if o and not p)
    c = sum(1 for o, p in pairs if p and not o)
    d = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return d, d - Z * se, d + Z * se, mcnemar([o for o, _ in pairs], [p for _, p in pairs])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes/face-or-not.toml"))
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    recipe = Path(args.recipe)
    from chiquito_or_not.core.recipe import load_recipe

    r = load_recipe(recipe)
    src = ROOT / "datasets" / r.name
    if not (src / "train").is_dir():
        sys.exit(f"no dataset at {src}; run `chiquito dataset {recipe}` first")
    rows, pairs = [], []
    for seed in range(r.seed, r.seed + args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = tmp / "data"
            shutil.copytree(src, data / r.name, ignore=shutil.ignore_patterns("test"))
            env = {**os.environ, "CHIQUITO_DATA": str(data), "CHIQUITO_RUNS": str(tmp / "runs")}
            seeded = seeded_recipe(recipe, seed, tmp)

            t = time.time()
            plain = subprocess.run(
                [sys.executable, str(ROOT / "bench/plain_fastai.py"), str(seeded), str(data / r.name), str(seed)],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
            )
            plain_s = time.time() - t
            if plain.returncode:
                sys.exit(plain.stderr[-3000:])
            p = json.loads(plain.stdout.strip().splitlines()[-1])

            t = time.time()
            ours = subprocess.run(
                [str(BIN / "chiquito"), "finetune", str(seeded)], capture_output=True, text=True, env=env, cwd=ROOT
            )
            ours_s = time.time() - t
            if ours.returncode:
                sys.exit(ours.stderr[-3000:])
            run = tmp / "runs" / r.name
            o = ours_outcomes(run, data / r.name)
            if set(o) != set(p["outcomes"]):
                sys.exit("the two sides validated on different images")
            pairs += [(o[k], p["outcomes"][k]) for k in sorted(o)]
            acc_o = sum(o.values()) / len(o)
            timings = json.loads((run / "state.json").read_text())["timings"]
            rows.append(
                dict(
                    seed=seed,
                    plain_s=plain_s,
                    ours_s=ours_s,
                    plain_acc=p["valid_accuracy"],
                    ours_acc=acc_o,
                    n=len(o),
                    timings=timings,
                )
            )

    print(f"recipe {recipe.name}: {rows[0]['n']} validation images, {len(rows)} seed(s) per side")
    print(f"{'seed':>6}{'plain s':>9}{'ours s':>9}{'ratio':>7}{'plain acc':>11}{'ours acc':>10}")
    for x in rows:
        print(
            f"{x['seed']:>6}{x['plain_s']:>9.1f}{x['ours_s']:>9.1f}{x['ours_s'] / x['plain_s']:>7.2f}"
            f"{x['plain_acc']:>11.4f}{x['ours_acc']:>10.4f}"
        )
    ratio = sum(x["ours_s"] for x in rows) / sum(x["plain_s"] for x in rows)
    d, lo, hi, t = paired_difference(pairs)
    print(
        f"ratio ours/plain: {ratio:.2f}x time (bar <= 0.80); accuracy ours - plain {d:+.4f} "
        f"(95 % CI {lo:+.4f} to {hi:+.4f}, paired on {len(pairs)} image-runs; McNemar p = {t['p']:.3f}; "
        f"bar >= -0.005)"
    )
    print("ours by stage (s), first seed: " + ", ".join(f"{k} {v}" for k, v in rows[0]["timings"].items()))


if __name__ == "__main__":
    main()
