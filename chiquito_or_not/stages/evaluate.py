"""The evaluate stage: reload the exported model.pkl and measure it with its task on the run's valid and
test splits, or on a labelled folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import RunError
from ..core.files import atomic_write_text
from ..core.layout import RunFolder
from ..core.model_loader import load_model
from ..core.paths import Roots
from ..core.recipe import load_recipe
from ..core.task_registry import task_of_model

__all__ = ["evaluate", "resolve_run"]


def resolve_run(target: str | Path, roots: Roots | None = None) -> Path:
    """A run folder from a recipe file (its run folder under `roots`, default Roots.from_env()) or a run
    folder itself."""
    p = Path(target)
    if p.is_file() and p.suffix == ".toml":
        return (roots or Roots.from_env()).run(load_recipe(p).name)
    if p.is_dir():
        return p
    raise RunError(f"{p}: neither a recipe file nor a run folder; pass recipes/NAME.toml or runs/NAME")


def evaluate(
    target: str | Path,
    data: Path | None = None,
    out: Path | None = None,
    top_k: int = 9,
    log=print,
    notice=None,
    model_file: Path | None = None,
    roots: Roots | None = None,
) -> dict:
    """Metrics and figures of the run's exported model.pkl on its valid (and test) split, or on `data`;
    `model_file` (a model.onnx or model.tflite export) is scored itself instead, the figure a phone gives,
    into runs/NAME/eval-FILE/ unless `out` says otherwise. `notice` is load_model's pickle warning
    (finetune silences it for the file it has just written)."""
    run = resolve_run(target, roots)
    files = RunFolder(run)
    path = Path(model_file) if model_file else files.model
    if not path.is_file():
        fix = (
            "export it with `chiquito export RUN --format ...`"
            if model_file
            else "run `chiquito finetune RECIPE` first"
        )
        raise RunError(f"{path}: no such model file; {fix}")
    model = load_model(path, notice=notice, roots=roots)  # a .pkl is a pickle: loading it runs the code it holds
    task = task_of_model(model)
    if model_file and out is None and data is None:
        out = run / f"eval-{path.name}"
    if data is not None:
        data = Path(data)
        out = Path(out) if out else files.eval_dir(data)
        res = {"data": task.evaluation.evaluate_set(model, data.name, data, out, "", top_k, log)}
    else:
        state = json.loads(files.state.read_text()) if files.state.is_file() else {}
        root = Path(state.get("dataset", ""))
        if not (root / "valid").is_dir():
            raise RunError(f"{run}: its dataset folder {root} has no valid/ split; pass --data FOLDER")
        out = Path(out) if out else run
        res = {"valid": task.evaluation.evaluate_set(model, "valid", root / "valid", out, "", top_k, log, split=True)}
        if (root / "test").is_dir():
            res["test"] = task.evaluation.evaluate_set(
                model, "test", root / "test", out, "_test", top_k, log, split=True
            )
    res["model"] = str(path)
    atomic_write_text(out / "metrics.json", json.dumps(res, indent=2) + "\n")
    return res
