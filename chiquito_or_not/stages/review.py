"""The review stage: rank a dataset's images by how likely their label is wrong (the task's ranking), and
a page on 127.0.0.1 where the user keeps, relabels or excludes them; every decision goes to
datasets/NAME/review.csv as it is made, and `chiquito dataset` applies them. No source file is touched."""

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import RunError
from ..core.layout import DatasetFolder, RunFolder
from ..core.paths import Roots
from ..core.recipe import load_recipe, load_resolved
from ..core.task_registry import Suspects, Task, get_task
from ..data.review_log import DECISIONS, ReviewLog, last_decisions
from .label import LabelPage, create_label_app
from .page_server import local_page_app, read_json_object

__all__ = [
    "Review",
    "resolve_target",
    "find_suspects",
    "create_review_app",
    "review_page",
    "shown_on_label_page",
]


def resolve_target(target: str | Path, roots: Roots) -> tuple:
    """(recipe, dataset folder, run folder or None) from a recipe file or a run folder."""
    p = Path(target)
    if p.is_file() and p.suffix == ".toml":
        recipe = load_recipe(p)
        return recipe, roots.dataset(recipe.name), None
    if p.is_dir():
        run = RunFolder(p)
        if not run.recipe.is_file():
            raise RunError(f"{p}: not a run folder (no recipe.json); pass recipes/NAME.toml or runs/NAME")
        recipe = load_resolved(run.recipe)
        state = json.loads(run.state.read_text()) if run.state.is_file() else {}
        root = Path(state["dataset"]) if state.get("dataset") else roots.dataset(recipe.name)
        return recipe, root, (p if run.model.is_file() else None)
    raise RunError(f"{p}: neither a recipe file nor a run folder; pass recipes/NAME.toml or runs/NAME")


@dataclass(frozen=True)
class Review:
    """find_suspects' result: a task's suspects for one dataset, and what they were found for."""

    name: str  # the recipe's name
    recipe: Path
    run: Path | None  # the run whose model ranked them too
    task: Task
    suspects: Suspects
    threshold: float | None = None  # a detector's score threshold, for the label page's suggestions
    review_problems: tuple = ()  # review.csv's lines that could not be used


def find_suspects(target: str | Path, folds: int = 5, log=print, roots: Roots | None = None) -> Review:
    """The task's suspects for the target's dataset (a run's model.pkl, a pickle, is loaded when given),
    with each image's current decision from review.csv; `roots` default Roots.from_env()."""
    roots = roots or Roots.from_env()
    recipe, root, run = resolve_target(target, roots)
    task = get_task(recipe.task)
    if task.review is None:
        raise RunError(f"{recipe.path}: the {task.name} task has no review; its labels are checked another way")
    found = task.review.suspects(recipe, roots, root, run, folds, log)
    run = Path(run) if run else None
    if task.label is not None:  # boxes: the label page shows them, its journal has the decisions
        return Review(recipe.name, recipe.path, run, task, found, threshold=recipe.detect.score_threshold)
    last, problems = last_decisions(DatasetFolder(root).review)
    for it in found.items:
        d = last.get(it["sha256"])
        it["decision"], it["decided_label"] = (d.decision, d.label) if d else ("", "")
    return Review(recipe.name, recipe.path, run, task, found, review_problems=tuple(problems))


def shown_on_label_page(res: Review) -> bool:
    """Whether the suspects are a task's that labels boxes (they go to the label page)."""
    return res.task.label is not None


def review_page(res: Review, show: int) -> tuple:
    """(the page app, its journal) for find_suspects' result: the label page for a task that labels boxes
    (it shows the first `show` images), else the review page."""
    if shown_on_label_page(res):
        items = res.task.label.suspects_page(res.suspects, show)
        app = create_label_app(LabelPage(res.name, res.task, items, model=None, threshold=res.threshold))
        return app, app.state.journal
    app = create_review_app(res, show=show)
    return app, app.state.log


def create_review_app(res: Review, show: int = 200):
    """The review page and its JSON API over `res` (find_suspects' result); holds review.csv's lock
    (ReviewLog) for the app's life: close it with app.state.log.close()."""
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.exceptions import HTTPException

    found = res.suspects
    folder = DatasetFolder(found.root)
    log = ReviewLog(folder.review).open()
    items = found.items[:show]
    by_sha = {it["sha256"]: it for it in items}
    files = {it["sha256"]: folder.root / it["file"] for it in items}
    for d in found.duplicates:  # shown, not decided: the dataset stage already leaves them out
        if d["clean_path"]:
            files.setdefault(d["sha256"], folder.clean / d["clean_path"])
    app, token = local_page_app("review", "review.html", res.name)
    app.state.log = log

    @app.get("/api/suspects")
    def suspects():
        return {
            "name": res.name,
            "classes": list(found.labels),
            "items": items,
            "total": len(found.items),
            "issues": found.issues,
            "duplicates": found.duplicates,
            "review_csv": str(folder.review),
        }

    @app.get("/image/{sha}")
    def image(sha: str):
        p = files.get(sha)  # only the images listed: never a path from the request
        if p is None or not p.is_file():
            raise HTTPException(404, "no such image in this review")
        return FileResponse(p, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/decision")
    async def decide(request: Request):
        if not secrets.compare_digest(request.headers.get("x-review-token", ""), token):
            return JSONResponse({"error": "missing or wrong X-Review-Token: reload the page"}, status_code=403)
        body, problem = await read_json_object(request, 4096)
        if problem:
            return JSONResponse({"error": problem[1]}, status_code=problem[0])
        sha, decision = body.get("sha256"), body.get("decision")
        it = by_sha.get(sha) if isinstance(sha, str) else None
        if it is None or not isinstance(decision, str) or decision not in DECISIONS:
            return JSONResponse(
                {"error": f"send {{sha256 of a listed image, decision: {'|'.join(DECISIONS)}}}"}, status_code=400
            )
        label = body.get("label") if decision == "relabel" else it["label"]
        if not isinstance(label, str) or label not in found.labels or (decision == "relabel" and label == it["label"]):
            return JSONResponse({"error": f"relabel to another class: {', '.join(found.labels)}"}, status_code=400)
        from starlette.concurrency import run_in_threadpool

        try:
            d = await run_in_threadpool(log.write, it["sha256"], it["path"], decision, label)
        except OSError as e:  # review.csv replaced by a folder, a full disk: not saved, and the page says so
            return JSONResponse({"error": f"NOT saved: cannot write {log.path} ({e.strerror or e})"}, status_code=507)
        it["decision"], it["decided_label"] = d.decision, d.label
        return {"sha256": d.sha256, "decision": d.decision, "label": d.label, "time": d.time}

    return app
