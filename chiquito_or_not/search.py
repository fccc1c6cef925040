"""Search: find candidate image URLs with a web image search backend; write them to a JSONL manifest first."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SourceError
from .files import atomic_write_text

__all__ = ["SearchReport", "search_images", "BACKENDS", "read_candidates"]


@dataclass
class SearchReport:
    """What a search found, and why it stopped: never silent about coming up short."""
    backend: str
    query: str
    limit: int
    candidates: list[dict] = field(default_factory=list)
    pages: int = 0
    stopped: str = ""  # "limit reached", "no more results", "rate-limited", ...

    def summary(self) -> str:
        return (f"{self.backend} '{self.query}': found {len(self.candidates)} of {self.limit}"
                + ("" if len(self.candidates) >= self.limit else f": {self.stopped} after {self.pages} page(s)"))


def _ddgs(query: str, limit: int, opts: dict) -> SearchReport:
    """DuckDuckGo/Bing image search through the `ddgs` package, page by page."""
    try:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException
    except ImportError:
        raise SourceError("the ddgs backend needs the web extra: pip install 'chiquito-or-not[web]'") from None
    rep = SearchReport("ddgs", query, limit)
    client = DDGS(proxy=opts.get("proxy") or None, verify=opts.get("verify", True), timeout=opts.get("timeout", 10))
    seen = set()
    for page in range(1, opts.get("max_pages", 20) + 1):
        try:
            results = client.images(query, max_results=min(100, limit), page=page, backend=opts.get("engine", "auto"),
                                    safesearch=opts.get("safesearch", "moderate"), size=opts.get("size") or None)
        except RatelimitException as e:
            rep.stopped = f"rate-limited ({str(e)[:60]})"
            break
        except TimeoutException as e:
            rep.stopped = f"timed out ({str(e)[:60]})"
            break
        except DDGSException as e:  # ddgs turns a 429/5xx, a consent or a CAPTCHA page into "no results"
            rep.stopped = (f"page {page} gave nothing: the end of the results, a rate limit (HTTP 429) or a "
                           f"consent/CAPTCHA page; ddgs does not say which ({str(e)[:40]})")
            break
        rep.pages = page
        new = [r for r in results if r.get("image") and r["image"] not in seen]
        if not new:
            rep.stopped = "no new results"
            break
        for r in new:
            seen.add(r["image"])
            rep.candidates.append({"backend": "ddgs", "query": query, "rank": len(rep.candidates) + 1,
                                   "image_url": r["image"], "source_page": r.get("url", ""),
                                   "title": r.get("title", "")})
            if len(rep.candidates) >= limit:
                rep.stopped = "limit reached"
                return rep
    else:
        rep.stopped = "page cap reached"
    return rep


@contextlib.contextmanager
def _chrome_binary(path: str):
    """google-images-download builds selenium's chrome Options itself and offers no binary path; while this
    is active, the Options it builds start Chrome from `path` (the tutorial's config had that setting)."""
    if not path:
        yield
        return
    import selenium.webdriver.chrome.options as chrome_options

    base = chrome_options.Options

    class WithBinary(base):
        def __init__(self):
            super().__init__()
            self.binary_location = path

    chrome_options.Options = WithBinary
    try:
        yield
    finally:
        chrome_options.Options = base


def _google(query: str, limit: int, opts: dict) -> SearchReport:
    """Google Images through google-images-download 3.x, which drives headless Chrome with Selenium."""
    try:
        from google_images_download import google_images_download
    except ImportError:
        raise SourceError("the google backend needs the web extra: pip install 'chiquito-or-not[web]'") from None
    rep = SearchReport("google", query, limit)
    args = {"keywords": query, "limit": limit, "no_download": True, "silent_mode": True,
            "chromedriver": opts.get("chromedriver") or "/usr/bin/chromedriver"}
    if opts.get("url"):  # it appends "&safe=..." to this URL as it is: give it a query string to extend
        args["url"] = opts["url"] if "?" in opts["url"] else opts["url"] + "?"
    if opts.get("safesearch", "moderate") != "off":
        args["safe_search"] = True
    if opts.get("size"):
        args["size"] = opts["size"]
    from selenium.common.exceptions import WebDriverException

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), _chrome_binary(opts.get("chrome", "")):  # it prints when silent
            paths, _errors = google_images_download.googleimagesdownload().download(args)
    except SystemExit:  # it calls sys.exit() when Chrome or chromedriver cannot start
        raise SourceError(f"google backend: Chrome/chromedriver could not start ({out.getvalue().strip()[-160:]}); "
                          "install chromium and chromium-driver, or set 'chromedriver'") from None
    except WebDriverException as e:
        first = (e.msg or str(e)).strip().splitlines()[0][:160]
        raise SourceError(f"google backend: the results page could not be loaded ({first}); check the "
                          "internet connection, or set 'url'") from None
    urls = next(iter(paths.values()), []) if paths else []
    rep.pages = 1
    for u in urls:
        rep.candidates.append({"backend": "google", "query": query, "rank": len(rep.candidates) + 1,
                               "image_url": u, "source_page": "", "title": ""})
    text = out.getvalue().lower()
    if len(urls) >= limit:
        rep.stopped = "limit reached"
    elif re.search(r"captcha|unusual traffic|consent|before you continue", text):
        rep.stopped = "a CAPTCHA or consent page"
    else:
        rep.stopped = "no more results on the page" if urls else "no results (empty, consent or CAPTCHA page)"
    return rep


BACKENDS = {"ddgs": _ddgs, "google": _google}


def read_candidates(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def search_images(backend: str, queries: list[str], limit: int, manifest: Path, opts: dict | None = None,
                  refresh: bool = False) -> tuple[list[dict], list[SearchReport]]:
    """Candidates for all queries, merged without duplicate URLs, written to `manifest` (JSONL) before any
    download. An existing manifest is replayed as it is (offline), unless `refresh`."""
    if manifest.is_file() and not refresh:
        return read_candidates(manifest), []
    reports, merged, seen = [], [], set()
    for q in queries:
        rep = BACKENDS[backend](q, limit, opts or {})
        reports.append(rep)
        for c in rep.candidates:
            if c["image_url"] not in seen:
                seen.add(c["image_url"])
                merged.append(c)
    atomic_write_text(manifest, "".join(json.dumps(c) + "\n" for c in merged))
    atomic_write_text(manifest.with_suffix(".report.json"),
                      json.dumps([{"backend": r.backend, "query": r.query, "limit": r.limit,
                                   "found": len(r.candidates), "pages": r.pages, "stopped": r.stopped}
                                  for r in reports], indent=1) + "\n")
    return merged, reports
