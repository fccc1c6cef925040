"""The label stage: a page on 127.0.0.1 where the user draws and fixes boxes (detection datasets).

It lists the images whose boxes are missing or had problems in the last `chiquito dataset` (the task's
label_items), shows each in its stored pixels, and, when the recipe's run has a model.pkl, offers its
detections as suggestions. Each save is one line appended and synced to datasets/NAME/box_labels.csv
before the page hears "saved"; `chiquito dataset` applies it by content hash. No source file is touched.
The review page's stack: a token on every write, a Host check, a strict CSP, one page per dataset.
"""

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ChiquitoError
from ..core.layout import RunFolder
from ..core.model_loader import load_model
from ..core.paths import Roots
from ..core.recipe import Recipe
from ..core.task_registry import LabelItems, Task, get_task
from .page_server import local_page_app, read_json_object

__all__ = ["LabelPage", "find_label_items", "create_label_app"]

MAX_BODY = 2**20  # a page of boxes is a few kB


@dataclass(frozen=True)
class LabelPage:
    """What one label page shows: the images and their boxes, and the model whose detections it suggests."""

    name: str  # the recipe's name
    task: Task
    listing: LabelItems
    model: object | None = None  # a RuntimeModel, or None: no suggestions but the listing's own
    threshold: float | None = None  # the model's score threshold for suggestions


def find_label_items(
    recipe: Recipe, everything: bool = False, log=print, use_run: bool = True, roots: Roots | None = None
) -> LabelPage:
    """The images to label for a recipe, and its run's model.pkl (loaded: a pickle runs the code it holds)
    when one exists and `use_run`; its dataset and run under `roots` (default Roots.from_env())."""
    roots = roots or Roots.from_env()
    task = get_task(recipe.task)
    if task.label is None:
        raise ChiquitoError(
            f"{recipe.path}: label draws boxes for detection recipes; a {task.name} recipe's labels are not "
            "boxes: fix them with `chiquito review`"
        )
    listing = task.label.items(recipe, roots, roots.dataset(recipe.name), log, everything)
    model_file = RunFolder(roots.run(recipe.name)).model
    model = load_model(model_file, roots=roots) if use_run and model_file.is_file() else None
    return LabelPage(recipe.name, task, listing, model, recipe.detect.score_threshold)


def _stored_jpeg(path: Path) -> bytes:
    """The image's stored pixels (no EXIF rotation: boxes are in those pixels) as a JPEG."""
    from PIL import Image

    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _suggestions(page: LabelPage, it: dict) -> list:
    """The run's detections of the item's image, or the ones it came with (review: out-of-fold)."""
    from PIL import Image

    if "predicted" in it:
        return it["predicted"]
    model = page.model
    with Image.open(page.listing.files[it["sha256"]]) as im:
        out = get_task(model.task).inference.predict_image(model, im.convert("RGB"), threshold=page.threshold)
    return [[b["label"], *(round(float(v), 1) for v in b["box"]), round(float(b["score"]), 3)] for b in out["boxes"]]


def create_label_app(page: LabelPage):
    """The label page and its JSON API over `page` (find_label_items' result); holds the journal's lock for
    the app's life (a second page on the dataset is refused): close it with app.state.journal.close()."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    label, listing = page.task.label, page.listing
    journal = label.journal(listing.root).open()
    by_sha = {it["sha256"]: it for it in listing.items}
    app, token = local_page_app("label", "label.html", page.name)
    app.state.journal = journal

    @app.get("/api/items")
    def items():
        return {
            "name": page.name,
            "labels": list(listing.labels),
            "items": listing.items,
            "journal": str(journal.path),
            "suggestions": page.model is not None or any("predicted" in it for it in listing.items),
            "journal_problems": listing.problems,
        }

    def item(sha: str) -> dict:
        it = by_sha.get(sha)  # only the images listed: never a path from the request
        if it is None:
            raise HTTPException(404, "no such image on this page")
        return it

    @app.get("/image/{sha}")
    async def image(sha: str):
        data = await run_in_threadpool(_stored_jpeg, listing.files[item(sha)["sha256"]])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/suggest/{sha}")
    async def suggest(sha: str):
        it = item(sha)
        if page.model is None and "predicted" not in it:
            return {"boxes": []}
        return {"boxes": await run_in_threadpool(_suggestions, page, it)}

    @app.post("/api/boxes")
    async def save(request: Request):
        if not secrets.compare_digest(request.headers.get("x-label-token", ""), token):
            return JSONResponse({"error": "missing or wrong X-Label-Token: reload the page"}, status_code=403)
        body, problem = await read_json_object(request, MAX_BODY)
        if problem:
            return JSONResponse({"error": problem[1]}, status_code=problem[0])
        it = by_sha.get(body.get("sha256")) if isinstance(body.get("sha256"), str) else None
        if it is None:
            return JSONResponse({"error": "send {sha256 of a listed image, boxes}"}, status_code=400)
        try:
            boxes = label.check_boxes(body.get("boxes"), list(listing.labels), it["width"], it["height"])
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        try:
            time = await run_in_threadpool(journal.write, it["sha256"], it["path"], it["width"], it["height"], boxes)
        except OSError as e:  # the journal replaced by a folder, a full disk: not saved, and the page says so
            return JSONResponse(
                {"error": f"NOT saved: cannot write {journal.path} ({e.strerror or e})"}, status_code=507
            )
        it["boxes"], it["saved"] = boxes, True
        return {"sha256": it["sha256"], "boxes": boxes, "time": time}

    return app
