"""Serve: a FastAPI app with the exported model loaded once — an HTML page and a JSON API."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .clean import clean_one
from .download import DownloadPolicy, FetchError, fetch_bytes
from .predict import ACCEPT, load_model, model_probabilities, model_vocab

__all__ = ["create_app", "check_public_url"]

# fetch failures → HTTP status; all are the client's problem (4xx), never a 500
FETCH_STATUS = {"bad_scheme": 400, "private_address": 403, "too_large": 413, "not_image_content_type": 415,
                "timeout": 422, "connection_error": 422, "too_many_redirects": 422, "bad_redirect": 422}


def check_public_url(url: str) -> None:
    """Refuse URLs whose host resolves to loopback, private, link-local, multicast or reserved addresses."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError("connection_error", f"cannot resolve {host!r}: {e}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified):
            raise FetchError("private_address", f"{host} resolves to {ip}, which is not a public address")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(model_path: str | Path, max_bytes: int = 10 * 1024 * 1024, allow_private_urls: bool = False,
               fetch_timeout: float = 10.0) -> FastAPI:
    """The app; the model is loaded here, once, and never from a request."""
    learn = load_model(model_path)
    vocab = model_vocab(learn)
    lock = threading.Lock()  # one inference at a time: memory stays bounded under concurrent requests
    policy = DownloadPolicy(read_timeout=fetch_timeout, connect_timeout=min(5.0, fetch_timeout),
                            max_bytes=max_bytes, max_redirects=5, retries=0)
    guard = None if allow_private_urls else check_public_url
    page = resources.files("chiquito_or_not").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="chiquito_or_not", description=f"Classifies pictures as {', '.join(vocab)}.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page.replace("{{CLASSES}}", " / ".join(vocab)).replace("{{MAX_MB}}", f"{max_bytes / 2**20:g}")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "classes": vocab, "model": Path(model_path).name}

    @app.post("/api/predict")
    async def predict(request: Request):
        """Multipart `file`, or JSON {"url": ...}: label, probabilities and timing."""
        t0 = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        timing = {}
        if ctype.startswith("multipart/form-data"):
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes + 64 * 1024:
                return _error(413, f"upload over the {max_bytes} byte limit")
            form = await request.form(max_files=1, max_fields=5)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return _error(400, "send the image as a multipart field named 'file'")
            data = await upload.read(max_bytes + 1)
            await form.close()
            if len(data) > max_bytes:
                return _error(413, f"upload over the {max_bytes} byte limit")
        elif ctype.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "the body is not valid JSON")
            url = body.get("url") if isinstance(body, dict) else None
            if not isinstance(url, str) or not url:
                return _error(400, 'send {"url": "https://..."} or a multipart file')
            try:
                data, _, _ = await _in_thread(fetch_bytes, url, policy, guard)
            except FetchError as e:
                return _error(FETCH_STATUS.get(e.reason, 422), f"cannot use that URL: {e.reason} ({e.detail})")
            timing["fetch_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        else:
            return _error(415, "send multipart/form-data with a 'file', or application/json with a 'url'")
        if not data:
            return _error(400, "the image is empty")
        t1 = time.perf_counter()
        reason, detail, im = await _in_thread(clean_one, data, ACCEPT)
        if reason:
            status = 413 if reason == "decompression_bomb" else 415 if reason in ("not_an_image", "animated") else 422
            return _error(status, f"not a usable image: {reason} ({detail})")
        timing["decode_ms"] = round((time.perf_counter() - t1) * 1000, 1)
        t2 = time.perf_counter()

        def infer():
            with lock:
                return model_probabilities(learn, [im])[0]

        probs = await _in_thread(infer)
        timing["predict_ms"] = round((time.perf_counter() - t2) * 1000, 1)
        timing["total_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        k = max(range(len(probs)), key=probs.__getitem__)
        return {"label": vocab[k], "probability": probs[k], "probabilities": dict(zip(vocab, probs)),
                "timing": timing}

    return app


async def _in_thread(fn, *args):
    """Run blocking work off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
