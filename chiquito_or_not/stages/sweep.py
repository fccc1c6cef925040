"""Sweep: how much of the backbone to keep frozen; choose on validation, report test for the winner only."""

from __future__ import annotations

from dataclasses import replace

from ..core.errors import RecipeError
from ..core.files import write_csv
from ..core.layout import RunFolder
from ..core.paths import Roots
from ..core.plots import plot_sweep
from ..core.recipe import Recipe, keep_frozen_problem
from ..core.stats import says, score_cells, score_columns, versus
from ..core.task_registry import get_task
from .finetune import finetune

__all__ = ["sweep", "parse_freeze"]


def parse_freeze(spec: str) -> list[float]:
    """ "0,1,2,0.5" → [0.0, 1.0, 2.0, 0.5]: layer groups (whole numbers) or shares of the body's blocks."""
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise RecipeError(f"--freeze {spec!r}: give numbers, e.g. 0,1,2 (layer groups) or 0.25,0.5,0.75") from None
    bad = [v for v in values if keep_frozen_problem(v)]
    if not values or bad:
        raise RecipeError(f"--freeze {spec!r}: each value is 0, 1, 2 (layer groups) or a share in (0, 1)")
    return values


def _within_noise(rows: list[dict], best: dict, valid: dict, scores: tuple, log) -> bool | None:
    """The choice is made on validation: whether validation cannot tell the winner from the runner-up (None
    with one run)."""
    others = sorted((x for x in rows if x is not best), key=lambda x: [-x[f"valid_{k}"] for k in scores])
    if not others:
        return None
    v = versus(valid[best["run"]], valid[others[0]["run"]], scores[0])
    log(
        f"  chose keep_frozen {best['keep_frozen']:g} on validation; "
        + says(f"{best['keep_frozen']:g}", f"{others[0]['keep_frozen']:g}", v, "valid")
        + ("" if v["distinguishable"] else " (the choice is within noise)")
    )
    return not v["distinguishable"]


def sweep(recipe: Recipe, amounts: list[float], log=print, roots: Roots | None = None) -> dict:
    """Fine-tune once per amount frozen in the unfrozen stage; the best on validation gets its test score."""
    roots = roots or Roots.from_env()
    data = roots.dataset(recipe.name)
    if not (data / "test").is_dir():
        raise RecipeError(
            f"{recipe.path}: sweep reports a test score; set 'dataset.test' (e.g. 0.1) and "
            f"run `chiquito dataset {recipe.path}` again"
        )
    task = get_task(recipe.task)
    first = task.evaluation.scores[0]
    test = f"test_{first}"  # the chosen run's test score
    rows, valid, tests = [], {}, {}
    for a in amounts:
        log(f"== keep_frozen {a:g}")
        r = replace(
            recipe,
            name=f"{recipe.name}--frozen-{a:g}",
            finetune=replace(recipe.finetune, unfrozen=replace(recipe.finetune.unfrozen, keep_frozen=a)),
        )
        res = finetune(r, log=log, data_root=data, roots=roots)
        valid[str(res.run)], tests[str(res.run)] = res.metrics["valid"], res.metrics["test"]
        cells = score_cells(res.metrics["valid"], task.evaluation.scores)
        rows.append(
            dict(
                keep_frozen=a,
                **{f"valid_{k}": v for k, v in cells.items()},
                train_seconds=res.timings.get("train_total", 0.0),
                run=str(res.run),
            )
        )
    best = max(rows, key=lambda x: (*(x[f"valid_{k}"] for k in task.evaluation.scores), -x["train_seconds"]))
    for x in rows:  # only the winner's test score is reported: choosing on test would leak it
        t = score_cells(tests[x["run"]], (first,))
        x[test], x[f"{test}_low"], x[f"{test}_high"] = (
            (t[first], t[f"{first}_low"], t[f"{first}_high"]) if x is best else ("", "", "")
        )
        x["chosen"] = x is best
    noise = _within_noise(rows, best, valid, task.evaluation.scores, log)
    for x in rows:
        x["choice_within_noise"] = noise if x is best and noise is not None else ""
    out = RunFolder(roots.run(recipe.name))
    write_csv(
        out.sweep_csv,
        rows,
        [
            "keep_frozen",
            *(f"valid_{c}" for c in score_columns(task.evaluation.scores)),
            "train_seconds",
            "chosen",
            "choice_within_noise",
            test,
            f"{test}_low",
            f"{test}_high",
            "run",
        ],
    )
    plot_sweep(rows, out.sweep_png, f"{recipe.name}: frozen during the unfrozen stage", first)
    return {"rows": rows, "best": best, "within_noise": noise}
