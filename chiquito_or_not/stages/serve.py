"""Serve: a FastAPI app with the exported model loaded once — an HTML page and a JSON API."""

from __future__ import annotations

import json
import threading
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from ..core.errors import ImageRefused
from ..core.http_fetch import FetchError, FetchPolicy, fetch_image
from ..core.images import ACCEPT, clean_one
from ..core.model_loader import load_model
from ..core.paths import Roots
from ..core.reasons import Reason
from ..core.task_registry import task_of_model

__all__ = ["create_app"]

# fetch failures → HTTP status; all are the client's problem (4xx), never a 500
FETCH_STATUS = {
    "bad_scheme": 400,
    "bad_url": 400,
    "private_address": 403,
    "too_large": 413,
    "not_image_content_type": 415,
    "timeout": 422,
    "deadline": 422,
    "connection_error": 422,
    "tls_error": 422,
    "too_many_redirects": 422,
    "bad_redirect": 422,
}
MAX_JSON_BYTES = 16 * 1024  # {"url": ...}: a URL is at most 4096 characters
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    """A request the app answers with `status` and {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes `limit` bytes whatever Content-Length says (or lacks)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _TooLarge
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _TooLarge
    except ClientDisconnect:  # nobody is left to answer: a 400 for the log, not a traceback
        raise _Refused(400, "the client went away before the body ended") from None
    return bytes(body)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Service:
    """The loaded model and the limits every request is held to: one inference at a time, so memory stays
    bounded under concurrent requests."""

    def __init__(self, model, max_bytes: int, policy: FetchPolicy):
        self.model, self.task, self.max_bytes, self.policy = model, task_of_model(model), max_bytes, policy
        self.lock = threading.Lock()

    async def upload(self, request: Request, timing: dict) -> bytes:
        """The bytes of a multipart `file` field, at most max_bytes."""
        try:
            raw = await _read_capped(request, self.max_bytes + MULTIPART_SLACK)
        except _TooLarge:
            raise _Refused(413, f"upload over the {self.max_bytes} byte limit") from None
        sent = False

        async def replay():  # the capped body, handed to Starlette's multipart parser
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=5)
        except (HTTPException, ValueError, KeyError) as e:
            raise _Refused(400, f"the multipart body cannot be read ({getattr(e, 'detail', e)})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            await form.close()
            raise _Refused(400, "send the image as a multipart field named 'file'")
        data = await upload.read(self.max_bytes + 1)
        await form.close()
        if len(data) > self.max_bytes:
            raise _Refused(413, f"upload over the {self.max_bytes} byte limit")
        return data

    async def linked(self, request: Request, timing: dict) -> bytes:
        """The bytes at the URL of a JSON {"url": ...} body, fetched with the app's policy."""
        t0 = time.perf_counter()
        try:
            body = json.loads(await _read_capped(request, MAX_JSON_BYTES))
        except _TooLarge:
            raise _Refused(413, f'a JSON body is at most {MAX_JSON_BYTES} bytes: send {{"url": ...}} only') from None
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested deeper than Python parses
            raise _Refused(400, "the body is not valid JSON (or is nested too deeply)") from None
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise _Refused(400, 'send {"url": "https://..."} or a multipart file')
        try:
            data, _, _ = await _in_thread(fetch_image, url, self.policy)
        except FetchError as e:
            raise _Refused(FETCH_STATUS.get(e.reason, 422), f"cannot use that URL: {e.reason} ({e.detail})") from None
        timing["fetch_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return data

    async def answer(self, data: bytes, timing: dict) -> dict:
        """Decode `data` as every stage does, then the task's answer for it."""
        if not data:
            raise _Refused(400, "the image is empty")
        t1 = time.perf_counter()
        reason, detail, im = await _in_thread(clean_one, data, ACCEPT)
        if reason:
            status = (
                413
                if reason == Reason.DECOMPRESSION_BOMB
                else 415
                if reason in (Reason.NOT_AN_IMAGE, Reason.ANIMATED)
                else 422
            )
            raise _Refused(status, f"not a usable image: {reason} ({detail})")
        timing["decode_ms"] = round((time.perf_counter() - t1) * 1000, 1)
        t2 = time.perf_counter()

        def infer():
            with self.lock:
                return self.task.inference.predict_image(self.model, im)

        try:
            payload = await _in_thread(infer)
        except ImageRefused as e:  # a model trained on face crops, and no face in the picture
            raise _Refused(422, str(e)) from None
        timing["predict_ms"] = round((time.perf_counter() - t2) * 1000, 1)
        return payload


# a request's content type → how its image arrives
_READERS = {"multipart/form-data": _Service.upload, "application/json": _Service.linked}


def _error_handlers(app: FastAPI) -> None:
    """Every answer has the documented {"error": ...} shape, FastAPI's own 404/405/422 included."""

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return _error(422, "invalid request: " + "; ".join(str(e.get("msg", e)) for e in exc.errors()[:3]))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):  # a bug of ours: say so in the same shape
        return _error(500, f"internal error ({type(exc).__name__}); please report it")


def create_app(
    model_path: str | Path,
    max_bytes: int = 10 * 1024 * 1024,
    allow_private_urls: bool = False,
    fetch_timeout: float = 10.0,
    allow_networks: tuple[str, ...] = (),
    roots: Roots | None = None,
) -> FastAPI:
    """The app; the model is loaded here, once, from the operator's file and never from a request
    (a .pkl is a pickle: loading it runs code it contains)."""
    # fetch_timeout is the whole fetch (redirects and body); no single read may wait longer either
    policy = FetchPolicy(
        read_timeout=fetch_timeout,
        connect_timeout=min(5.0, fetch_timeout),
        deadline=fetch_timeout,
        max_bytes=max_bytes,
        max_redirects=5,
        retries=0,
        allow_private=allow_private_urls,
        allow_networks=tuple(allow_networks),
    )
    svc = _Service(load_model(model_path, roots=roots), max_bytes, policy)
    vocab = svc.model.vocab
    page = resources.files("chiquito_or_not").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="chiquito_or_not", description=f"A {svc.task.name} model: {', '.join(vocab)}.")
    _error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page.replace("{{CLASSES}}", " / ".join(vocab)).replace("{{MAX_MB}}", f"{max_bytes / 2**20:g}")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "classes": vocab, "model": Path(model_path).name}

    @app.post("/api/predict")
    async def predict(request: Request):
        """Multipart `file`, or JSON {"url": ...}: the task's answer (a classifier: label and
        probabilities) and timing."""
        t0 = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        read = next((fn for kind, fn in _READERS.items() if ctype.startswith(kind)), None)
        if read is None:
            return _error(415, "send multipart/form-data with a 'file', or application/json with a 'url'")
        timing: dict = {}
        try:
            payload = await svc.answer(await read(svc, request, timing), timing)
        except _Refused as e:
            return _error(e.status, str(e))
        timing["total_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return {**payload, "timing": timing}

    return app


async def _in_thread(fn, *args):
    """Run blocking work off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
