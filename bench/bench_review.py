"""Benchmark: does `chiquito review` find flipped labels, and does fixing them help the model?

Run: .venv/bin/python bench/bench_review.py [RECIPE] [--flip 0.1] [--seed 0] [--no-train]
Takes an offline classification recipe's dataset (default recipes/anime-or-not.toml; built first if
needed), copies its images into class folders with a share of the labels flipped (seeded), and builds
that noisy dataset with `chiquito dataset`. Then:
  1. ranks it exactly as `chiquito review` does and prints precision and recall of the top-k suspects
     against the flipped set at k = the number flipped (bar: both >= 0.8), and of cleanlab's flagged set;
  2. trains the recipe's schedule on the noisy labels, writes the suggested fixes into review.csv
     (relabel every flagged image to its suggested class), rebuilds the dataset, trains again, and prints
     both models' accuracy on the same test images scored against their TRUE labels, side by side.
Everything is written under a temporary folder; the recipe's own dataset is only read.
"""

import argparse
import csv
import hashlib
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def noisy_recipe(recipe: Path, folders: dict[str, Path], out: Path) -> Path:
    """The recipe with its sources replaced by one folder per (noisy) class, same dataset/finetune keys."""
    text = recipe.read_text(encoding="utf-8")
    text = text[: text.index("[[classes.")] if "[[classes." in text else text
    text = re.sub(r"(?m)^name\s*=.*$", "", text)
    text = f'name = "{recipe.stem}-noisy"\n' + text
    for label, d in folders.items():
        text += f'\n[[classes.{label}.sources]]\nkind = "folder"\npath = "{d}"\n'
    p = out / f"{recipe.stem}-noisy.toml"
    p.write_text(text, encoding="utf-8")
    return p


def rows_of(root: Path) -> list[dict]:
    with open(root / "split.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_accuracy(run: Path, root: Path, truth: dict[str, str]) -> tuple[int, int]:
    """(right, n) of the run's model.pkl (ours, just written) on the test split, against the true labels."""
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.tasks.classify.class_inference import predict_paths

    test = [r for r in rows_of(root) if r["split"] == "test"]
    preds = predict_paths(load_model(run / "model.pkl", notice=lambda *_: None), [root / r["file"] for r in test])
    return sum(p.label == truth[r["sha256"]] for p, r in zip(preds, test)), len(test)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "anime-or-not.toml"))
    ap.add_argument("--flip", type=float, default=0.1, help="share of the labels flipped")
    ap.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    ap.add_argument("--no-train", action="store_true", help="only the ranking (step 1)")
    a = ap.parse_args()

    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.data.review_log import ReviewLog
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune
    from chiquito_or_not.stages.review import find_suspects

    quiet = lambda *_: None  # noqa: E731
    src_recipe = load_recipe(a.recipe)
    src = build_dataset(src_recipe, log=quiet).root  # cached after the first time
    rows = rows_of(src)
    classes = sorted({r["label"] for r in rows})
    rng = random.Random(a.seed)
    flipped = set(rng.sample(range(len(rows)), round(a.flip * len(rows))))
    tmp = Path(tempfile.mkdtemp(prefix="bench_review_"))  # left for inspection; printed below
    os.environ["CHIQUITO_DATA"], os.environ["CHIQUITO_RUNS"] = str(tmp / "data"), str(tmp / "runs")
    folders = {c: tmp / "src" / c for c in classes}
    truth, flipped_sha = {}, set()
    for i, r in enumerate(rows):  # the noisy dataset's inputs are these cleaned files: their hash is its key
        label, sha = r["label"], hashlib.sha256((src / r["file"]).read_bytes()).hexdigest()
        if i in flipped:  # another class, chosen at random
            label = rng.choice([c for c in classes if c != r["label"]])
            flipped_sha.add(sha)
        folders[label].mkdir(parents=True, exist_ok=True)
        os.link(src / r["file"], folders[label] / Path(r["file"]).name)
        truth[sha] = r["label"]
    recipe = load_recipe(noisy_recipe(Path(a.recipe), folders, tmp))
    ds = build_dataset(recipe, log=quiet)
    in_splits = {r["sha256"] for r in rows_of(ds.root)}
    noisy = flipped_sha & in_splits
    print(
        f"{src_recipe.name}: {len(rows)} images, {len(flipped_sha)} labels flipped (seed {a.seed}); "
        f"noisy dataset: {len(in_splits)} in its splits, {len(noisy)} of them flipped  [{tmp}]"
    )

    t0 = time.perf_counter()
    res = find_suspects(recipe.path, log=quiet)
    t_rank = time.perf_counter() - t0
    k = len(noisy)
    top = {it["sha256"] for it in res.suspects.items[:k]}
    flagged = {it["sha256"] for it in res.suspects.items if "label issue" in it["why"]}
    hit = len(top & noisy)
    found = res.suspects
    print(f"ranking: {t_rank:.1f} s ({len(found.items)} images, {found.folds} folds, C {found.C:.0e})")
    print(f"  top-{k} suspects: precision {hit / k:.3f}  recall {hit / k:.3f}  (k = the number flipped)")
    fh = len(flagged & noisy)
    print(f"  cleanlab flagged {len(flagged)}: precision {fh / max(1, len(flagged)):.3f}  recall {fh / k:.3f}")
    if a.no_train:
        return

    def train(tag: str):
        t = time.perf_counter()
        out = finetune(recipe, log=quiet)
        right, n = test_accuracy(out.run, ds.root, truth)
        return right, n, time.perf_counter() - t

    before = train("noisy")
    fixes = [it for it in res.suspects.items if "label issue" in it["why"] and it["suggested"] != it["label"]]
    with ReviewLog(ds.root / "review.csv") as log:
        for it in fixes:
            log.write(it["sha256"], it["path"], "relabel", it["suggested"])
    fixed = build_dataset(recipe, log=quiet)
    right_fix = sum(1 for it in fixes if it["suggested"] == truth[it["sha256"]])
    print(
        f"fixes: {len(fixes)} relabelled to the suggested class ({right_fix} of them back to the true label); "
        f"review.csv applied: {fixed.review}"
    )
    after = train("fixed")
    print("test accuracy against the true labels (same test images; the recipe's schedule):")
    for name, (r, n, s) in (("trained on the noisy labels", before), ("after the suggested fixes", after)):
        print(f"  {name:<30} {r / n:.4f}  ({r}/{n})  train+eval {s:.0f} s")
    print(f"  difference {after[0] / after[1] - before[0] / before[1]:+.4f}")


if __name__ == "__main__":
    from _env import as_chiquito_runs

    as_chiquito_runs()
    main()
