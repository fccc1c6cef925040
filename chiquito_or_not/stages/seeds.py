"""Seed spread: the same recipe and split trained with several seeds, each figure as mean ± spread."""

from __future__ import annotations

import json
from dataclasses import replace

from ..core.errors import RecipeError
from ..core.files import atomic_write_text, write_csv
from ..core.layout import RunFolder
from ..core.paths import Roots
from ..core.recipe import Recipe
from ..core.stats import mean_spread
from ..core.task_registry import get_task
from ..train.runs import refuse_files_in_place
from .finetune import finetune

__all__ = ["seed_spread"]


def seed_spread(recipe: Recipe, n: int, log=print, roots: Roots | None = None) -> dict:
    """Fine-tune with seeds recipe.seed .. recipe.seed + n - 1 into runs/NAME--seed-S (the split stays the
    dataset's: only training changes); write runs/NAME/seeds.csv (one row per seed) and seeds.json (mean,
    sample standard deviation, min, max of each figure). The run with the recipe's own seed repeats
    what `chiquito finetune` gives exactly."""
    if n < 2:
        raise RecipeError(f"--seeds {n}: give 2 or more (one seed is a plain `chiquito finetune`)")
    task, roots = get_task(recipe.task), roots or Roots.from_env()
    data = roots.dataset(recipe.name)
    names = [recipe.name] + [f"{recipe.name}--seed-{s}" for s in range(recipe.seed, recipe.seed + n)]
    refuse_files_in_place(*map(roots.run, names))
    rows = []
    for seed in range(recipe.seed, recipe.seed + n):
        log(f"== seed {seed}")
        res = finetune(
            replace(recipe, seed=seed, name=f"{recipe.name}--seed-{seed}"), log=log, data_root=data, roots=roots
        )
        row = {"seed": seed}
        for split in ("valid", "test"):
            if split in res.metrics:
                row.update({f"{split}_{k}": res.metrics[split][k] for k in task.evaluation.scores})
        row["train_seconds"] = res.timings.get("train_total", 0.0)
        rows.append({**row, "run": str(res.run)})
    figures = [c for c in rows[0] if c not in ("seed", "run")]
    summary = {c: mean_spread([r[c] for r in rows]) for c in figures}
    out = RunFolder(roots.run(recipe.name))
    write_csv(out.seeds_csv, rows, list(rows[0]))
    atomic_write_text(
        out.seeds_json,
        json.dumps(
            {
                "seeds": [r["seed"] for r in rows],
                "dataset": str(data),
                "summary": summary,
                "note": "training seeds only: every run uses the same train/valid/test split",
            },
            indent=1,
        )
        + "\n",
    )
    for c in figures:
        s = summary[c]
        log(
            f"  {c:<28} {s['mean']:.4f} ± {s['std']:.4f} (sd over {s['n']} seeds; min {s['min']:.4f}, "
            f"max {s['max']:.4f})"
        )
    return {"rows": rows, "summary": summary}
