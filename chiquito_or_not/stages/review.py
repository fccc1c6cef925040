"""The review stage: rank a dataset's images by how likely their label is wrong (the task's ranking), and
a page on 127.0.0.1 where the user keeps, relabels or excludes them; every decision goes to
datasets/NAME/review.csv as it is made, and `chiquito dataset` applies them. No source file is touched."""

import json
import secrets
from importlib import resources
from pathlib import Path

from ..core.errors import RunError
from ..core.layout import DatasetFolder, RunFolder
from ..core.paths import dataset_dir
from ..core.recipe import load_recipe, load_resolved
from ..core.task_registry import get_task
from ..data.review_log import DECISIONS, ReviewLog, last_decisions

__all__ = ["resolve_target", "find_suspects", "create_review_app", "local_page_app", "read_json_object", "LOCAL_HOSTS"]

LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def resolve_target(target: str | Path) -> tuple:
    """(recipe, dataset folder, run folder or None) from a recipe file or a run folder."""
    p = Path(target)
    if p.is_file() and p.suffix == ".toml":
        recipe = load_recipe(p)
        return recipe, dataset_dir(recipe.name), None
    if p.is_dir():
        run = RunFolder(p)
        if not run.recipe.is_file():
            raise RunError(f"{p}: not a run folder (no recipe.json); pass recipes/NAME.toml or runs/NAME")
        recipe = load_resolved(run.recipe)
        state = json.loads(run.state.read_text()) if run.state.is_file() else {}
        root = Path(state["dataset"]) if state.get("dataset") else dataset_dir(recipe.name)
        return recipe, root, (p if run.model.is_file() else None)
    raise RunError(f"{p}: neither a recipe file nor a run folder; pass recipes/NAME.toml or runs/NAME")


def find_suspects(target: str | Path, folds: int = 5, log=print) -> dict:
    """The task's suspects for the target's dataset (a run's model.pkl, a pickle, is loaded when given),
    with each image's current decision from review.csv."""
    recipe, root, run = resolve_target(target)
    res = get_task(recipe.task).review_suspects(recipe, root, run, folds, log)
    res.update(name=recipe.name, recipe=str(recipe.path), run=str(run) if run else "")
    if res.get("page") == "label":  # boxes: the label page shows them, its journal has the decisions
        return res | {"model": None, "threshold": recipe.detect.score_threshold}
    last, problems = last_decisions(DatasetFolder(root).review)
    for it in res["items"]:
        d = last.get(it["sha256"])
        it["decision"], it["decided_label"] = (d.decision, d.label) if d else ("", "")
    res.update(review_problems=problems)
    return res


def local_page_app(what: str, html: str, name: str):
    """(FastAPI app, token) serving static/`html` at / with a fresh token and script nonce filled in, a
    strict CSP, a Host check (DNS rebinding: another site's name resolving to 127.0.0.1 is refused) and
    errors as JSON: the review and label pages' common stack."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    token, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    page = resources.files("chiquito_or_not").joinpath(f"static/{html}").read_text(encoding="utf-8")
    page = page.replace("{{TOKEN}}", token).replace("{{NONCE}}", nonce).replace("{{NAME}}", name)
    csp = (
        f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    app = FastAPI(title=f"chiquito_or_not {what}", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    return app, token


async def read_json_object(request, limit: int):
    """(the request's JSON object, None) or (None, (status, message)): not JSON, over `limit` bytes,
    nested past the parser's depth, or not an object are each a 4xx, never a 500. A client that goes
    away mid-body is a 400 too (nobody is left to read it)."""
    from starlette.requests import ClientDisconnect

    if not request.headers.get("content-type", "").startswith("application/json"):
        return None, (415, "send application/json")
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None, (413, f"the body is over {limit} bytes")
    except ClientDisconnect:
        return None, (400, "the client went away before the body ended")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, (400, "the body is not valid JSON")
    return (data, None) if isinstance(data, dict) else (None, (400, "send a JSON object"))


def create_review_app(res: dict, show: int = 200):
    """The review page and its JSON API over `res` (find_suspects' result); holds review.csv's lock
    (ReviewLog) for the app's life: close it with app.state.log.close()."""
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.exceptions import HTTPException

    folder = DatasetFolder(Path(res["root"]))
    log = ReviewLog(folder.review).open()
    items = res["items"][:show]
    by_sha = {it["sha256"]: it for it in items}
    files = {it["sha256"]: folder.root / it["file"] for it in items}
    for d in res["duplicates"]:  # shown, not decided: the dataset stage already leaves them out
        if d["clean_path"]:
            files.setdefault(d["sha256"], folder.clean / d["clean_path"])
    app, token = local_page_app("review", "review.html", res["name"])
    app.state.log = log

    @app.get("/api/suspects")
    def suspects():
        return {
            "name": res["name"],
            "classes": res["classes"],
            "items": items,
            "total": len(res["items"]),
            "issues": res["issues"],
            "duplicates": res["duplicates"],
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
        if (
            not isinstance(label, str)
            or label not in res["classes"]
            or (decision == "relabel" and label == it["label"])
        ):
            return JSONResponse({"error": f"relabel to another class: {', '.join(res['classes'])}"}, status_code=400)
        from starlette.concurrency import run_in_threadpool

        try:
            d = await run_in_threadpool(log.write, it["sha256"], it["path"], decision, label)
        except OSError as e:  # review.csv replaced by a folder, a full disk: not saved, and the page says so
            return JSONResponse({"error": f"NOT saved: cannot write {log.path} ({e.strerror or e})"}, status_code=507)
        it["decision"], it["decided_label"] = d.decision, d.label
        return {"sha256": d.sha256, "decision": d.decision, "label": d.label, "time": d.time}

    return app
