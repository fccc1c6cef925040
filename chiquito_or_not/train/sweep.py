"""Sweep: how much of the backbone to keep frozen; choose on validation, report test for the winner only."""

from __future__ import annotations

from dataclasses import replace

from ..core.files import write_csv
from ..core.errors import RecipeError
from .finetune import finetune
from ..core.paths import dataset_dir, run_dir
from ..core.plots import plot_sweep
from ..core.recipe import Recipe, keep_frozen_problem

__all__ = ["sweep", "parse_freeze"]


def parse_freeze(spec: str) -> list[float]:
    """"0,1,2,0.5" → [0.0, 1.0, 2.0, 0.5]: layer groups (whole numbers) or shares of the body's blocks."""
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise RecipeError(f"--freeze {spec!r}: give numbers, e.g. 0,1,2 (layer groups) or 0.25,0.5,0.75") from None
    bad = [v for v in values if keep_frozen_problem(v)]
    if not values or bad:
        raise RecipeError(f"--freeze {spec!r}: each value is 0, 1, 2 (layer groups) or a share in (0, 1)")
    return values


def sweep(recipe: Recipe, amounts: list[float], log=print) -> dict:
    """Fine-tune once per amount frozen in the unfrozen stage; the best on validation gets its test score."""
    data = dataset_dir(recipe.name)
    if not (data / "test").is_dir():
        raise RecipeError(f"{recipe.path}: sweep reports a test score; set 'dataset.test' (e.g. 0.1) and "
                          f"run `chiquito dataset {recipe.path}` again")
    rows = []
    for a in amounts:
        log(f"== keep_frozen {a:g}")
        r = replace(recipe, name=f"{recipe.name}--frozen-{a:g}",
                    finetune=replace(recipe.finetune, unfrozen=replace(recipe.finetune.unfrozen, keep_frozen=a)))
        res = finetune(r, log=log, data_root=data)
        rows.append(dict(keep_frozen=a, valid_accuracy=round(res.metrics["valid"]["accuracy"], 4),
                         valid_balanced_accuracy=round(res.metrics["valid"]["balanced_accuracy"], 4),
                         train_seconds=res.timings.get("train_total", 0.0), run=str(res.run),
                         test_accuracy=res.metrics["test"]["accuracy"]))
    best = max(rows, key=lambda x: (x["valid_accuracy"], x["valid_balanced_accuracy"], -x["train_seconds"]))
    for x in rows:  # only the winner's test score is reported: choosing on test would leak it
        x["test_accuracy"] = round(x["test_accuracy"], 4) if x is best else ""
        x["chosen"] = x is best
    out = run_dir(recipe.name)
    write_csv(out / "sweep.csv", rows, ["keep_frozen", "valid_accuracy", "valid_balanced_accuracy",
                                        "train_seconds", "chosen", "test_accuracy", "run"])
    plot_sweep(rows, out / "sweep.png", f"{recipe.name}: frozen during the unfrozen stage")
    return {"rows": rows, "best": best}
