"""Search: find candidate image URLs with a web image search backend; write them to a JSONL manifest first."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import SourceError
from ..core.files import atomic_write_text
from ..core.http_fetch import FetchError, clip, open_url

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
        return f"{self.backend} '{self.query}': found {len(self.candidates)} of {self.limit}" + (
            "" if len(self.candidates) >= self.limit else f": {self.stopped} after {self.pages} page(s)"
        )


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
            results = client.images(
                query,
                max_results=min(100, limit),
                page=page,
                backend=opts.get("engine", "auto"),
                safesearch=opts.get("safesearch", "moderate"),
                size=opts.get("size") or None,
            )
        except RatelimitException as e:
            rep.stopped = f"rate-limited ({str(e)[:60]})"
            break
        except TimeoutException as e:
            rep.stopped = f"timed out ({str(e)[:60]})"
            break
        except DDGSException as e:  # ddgs turns a 429/5xx, a consent or a CAPTCHA page into "no results"
            rep.stopped = (
                f"page {page} gave nothing: the end of the results, a rate limit (HTTP 429) or a "
                f"consent/CAPTCHA page; ddgs does not say which ({str(e)[:40]})"
            )
            break
        rep.pages = page
        new = [r for r in results if r.get("image") and r["image"] not in seen]
        if not new:
            rep.stopped = "no new results"
            break
        for r in new:
            seen.add(r["image"])
            rep.candidates.append(
                {
                    "backend": "ddgs",
                    "query": query,
                    "rank": len(rep.candidates) + 1,
                    "image_url": r["image"],
                    "source_page": r.get("url", ""),
                    "title": r.get("title", ""),
                }
            )
            if len(rep.candidates) >= limit:
                rep.stopped = "limit reached"
                return rep
    else:
        rep.stopped = "page cap reached"
    return rep


NOWHERE = "http://127.0.0.1:9"
# the default search engines' start pages (DuckDuckGo in Debian's older builds, Google in its newer ones), asked
# for at start-up by no setting that could turn it off; silenced unless the results page is on that host
SILENCED_HOSTS = ("start.duckduckgo.com", "www.google.com")
# Chromium's own traffic off: no component or safe-browsing updates, no sync, metrics, translation,
# search-engine or default-app fetches, no DNS prefetch; the browser asks for the results page only
QUIET_CHROME = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-search-engine-choice-screen",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication,"
    "NetworkTimeServiceQuerying,InterestFeedContentSuggestions,CertificateTransparencyComponentUpdater,"
    "SearchEnginePreconnectInterval,SearchEnginePreconnect2,PreconnectToSearch,DiceWebSigninInterception,"
    "OptimizationGuideModelDownloading,Prerender2,PrivacySandboxSettings4,SafeBrowsingRealTimeUrlLookup",
    "--dns-prefetch-disable",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--no-first-run",
    "--no-pings",
    "--safebrowsing-disable-auto-update",
    # Google account and update endpoints pointed at a closed local port (the discard port, never
    # through a proxy: see the bypass list below): Debian's build carries API keys that wake them
    f"--gaia-url={NOWHERE}",
    f"--google-apis-url={NOWHERE}",
    f"--lso-url={NOWHERE}",
    f"--component-updater=url-source={NOWHERE}",
)


# the profile's preferences that keep it quiet too (Debian's master_preferences sets some of these, but
# only on a first run, which --no-first-run skips): no preconnect to the default search engine, no
# suggestions, no sign-in, no safe-browsing lookups
QUIET_PREFS = {
    "net": {"network_prediction_options": 2},
    "search": {"suggest_enabled": False},
    "signin": {"allowed": False, "allowed_on_next_startup": False},
    "safebrowsing": {"enabled": False},
    "browser": {"has_seen_welcome_page": True, "check_default_browser": False},
    "translate": {"enabled": False},
}


def _remove_profile(work: str) -> None:
    """Delete Chrome's temporary folder (`work`: its profile and its own temporary files), after stopping
    any Chrome process still using it (a Ctrl-C can leave the browser running, writing into the folder
    as it is removed). Tries for up to 5 s."""
    import shutil
    import signal

    # every process chromedriver started (Chrome and all its helpers) inherited TMPDIR = work/tmp
    mark = f"TMPDIR={work}/tmp".encode()
    deadline = time.monotonic() + 5
    while True:
        alive = 0
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if mark in (proc / "environ").read_bytes().split(b"\0") and int(proc.name) != os.getpid():
                    os.kill(int(proc.name), signal.SIGKILL)
                    alive += 1
            except (OSError, ValueError):
                continue
        if alive and time.monotonic() < deadline:
            time.sleep(0.1)  # let them die before their folder goes
            continue
        shutil.rmtree(work, ignore_errors=True)
        if not os.path.exists(work) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


@contextlib.contextmanager
def _chrome_tmpdir(folder: str):
    """Chrome (started by chromedriver, which inherits this process's environment) puts its own
    temporary folders in TMPDIR: inside ours while it runs, so that they go with it."""
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = folder
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old


@contextlib.contextmanager
def _chrome_options(binary: str, args: list[str]):
    """google-images-download builds selenium's chrome Options itself and offers no binary path, proxy or
    certificate setting; while this is active, the Options it builds start Chrome from `binary` (the
    tutorial's config had that setting) with our extra `args`."""
    import selenium.webdriver.chrome.options as chrome_options

    base = chrome_options.Options

    class WithOurs(base):
        def __init__(self):
            super().__init__()
            if binary:
                self.binary_location = binary
            for a in args:
                self.add_argument(a)
            self.add_experimental_option("prefs", QUIET_PREFS)

    chrome_options.Options = WithOurs
    try:
        yield
    finally:
        chrome_options.Options = base


_NEXT_IMAGE = re.compile(r'\["https?:[^"]+\.(?:jpg|jpeg|png|webp|gif)')
_PAGE_2003 = re.compile(r'"2003":\[[^\[\]]*?"(https?:[^"]+)","((?:[^"\\]|\\.)*)"')
_PAGE_RU = re.compile(r'"ru":"(https?:[^"]+)"')
_TITLE_PT = re.compile(r'"pt":"((?:[^"\\]|\\.)*)"')


def _item_page_and_title(s: str, end: int) -> tuple[str, str]:
    """The source page and title Google writes after an image's URL, up to the next image: in the page
    of today (`"2003":[null,"id","https://page","Title",...]`) or the older `"ru"`/`"pt"` keys. The
    library looks 1000 characters both ways and so can take the previous image's page."""
    nxt = _NEXT_IMAGE.search(s, end)
    seg = s[end : nxt.start() if nxt else end + 4000]
    page = title = ""
    if m := _PAGE_2003.search(seg):
        page, title = m.group(1), m.group(2)
    else:
        if m := _PAGE_RU.search(seg):
            page = m.group(1)
        if m := _TITLE_PT.search(seg):
            title = m.group(1)
    return _unescape_js(page), _unescape_js(title)


def _unescape_js(text: str) -> str:
    """A URL as Google writes it inside a JavaScript string (`\\u003d` for '=', `\\u0026` for '&', `\\/`)."""
    if "\\" not in text:
        return text
    try:
        return json.loads(f'"{text}"')
    except ValueError:
        return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")


def _what_page(page: str) -> str:
    """What a results page that gave no image URLs was, from its source."""
    low = page.lower()
    if "err_cert" in low or "your connection is not private" in low or "ssl_error" in low:
        return (
            "a TLS certificate error page: the browser refused the site's certificate (set 'verify' to "
            "the CA bundle that signed it)"
        )
    if "err_proxy" in low or "err_tunnel_connection_failed" in low:
        return "a proxy error page: the browser could not use 'proxy'"
    if re.search(
        r"err_(connection_refused|name_not_resolved|internet_disconnected|connection_timed_out|"
        r"address_unreachable|connection_reset)",
        low,
    ):
        return "an error page: the browser could not reach the results page"
    if re.search(r"captcha|unusual traffic|/sorry/", low):
        return "a CAPTCHA page (too many searches from this address: wait, or use 'proxy')"
    if re.search(r"consent|before you continue", low):
        return "a cookie-consent page (Google shows one before results in some countries)"
    return "a page with no image results" if page.strip() else "an empty page"


def _spki_pin(url: str, verify: str, proxy: str) -> str:
    """The base64 sha256 of the public key of the certificate `url` presents, once it verifies against
    the CA bundle `verify`: Chrome takes no CA file, but accepts exactly that key with
    --ignore-certificate-errors-spki-list, so the browser trusts what `verify` trusts, and no more."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        with open_url(url, verify=verify, proxy=proxy, deadline=30, max_redirects=0) as r:
            der = r.raw.connection.sock.getpeercert(binary_form=True)
    except FetchError as e:
        if e.reason == "too_many_redirects":  # a redirect still proves the certificate: fetch the page itself
            raise SourceError(f"google backend: {url} redirects; set 'url' to the final results URL") from None
        if e.reason in ("proxy_error", "bad_proxy"):
            raise SourceError(
                f"google backend: the proxy failed before the results page {url} was reached ({e.reason}: "
                f"{clip(e.detail)}); check 'proxy'"
            ) from None
        if e.reason != "tls_error":
            raise SourceError(
                f"google backend: the results page {url} could not be fetched ({e.reason}: {clip(e.detail)}); "
                "check the connection, or set 'url'"
            ) from None
        raise SourceError(
            f"google backend: the results page {url} failed the check against 'verify' ({e.reason}: {clip(e.detail)})"
        ) from None
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _google_args(query: str, limit: int, opts: dict) -> dict:
    """google-images-download's arguments for one query."""
    args = {
        "keywords": query,
        "limit": limit,
        "no_download": True,
        "silent_mode": True,
        "chromedriver": opts.get("chromedriver") or "/usr/bin/chromedriver",
    }
    if opts.get("url"):  # it appends "&safe=..." to this URL as it is: give it a query string to extend
        args["url"] = opts["url"] if "?" in opts["url"] else opts["url"] + "?"
    if opts.get("safesearch", "moderate") != "off":
        args["safe_search"] = True
    if opts.get("size"):
        args["size"] = opts["size"]
    return args


def _chrome_args(args: dict, opts: dict) -> list[str]:
    """Chrome's command line: quiet, through the proxy when one is set, trusting the CA bundle's key."""
    # the search engines' start pages, but the results page's host: they do not resolve, and never go
    # through a proxy (bypass list)
    results = urllib.parse.urlsplit(args.get("url") or "https://www.google.com/").hostname or ""
    silenced = [h for h in SILENCED_HOSTS if h != results]
    chrome_args = [*QUIET_CHROME, f"--host-resolver-rules=MAP {' , MAP '.join(f'{h} ~NOTFOUND' for h in silenced)}"]
    proxy, verify = opts.get("proxy", ""), opts.get("verify", True)
    if proxy:  # every request the browser makes goes through it, loopback included
        chrome_args += [
            f"--proxy-server={proxy}",
            f"--proxy-bypass-list=<-loopback>;{';'.join((NOWHERE.split('//')[1], *silenced))}",
        ]
    if isinstance(verify, str) and args.get("url", "").startswith("https://"):  # before the profile exists
        chrome_args.append(f"--ignore-certificate-errors-spki-list={_spki_pin(args['url'], verify, proxy)}")
    return chrome_args


def _add_google_items(rep: SearchReport, items: list, query: str, limit: int) -> None:
    """The parsed items as candidates, each image URL once, up to `limit`."""
    seen = set()
    for obj in items:
        u = obj["ou"]
        if u in seen or len(rep.candidates) >= limit:
            continue
        seen.add(u)
        rep.candidates.append(
            {
                "backend": "google",
                "query": query,
                "rank": len(rep.candidates) + 1,
                "image_url": u,
                "source_page": obj.get("ru", ""),
                "title": obj.get("pt", ""),
            }
        )


def _google(query: str, limit: int, opts: dict) -> SearchReport:
    """Google Images through google-images-download 3.x, which drives headless Chrome with Selenium."""
    try:
        from google_images_download import google_images_download
    except ImportError:
        raise SourceError("the google backend needs the web extra: pip install 'chiquito-or-not[web]'") from None
    import tempfile

    rep = SearchReport("google", query, limit)
    args = _google_args(query, limit, opts)
    from selenium.common.exceptions import WebDriverException

    class Capturing(google_images_download.googleimagesdownload):
        """Keeps the page source (to say what a page without results was) and every parsed item, with
        its URLs decoded as Google escapes them and the page it came from."""

        def __init__(self):
            super().__init__()
            self.page, self.items = "", []

        def download_extended_page(self, url, chromedriver):
            self.page = super().download_extended_page(url, chromedriver)
            return self.page

        def _get_next_item(self, s):
            obj, end = super()._get_next_item(s)
            if isinstance(obj, dict):
                page, title = _item_page_and_title(s, end)  # this item's own, not a neighbour's
                obj["ou"] = _unescape_js(obj.get("ou", ""))
                obj["ru"] = page or _unescape_js(obj.get("ru", ""))
                obj["pt"] = title or _unescape_js(obj.get("pt", ""))
                self.items.append(obj)
            return obj, end

    chrome_args = _chrome_args(args, opts)
    work = tempfile.mkdtemp(prefix="chiquito-chrome-")  # profile/ and Chrome's own tmp/, removed after
    os.mkdir(os.path.join(work, "profile"))
    os.mkdir(os.path.join(work, "tmp"))
    chrome_args.append(f"--user-data-dir={work}/profile")
    out = io.StringIO()
    g = Capturing()
    try:
        with (
            contextlib.redirect_stdout(out),
            _chrome_options(opts.get("chrome", ""), chrome_args),
            _chrome_tmpdir(os.path.join(work, "tmp")),
        ):
            g.download(args)  # it prints even when silent
    except SystemExit:  # it calls sys.exit() when Chrome or chromedriver cannot start
        raise SourceError(
            f"google backend: Chrome/chromedriver could not start ({out.getvalue().strip()[-160:]}); "
            "install chromium and chromium-driver, or set 'chromedriver'"
        ) from None
    except WebDriverException as e:
        first = (e.msg or str(e)).strip().splitlines()[0][:160]
        raise SourceError(
            f"google backend: the results page could not be loaded ({first}); check the "
            "internet connection, or set 'url'"
        ) from None
    finally:
        _remove_profile(work)
    rep.pages = 1
    _add_google_items(rep, g.items, query, limit)
    if len(rep.candidates) >= limit:
        rep.stopped = "limit reached"
    elif rep.candidates:
        rep.stopped = "no more results on the page"
    else:
        rep.stopped = f"the results page was {_what_page(g.page)}"
    return rep


BACKENDS = {"ddgs": _ddgs, "google": _google}


def read_candidates(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SLOW = {"google": "headless Chromium loads and scrolls the results page (about 20 s)"}


def search_images(
    backend: str,
    queries: list[str],
    limit: int,
    manifest: Path,
    opts: dict | None = None,
    refresh: bool = False,
    log=print,
) -> tuple[list[dict], list[SearchReport]]:
    """Candidates for all queries, merged without duplicate URLs, written to `manifest` (JSONL) before any
    download. An existing manifest is replayed as it is (offline), unless `refresh`. A search that
    found nothing is never cached: only its report is written, and the next run searches again."""
    if manifest.is_file() and not refresh:
        cands = read_candidates(manifest)
        if cands:
            return cands, []
    reports, merged, seen = [], [], set()
    for q in queries:
        log(f"  search  {backend} '{q}': " + SLOW.get(backend, "asking for results page by page"))
        rep = BACKENDS[backend](q, limit, opts or {})
        reports.append(rep)
        for c in rep.candidates:
            if c["image_url"] not in seen:
                seen.add(c["image_url"])
                merged.append(c)
    if merged:
        atomic_write_text(manifest, "".join(json.dumps(c) + "\n" for c in merged))
    else:
        manifest.unlink(missing_ok=True)  # an empty manifest an older version cached
    atomic_write_text(
        manifest.with_suffix(".report.json"),
        json.dumps(
            [
                {
                    "backend": r.backend,
                    "query": r.query,
                    "limit": r.limit,
                    "found": len(r.candidates),
                    "pages": r.pages,
                    "stopped": r.stopped,
                }
                for r in reports
            ],
            indent=1,
        )
        + "\n",
    )
    return merged, reports
