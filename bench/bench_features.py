"""Benchmark 2: the frozen stage with the feature cache vs without it, same epochs, same learning rate.

Run: .venv/bin/python bench/bench_features.py [RECIPE] [--epochs 1,3,5]   (after `chiquito dataset RECIPE`)
The cached side starts from an empty cache each time, so filling it is counted. Bar: at least 5x faster
from 3 epochs on; validation accuracy within one point of the uncached stage.
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
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes/face-or-not.toml"))
    ap.add_argument("--epochs", default="1,3,5")
    args = ap.parse_args()
    os.chdir(ROOT)
    from fastai.torch_core import set_seed

    from chiquito_or_not.core.paths import Roots
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.core.task_registry import get_task
    from chiquito_or_not.train.features import head_learner
    from chiquito_or_not.train.learner import make_learner

    recipe = load_recipe(args.recipe)
    lr = recipe.finetune.frozen.lr if recipe.finetune.frozen.lr != "auto" else 1e-2
    rows = []
    for n in (int(x) for x in args.epochs.split(",")):
        res = {}
        for cached in (False, True):
            set_seed(recipe.seed, reproducible=True)
            task = get_task(recipe.task)
            dls = task.data.dataloaders(recipe, Roots.from_env().dataset(recipe.name), augment=False)
            with tempfile.TemporaryDirectory() as tmp:
                learn = make_learner(
                    recipe, task, dls, Path(tmp), Roots.from_env().dataset(recipe.name)
                )  # class weights as finetune
                t = time.time()
                if cached:
                    hl = head_learner(learn, recipe.finetune.backbone, Path(tmp) / "features", log=lambda *_: None)
                    fill = time.time() - t
                    hl.fit_one_cycle(n, lr)
                else:
                    fill = 0.0
                    learn.fit_one_cycle(n, lr)
                secs = time.time() - t
                learn.dls = dls
                acc = float(learn.validate()[1])  # the whole model on images, as evaluation sees it
            res[cached] = (secs, fill, acc)
            print(
                f"  epochs {n} {'cached' if cached else 'plain '}: {secs:6.1f}s (cache fill {fill:.1f}s) "
                f"valid acc {acc:.4f}",
                flush=True,
            )
        rows.append((n, res))
    print(
        f"\n{'epochs':>6} {'plain s':>8} {'cached s':>9} {'speed-up':>9} {'plain acc':>10} "
        f"{'cached acc':>11} {'diff':>7}"
    )
    for n, r in rows:
        (ps, _, pa), (cs, _, ca) = r[False], r[True]
        print(f"{n:>6} {ps:>8.1f} {cs:>9.1f} {ps / cs:>8.1f}x {pa:>10.4f} {ca:>11.4f} {ca - pa:>+7.4f}")
    print("bar: speed-up >= 5x from 3 epochs on; |diff| <= 0.01")


if __name__ == "__main__":
    sys.exit(main())
