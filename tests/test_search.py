"""Web image search on loopback: ddgs against recorded Bing pages, google-images-download driving real Chromium."""

import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("ddgs", reason="needs the web extra: pip install 'chiquito-or-not[web]'")

from chiquito_or_not.core.errors import SourceError
from chiquito_or_not.core.recipe import load_recipe
from chiquito_or_not.data.search import search_images
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import save_crops, write_recipe
from .httpserver import Server, tls_server_context


def bing_page(base: str, first: int, n: int) -> bytes:
    """A page in the markup Bing's images/async endpoint answers with (what ddgs parses)."""
    items = []
    for i in range(first, first + n):
        m = json.dumps(
            {
                "murl": f"{base}/img/{i}.jpg",
                "purl": f"{base}/article/{i}.html",
                "turl": f"{base}/thumb/{i}.jpg",
                "t": f"photo {i}",
            }
        )
        items.append(
            f"<div><div class='imgpt'><a class='iusc' m='{m}' href='#'>img</a>"
            f"<div class='img_info hon'><span class='nowrap'>96 x 96 · jpeg</span></div></div>"
            f"<div class='infopt'><div class='lnkw'><a>example.org</a></div></div></div>"
        )
    return ("<html><body>" + "".join(items) + "</body></html>").encode()


@pytest.fixture
def bing(monkeypatch):
    """A loopback server answering like Bing images for two pages, then with 429; ddgs pointed at it."""
    import ddgs.engines.bing_images as bing_images

    with Server() as s:
        plain = s.route

        def route(h, path, n):
            if path == "/images/async":
                first = int(parse_qs(urlsplit(h.path).query).get("first", ["1"])[0])
                if first > 70:
                    return h.send_body(429, b"Too Many Requests", "text/plain")
                return h.send_body(200, bing_page(s.base, first, 35), "text/html")
            return plain(h, path, n)

        s.route = route
        monkeypatch.setattr(bing_images.BingImages, "search_url", s.base + "/images/async")
        yield s


def test_ddgs_pages_until_it_is_refused_and_says_so(bing, tmp_path):
    manifest = tmp_path / "candidates.jsonl"
    cands, reports = search_images("ddgs", ["chiquito de la calzada"], 200, manifest, {"engine": "bing"})
    assert len(cands) == 70 and [c["rank"] for c in cands] == list(range(1, 71))
    assert cands[0]["image_url"].endswith("/img/1.jpg") and cands[0]["source_page"].endswith("/article/1.html")
    assert reports[0].summary().startswith("ddgs 'chiquito de la calzada': found 70 of 200: ")
    assert "after 2 page(s)" in reports[0].summary()
    lines = manifest.read_text().splitlines()
    assert len(lines) == 70 and json.loads(lines[0])["backend"] == "ddgs"
    hits = bing.hits["/images/async"]
    replay, again = search_images("ddgs", ["chiquito de la calzada"], 200, manifest, {"engine": "bing"})
    assert replay == cands and again == [] and bing.hits["/images/async"] == hits  # replayed offline


def test_ddgs_merges_queries_and_stops_at_the_limit(bing, tmp_path):
    cands, reports = search_images("ddgs", ["a", "b"], 40, tmp_path / "m.jsonl", {"engine": "bing"})
    assert [r.stopped for r in reports] == ["limit reached", "limit reached"]
    assert len(cands) == 40  # both queries return the same URLs: merged without duplicates


def ddgs_recipe_text(tmp_path: Path, limit: int) -> str:
    """A recipe: 'hit' from the ddgs search for "coffee" (the bing fixture), 'other' from 12 local photos."""
    save_crops(tmp_path / "neg", "rocket", 12, seed=4)
    return f"""
[dataset]
min_size = 32
valid = 3
balance = "none"
[[classes.hit.sources]]
kind = "image_search"
query = "coffee"
backend = "ddgs"
engine = "bing"
limit = {limit}
[[classes.other.sources]]
kind = "folder"
path = "{tmp_path / "neg"}"
"""


def test_image_search_source_downloads_into_a_dataset(bing, roots, tmp_path):
    text = ddgs_recipe_text(tmp_path, 20)
    logs = []
    s = build_dataset(load_recipe(write_recipe(tmp_path / "r", text)), log=logs.append)
    assert s.counts["train"]["hit"] + s.counts["valid"]["hit"] >= 15
    assert any("found 20 of 20" in line for line in logs)
    assert any("20 fetched now (ok 20); 0 already had" in line for line in logs), logs
    hits = dict(bing.hits)
    build_dataset(load_recipe(write_recipe(tmp_path / "r", text)), log=lambda *_: None)
    assert dict(bing.hits) == hits  # neither searched nor downloaded again


