"""Compare: train several backbones on the same split with the same schedule; write a leaderboard."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..core.backbone_table import backbone_name_problem
from ..core.errors import RecipeError
from ..core.files import write_csv
from ..core.layout import RunFolder
from ..core.paths import Roots
from ..core.plots import plot_leaderboard
from ..core.recipe import Recipe
from ..core.stats import says, score_cells, score_columns, versus
from ..core.task_registry import get_task
from .finetune import finetune

__all__ = ["compare", "parse_backbones", "cpu_ms_per_image"]


def columns(task) -> list[str]:
    """leaderboard.csv's columns: the task's scores between the run's identity and its costs."""
    return [
        "backbone",
        "weights",
        "split",
        *score_columns(task.evaluation.scores),
        "vs_next_p",
        "distinguishable_from_next",
        "train_seconds",
        "params",
        "cpu_ms_per_image",
        "run",
    ]


def parse_backbones(spec: str) -> list[tuple[str, str]]:
    """ "a,b:none" → [("a", ""), ("b", "none")]: a backbone name, optionally with its weights."""
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, weights = item.partition(":")
        if problem := backbone_name_problem(name):
            raise RecipeError(f"--backbones: {problem}")
        out.append((name, weights))
    if not out:
        raise RecipeError("--backbones is empty; give a comma-separated list, e.g. efficientnet_lite0,simple_cnn")
    return out


def cpu_ms_per_image(model: torch.nn.Module, size: int, bs: int = 32, repeats: int = 3) -> float:
    """Forward time per image on the CPU, batch `bs`, after one warm-up batch."""
    model = model.eval().cpu()
    x = torch.randn(bs, 3, size, size)
    with torch.no_grad():
        model(x)
        t = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t) / (repeats * bs) * 1000


def _label(row: dict) -> str:
    return row["backbone"] + ("" if row["weights"] == "default" else f":{row['weights']}")


def compare(recipe: Recipe, backbones: list[tuple[str, str]], log=print, roots: Roots | None = None) -> list[dict]:
    """Fine-tune each backbone into runs/NAME--BACKBONE; write runs/NAME/leaderboard.{csv,png}."""
    roots = roots or Roots.from_env()
    data = roots.dataset(recipe.name)
    task = get_task(recipe.task)
    rows, metrics = [], {}
    for name, weights in backbones:
        log(f"== {name}{':' + weights if weights else ''}")
        r = replace(
            recipe,
            name=f"{recipe.name}--{name.replace('/', '-')}{'-' + weights if weights else ''}",
            finetune=replace(recipe.finetune, backbone=name, weights=weights),
        )
        res = finetune(r, log=log, data_root=data, roots=roots)
        split = "test" if "test" in res.metrics else "valid"
        m = res.metrics[split]
        metrics[str(res.run)] = m
        rows.append(
            dict(
                backbone=name,
                weights=weights or "default",
                split=split,
                **score_cells(m, task.evaluation.scores),
                train_seconds=res.timings.get("train_total", 0.0),
                params=sum(p.numel() for p in res.learn.model.parameters()),
                cpu_ms_per_image=round(cpu_ms_per_image(res.learn.model, r.finetune.size), 2),
                run=str(res.run),
            )
        )
    rows.sort(key=lambda x: (*(-x[k] for k in task.evaluation.rank), x["train_seconds"]))
    for a, b in zip(rows, rows[1:] + [None]):  # each entry against the next one down, on the same images
        if b is None:
            a["vs_next_p"], a["distinguishable_from_next"] = "", ""
            continue
        v = versus(metrics[a["run"]], metrics[b["run"]], task.evaluation.rank[0])
        a["vs_next_p"] = round(v["p"], 4) if v["p"] == v["p"] else ""
        a["distinguishable_from_next"] = v["distinguishable"]
        if a is rows[0]:
            log("  best " + says(_label(a), _label(b), v, a["split"]))
    out = RunFolder(roots.run(recipe.name))
    write_csv(out.leaderboard_csv, rows, columns(task))
    plot_leaderboard(rows, out.leaderboard_png, f"{recipe.name}: {rows[0]['split']} split", task.evaluation.scores)
    return rows
