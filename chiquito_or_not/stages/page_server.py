"""The review and label pages' common server: one page from static/ behind a token, a script nonce, a strict
CSP and a Host check, and request bodies read as bounded JSON objects."""

import json
import secrets
from importlib import resources

__all__ = ["local_page_app", "read_json_object", "LOCAL_HOSTS"]

LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


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