def test_missing_backend_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ddgs", None)  # as if the web extra were not installed
    with pytest.raises(SourceError, match=r"pip install 'chiquito-or-not\[web\]'"):
        search_images("ddgs", ["x"], 5, tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.slow
def test_google_backend_end_to_end_with_real_chromium(chromium, roots, tmp_path, no_scroll_waits):
    """google-images-download drives headless Chromium to an https results page on 127.0.0.1 signed by a
    private CA (`verify`), through a loopback proxy (`proxy`) that must carry the browser's requests and
    every download; the page writes URLs as Google does, with JavaScript escapes and source pages."""
    from .httpserver import Proxy

    ctx, ca_file = tls_server_context(tmp_path, "127.0.0.1")
    with Server(ssl_context=ctx) as images, Server(ssl_context=ctx) as pages, Proxy() as proxy:
        urls = [f"{images.base}/img/{i}.jpg" for i in range(1, 8)] + [f"{images.base}/img/8.jpg?w=96&h=96"]
        written = [u.replace("=", "\\u003d").replace("&", "\\u0026") for u in urls]  # as Google escapes
        items = ",".join(  # today's layout ("2003": page, title) for odd items, the older "ru"/"pt" for even ones
            f'["{u}",96,96],{{"2003":[null,"id{i}","https://example.org/page{i}","Title \\u0026 {i}",null]}}'
            if i % 2
            else f'["{u}",96,96],{{"ru":"https://example.org/page{i}","pt":"Title \\u0026 {i}"}}'
            for i, u in enumerate(written, 1)
        )
        pages.files["/search"] = (
            f"<html><body><script>var data = [{items}];</script></body></html>".encode(),
            "text/html",
        )
        save_crops(tmp_path / "neg", "rocket", 8, seed=4)
        text = f"""
[dataset]
min_size = 32
valid = 2
balance = "none"
[[classes.hit.sources]]
kind = "image_search"
query = "chiquito de la calzada"
backend = "google"
limit = 8
url = "{pages.base}/search"
chrome = "{shutil.which("chromium")}"
verify = "{ca_file}"
proxy = "{proxy.url}"
[[classes.other.sources]]
kind = "folder"
path = "{tmp_path / "neg"}"
"""
        logs = []
        s = build_dataset(load_recipe(write_recipe(tmp_path / "r", text)), log=logs.append)
        assert pages.hits["/search"] >= 2  # our certificate check, then the browser (it trusted the private CA)
        assert any("google 'chiquito de la calzada': found 8 of 8" in line for line in logs), logs
        assert all(images.hits[u.removeprefix(images.base).split("?")[0]] == 1 for u in urls)
        assert "/img/8.jpg?w=96&h=96" in images.requested  # the escapes were decoded, not sent as %5Cu003d
        assert s.counts["train"]["hit"] + s.counts["valid"]["hit"] == 8
        manifest = next(Path(os.environ["CHIQUITO_DATA"]).rglob("candidates.jsonl"))
        cands = [json.loads(x) for x in manifest.read_text().splitlines()]
        assert [c["image_url"] for c in cands] == urls
        assert [c["source_page"] for c in cands] == [f"https://example.org/page{i}" for i in range(1, 9)]
        assert [c["title"] for c in cands] == [f"Title & {i}" for i in range(1, 9)]
        # the proxy carried the browser's page load and every download (each through a CONNECT tunnel)
        assert proxy.tunnels.count(f"127.0.0.1:{pages.port}") >= 2
        assert proxy.tunnels.count(f"127.0.0.1:{images.port}") >= 1
        # and nothing else: none of Chromium's own traffic (updates, search engines, safe browsing)
        others = [t for t in proxy.tunnels if not t.startswith("127.0.0.1:")]
        others += [r for r in proxy.requests if not r.startswith("http://127.0.0.1:")]
        assert others == [], others


@pytest.mark.slow
def test_a_consent_page_is_not_cached_and_says_what_it_was(chromium, roots, tmp_path, no_scroll_waits):
    with Server() as pages:
        pages.files["/search"] = (
            b"<html><body><h1>Before you continue to Google</h1><form action='/consent'>"
            b"<button>Accept all</button></form></body></html>",
            "text/html",
        )
        manifest = tmp_path / "candidates.jsonl"
        opts = {"url": pages.base + "/search", "chrome": shutil.which("chromium")}
        cands, reports = search_images("google", ["x"], 5, manifest, opts, log=lambda *_: None)
        assert cands == [] and "cookie-consent page" in reports[0].stopped
        assert not manifest.exists() and manifest.with_suffix(".report.json").is_file()
        first = pages.hits["/search"]
        search_images("google", ["x"], 5, manifest, opts, log=lambda *_: None)
        assert pages.hits["/search"] > first  # searched again: nothing was replayed


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which("chromedriver"), reason="needs Debian's chromium-driver")
def test_google_backend_with_a_chrome_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(SourceError, match="google backend: Chrome/chromedriver could not start"):
        search_images(
            "google",
            ["x"],
            5,
            tmp_path / "m.jsonl",
            {"chrome": str(tmp_path / "no-chrome"), "url": "http://127.0.0.1:9/"},
        )
    assert not (tmp_path / "m.jsonl").exists()


