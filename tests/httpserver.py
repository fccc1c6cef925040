"""A real HTTP server on 127.0.0.1 that misbehaves on purpose, for the network tests and the benchmark."""

from __future__ import annotations

import contextlib
import http.server
import io
import re
import threading
import time
from collections import Counter

import numpy as np
from PIL import Image


def jpeg_bytes(seed: int, size: int = 96) -> bytes:
    """A distinct real-photo JPEG per seed (a crop of scikit-image's coffee photo)."""
    import skimage.data

    arr = skimage.data.coffee()
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, arr.shape[0] - size), rng.integers(0, arr.shape[1] - size)
    crop = arr[y : y + size, x : x + size].copy()
    crop[:8, :8] = [(seed >> 16) & 255, (seed >> 8) & 255, seed & 255]  # distinct bytes for every seed
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def blocks_jpeg(seed: int) -> bytes:
    """A distinct picture per seed, far from every other one in perceptual hash (no near duplicates)."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grid).resize((96, 96), Image.NEAREST).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up (the downloader cutting a drip at its deadline, Ctrl-C) are not server errors."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Running:
    """Start the server thread on enter; shut it down on exit."""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Server(_Running):
    """Routes by path; counts hits per path; `latency` seconds added to every request."""

    def __init__(self, latency: float = 0.0, ssl_context=None, host: str = "127.0.0.1", port: int = 0):
        self.hits: Counter = Counter()
        self.host_headers: list[str] = []
        self.requested: list[str] = []  # every request line's target, query included
        self.lock = threading.Lock()
        self.latency = latency
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (body, content type)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send_body(self, code, body, ctype, headers=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client went away (broken pipe, reset, TLS EOF): not the server's bug
                    pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                with server.lock:
                    server.host_headers.append(self.headers.get("Host", ""))
                    server.requested.append(self.path)
                    server.hits[path] += 1
                    n = server.hits[path]
                if server.latency:
                    time.sleep(server.latency)
                server.route(self, path, n)

        self.httpd = _QuietServer((host, port), Handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if ssl_context is not None else "http"
        self.port = self.httpd.server_address[1]
        self.base = f"{scheme}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, h, path: str, n: int):
        if path in self.files:
            body, ctype = self.files[path]
            return h.send_body(200, body, ctype)
        if m := re.fullmatch(r"/img/(\d+)\.jpg", path):
            return h.send_body(200, jpeg_bytes(int(m.group(1))), "image/jpeg")
        if path == "/flaky.jpg":  # 500 twice, then the image
            return (
                h.send_body(500, b"oops", "text/plain") if n <= 2 else h.send_body(200, jpeg_bytes(1001), "image/jpeg")
            )
        if path == "/busy.jpg":  # 429 with Retry-After once, then the image
            return (
                h.send_body(429, b"slow down", "text/plain", [("Retry-After", "1")])
                if n == 1
                else h.send_body(200, jpeg_bytes(1002), "image/jpeg")
            )
        if path == "/always500.jpg":
            return h.send_body(503, b"down", "text/plain")
        if path == "/slow.jpg":
            time.sleep(3)
            return h.send_body(200, jpeg_bytes(1003), "image/jpeg")
        if path == "/go":  # redirect to the URL in ?to= (the fuzz test's redirect variants)
            from urllib.parse import parse_qs, urlsplit

            to = parse_qs(urlsplit(h.path).query).get("to", [""])[0]
            return h.send_body(302, b"", "text/plain", [("Location", to.encode().decode("latin-1"))])  # raw UTF-8
        if path == "/drip.jpg":  # one byte every 0.4 s, each read well within any read timeout
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            try:
                for _ in range(1000):
                    h.wfile.write(b"\xff")
                    h.wfile.flush()
                    time.sleep(0.4)
            except OSError:
                pass
            return None
        if path == "/loop":
            return h.send_body(302, b"", "text/plain", [("Location", "/loop")])
        if path == "/to-ftp":
            return h.send_body(302, b"", "text/plain", [("Location", "ftp://127.0.0.1/x.jpg")])
        if path == "/to-localhost":  # same server, under a name that resolves to loopback
            port = self.base.rsplit(":", 1)[1]
            return h.send_body(302, b"", "text/plain", [("Location", f"http://localhost:{port}/img/1.jpg")])
        if path == "/redirect-ok":
            return h.send_body(301, b"", "text/plain", [("Location", "/img/7.jpg")])
        if path == "/big.jpg":
            return h.send_body(200, jpeg_bytes(1004, size=300) + b"\0" * 300_000, "image/jpeg")
        if path == "/html.jpg":
            return h.send_body(200, b"<html><body>consent page</body></html>", "image/jpeg")
        if path == "/page.html":
            return h.send_body(200, b"<html>hi</html>", "text/html")
        if path == "/truncated.jpg":
            whole = jpeg_bytes(1005, size=200)
            return h.send_body(200, whole[: len(whole) // 2], "image/jpeg")
        if path == "/pixel.png":
            return h.send_body(200, png_bytes(1, 1), "image/png")
        return h.send_body(404, b"not found", "text/plain")


def tls_server_context(tmp_path, *names: str):
    """(server SSL context, CA file path): a test CA that signed a certificate for `names`."""
    import ssl

    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ctx, ca_file


class Proxy(_Running):
    """A real forward HTTP proxy on 127.0.0.1 (absolute-URI GETs and CONNECT tunnels) that counts what it
    carried: `requests` (GET URLs) and `tunnels` (CONNECT host:port)."""

    def __init__(self):
        import select
        import socket
        import urllib.request

        self.requests: list[str] = []
        self.tunnels: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                proxy.requests.append(self.path)
                req = urllib.request.Request(self.path, headers={"User-Agent": self.headers.get("User-Agent", "")})
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
                try:
                    r = opener.open(req, timeout=10)
                    code, headers, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    code, headers, body = e.code, e.headers, e.read()
                except (urllib.error.URLError, OSError):
                    self.send_error(502)
                    return
                self.send_response(code)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_CONNECT(self):  # noqa: N802
                proxy.tunnels.append(self.path)
                host, port = self.path.rsplit(":", 1)
                try:
                    upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
                except OSError:  # the browser's own background hosts: unreachable offline
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                conns = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(conns, [], [], 10)
                        if not ready:
                            break
                        for s in ready:
                            data = s.recv(65536)
                            if not data:
                                return
                            (upstream if s is self.connection else self.connection).sendall(data)
                except OSError:
                    pass
                finally:
                    upstream.close()
                    self.close_connection = True

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


import urllib.error  # noqa: E402
import urllib.request  # noqa: E402


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


@contextlib.contextmanager
def app_on_loopback(app, **config):
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a thread: yields the port; stops after.
    `config`: more uvicorn.Config settings (log_config=None sends its log to the logging module)."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def chrome_options(profile, window: str = "420,900"):
    """Headless Debian Chromium on a closed network, with its own profile folder."""
    import shutil

    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
    ):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    return opts


@contextlib.contextmanager
def app_in_chromium(app, profile, window: str = "420,900"):
    """Serve an ASGI app with uvicorn on a free loopback port and open headless Chromium (Debian's
    chromium + chromium-driver) on a closed network: yields (browser, base URL); both stop after."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with app_on_loopback(app) as port:
        browser = webdriver.Chrome(
            service=Service(shutil.which("chromedriver")), options=chrome_options(profile, window)
        )
        try:
            yield browser, f"http://127.0.0.1:{port}"
        finally:
            browser.quit()