def test_ctrl_c_during_dataset_stops_at_once_and_the_rerun_fetches_only_the_rest(
    bing, roots, tmp_path, terminal_ctrl_c
):
    import signal
    import threading
    import time

    from typer.testing import CliRunner

    from chiquito_or_not.cli import app
    from chiquito_or_not.data.download import read_outcomes

    recipe = write_recipe(tmp_path / "r", ddgs_recipe_text(tmp_path, 60))
    journal = Path(os.environ["CHIQUITO_DATA"]) / "raw" / "search" / "ddgs-coffee-60" / "images" / "downloads.jsonl"
    bing.latency = 0.4
    sent = []

    def interrupt():
        while not (journal.is_file() and len(read_outcomes(journal)) >= 8):
            time.sleep(0.02)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    r = CliRunner().invoke(app, ["dataset", str(recipe)])
    assert r.exit_code == 130 and sent, r.output
    assert "chiquito dataset RECIPE" in r.output and "finetune" not in r.output
    before = read_outcomes(journal)
    assert 8 <= len(before) < 60
    bing.latency = 0
    images_before = sum(n for p, n in bing.hits.items() if p.startswith("/img/"))
    r = CliRunner().invoke(app, ["dataset", str(recipe)])
    assert r.exit_code == 0, r.output
    fetched = sum(n for p, n in bing.hits.items() if p.startswith("/img/")) - images_before
    assert fetched == 60 - len(before)  # only what the interrupted run had not finished
    assert f"{60 - len(before)} fetched now" in r.output and f"{len(before)} already had" in r.output


def test_no_chrome_profile_is_left_after_a_failed_certificate_check(chromium, tmp_path, monkeypatch):
    import tempfile

    from chiquito_or_not.data.search import search_images

    (tmp_path / "right").mkdir()
    (tmp_path / "wrong").mkdir()
    ctx, _ = tls_server_context(tmp_path / "right", "127.0.0.1")
    _, wrong_ca = tls_server_context(tmp_path / "wrong", "127.0.0.1")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with Server(ssl_context=ctx) as pages:
        pages.files["/search"] = (b"<html></html>", "text/html")
        opts = {"url": pages.base + "/search", "chrome": shutil.which("chromium"), "verify": str(wrong_ca)}
        with pytest.raises(SourceError):
            search_images("google", ["x"], 5, tmp_path / "c.jsonl", opts, log=lambda *_: None)
    assert list(scratch.glob("chiquito-chrome-*")) == []


def test_a_dead_proxy_is_named_as_the_proxy_not_as_a_failed_verify_check(tmp_path):
    pytest.importorskip("google_images_download")
    from .test_download import _dead_port

    ctx, ca_file = tls_server_context(tmp_path, "127.0.0.1")
    with Server(ssl_context=ctx) as pages:
        opts = {"url": pages.base + "/search", "verify": str(ca_file), "proxy": f"http://127.0.0.1:{_dead_port()}"}
        with pytest.raises(SourceError) as e:
            search_images("google", ["x"], 5, tmp_path / "c.jsonl", opts, log=lambda *_: None)
    msg = str(e.value)
    assert "the proxy failed" in msg and "proxy_error" in msg and "check 'proxy'" in msg, msg
    assert "'verify'" not in msg and "\n" not in msg


def test_ctrl_c_during_the_search_leaves_no_browser_and_no_profile(chromium, tmp_path):
    import signal
    import subprocess
    import tempfile
    import time

    from .helpers import subprocess_env

    # a short temporary folder: Chrome's socket path inside its profile must stay under 108 characters
    scratch = Path(tempfile.mkdtemp(prefix="cq-"))
    with Server(latency=20) as pages:  # the results page takes 20 s: the Ctrl-C comes while Chrome waits
        pages.files["/search"] = (b"<html></html>", "text/html")
        script = (
            "import sys\nfrom pathlib import Path\nfrom chiquito_or_not.data.search import search_images\n"
            "search_images('google', ['x'], 5, Path(sys.argv[1]), {'url': sys.argv[2], 'chrome': sys.argv[3]}, "
            "log=lambda *_: None)\n"
        )
        env = subprocess_env() | {"TMPDIR": str(scratch)}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "c.jsonl"), pages.base + "/search", shutil.which("chromium")],
            env=env,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 60
        while time.time() < deadline and not pages.requested:  # Chrome is asking for the page
            time.sleep(0.05)
        if not pages.requested:
            proc.kill()
            pytest.fail(f"the browser never asked for the results page: {proc.communicate()[1].decode()[-800:]}")
        profiles = list(scratch.glob("chiquito-chrome-*"))
        assert len(profiles) == 1
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    left = list(scratch.iterdir())
    shutil.rmtree(scratch, ignore_errors=True)
    assert not profiles[0].exists() and left == [], left
    flag = f"--user-data-dir={profiles[0]}/profile".encode()
    still = [p for p in Path("/proc").glob("[0-9]*") if flag in _cmdline(p)]
    assert still == [], still  # no browser left running


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
