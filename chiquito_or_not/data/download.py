"""Download: fetch image URLs concurrently and politely; every URL ends with a recorded outcome."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from ..core.files import atomic_write_bytes
from ..core.http_fetch import Abort, FetchError, FetchPolicy, fetch_image, parse_url
from ..core.images import DecodePolicy, clean_one
from ..core.progress_line import Progress
from ..core.reasons import Reason

__all__ = [
    "DownloadCounts",
    "download_urls",
    "is_transient",
    "log_counts",
    "settings_key",
    "sniff_image",
    "read_outcomes",
    "OUTCOMES_FILE",
    "SETTINGS",
]

OUTCOMES_FILE = "downloads.jsonl"
# failures that depend on the user's own settings or network: retried by --retry-failed, and by any run
# whose proxy or TLS verification differs from the one that failed (each outcome records its settings)
SETTINGS = {"proxy_error", "bad_proxy", "tls_error", "connection_error"}
TRANSIENT = {"timeout", "deadline", "interrupted"} | SETTINGS
MAGIC = [
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
]


def sniff_image(head: bytes) -> str:
    """The image type from the first bytes ("" when they are not an image we know)."""
    for magic, ext in MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return ""


def read_outcomes(path: Path) -> dict[str, dict]:
    """URL → last recorded outcome; a torn last line (killed mid-write) is ignored."""
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                out[rec["url"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


class _Downloader:
    def __init__(self, dest: Path | None, policy: FetchPolicy):
        self.dest, self.p = dest, policy
        self.abort = Abort()  # Ctrl-C: in-flight fetches end at once, queued ones never start
        self.claimed: set[str] = set()  # files an "ok" outcome owns; a file a killed run left unrecorded is not one
        self.host_locks: dict[str, threading.BoundedSemaphore] = {}
        self.lock = threading.Lock()
        self.spec = DecodePolicy(
            min_size=policy.min_size, max_pixels=89_478_485, formats=("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
        )

    def host_slot(self, url: str) -> threading.BoundedSemaphore:
        try:
            host = parse_url(url).host_header
        except FetchError:
            host = ""  # open_url refuses it at once
        with self.lock:
            return self.host_locks.setdefault(host, threading.BoundedSemaphore(self.p.per_host))

    def fetch_once(self, url: str) -> tuple[bytes, str, str]:
        """(body, final url, content type): one guarded fetch (core.http_fetch.fetch_image), this host's slot held."""
        with self.host_slot(url):
            return fetch_image(url, self.p, self.abort)

    def fetch(self, url: str) -> dict:
        """Download one URL with retries; returns its outcome record."""
        attempt = 0
        while True:
            try:
                body, final, ctype = self.fetch_once(url)
                break
            except FetchError as f:
                if not f.transient or attempt >= self.p.retries:
                    return {
                        "url": url,
                        "status": "failed",
                        "reason": f.reason,
                        "detail": f.detail,
                        "attempts": attempt + 1,
                    }
                wait = f.retry_after if f.retry_after is not None else self.p.backoff * 2**attempt
                if self.abort.event.wait(min(wait, self.p.max_retry_after)):
                    return {"url": url, "status": "failed", "reason": "interrupted", "attempts": attempt + 1}
                attempt += 1
        ext = sniff_image(body[:16])
        if not ext:
            return {
                "url": url,
                "status": "failed",
                "reason": Reason.NOT_AN_IMAGE,
                "detail": f"served as {ctype or 'no type'}, starts with {body[:12]!r}",
                "attempts": attempt + 1,
            }
        sha = hashlib.sha256(body).hexdigest()
        name = f"{sha[:16]}.{ext}"
        reason, detail, _ = clean_one(body, self.spec)  # the full decode: truncated, 1x1, bombs
        if reason:
            return {"url": url, "status": "failed", "reason": reason, "detail": detail, "attempts": attempt + 1}
        with self.lock:
            duplicate = name in self.claimed
            if not duplicate:
                self.claimed.add(name)
                if not (self.dest / name).is_file():  # content-named: an unrecorded file is this very body
                    atomic_write_bytes(self.dest / name, body)
        return {
            "url": url,
            "status": "duplicate" if duplicate else "ok",
            "reason": "",
            "file": name,
            "sha256": sha,
            "bytes": len(body),
            "final_url": final,
            "attempts": attempt + 1,
        }


def is_transient(reason: str) -> bool:
    """A failure reason that may go away on another try (what --retry-failed fetches again)."""
    return reason in TRANSIENT or reason == "http_429" or reason.startswith("http_5")


class DownloadCounts(Counter):
    """Outcomes of every URL asked for (by reason, "ok" and "duplicate"), with `new` (fetched by this run)
    and `had` (outcomes a previous run recorded) apart."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.new, self.had = Counter(), Counter()

    def summary(self) -> str:
        def fmt(c):
            return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "nothing"

        return (
            f"{sum(self.new.values())} fetched now ({fmt(self.new)}); "
            f"{sum(self.had.values())} already had ({fmt(self.had)})"
        )

    @property
    def transient(self) -> int:
        """URLs whose last attempt failed for a reason that may pass (a failure's key is its reason)."""
        return sum(n for reason, n in self.items() if is_transient(reason))


def log_counts(counts: DownloadCounts, what: str, log=print) -> None:
    """The summary line of a download (`what`: "90 candidates", "300 URLs") and, when some failures may
    pass, how to fetch them again."""
    log(f"  download {what}: {counts.summary()}")
    if counts.transient:
        log(
            f"  download {counts.transient} failed for reasons that may pass (timeouts, 5xx, connection, "
            "proxy or TLS errors): `chiquito dataset RECIPE --retry-failed` tries them again; a run with "
            "another `proxy` or `verify` retries the proxy, TLS and connection failures by itself"
        )


def settings_key(policy: FetchPolicy) -> str:
    """What a settings-caused failure depended on: the proxy and TLS verification (a CA file by its
    content, so a fixed file counts as a change)."""
    verify = policy.verify
    if isinstance(verify, str):
        try:
            verify = hashlib.sha256(Path(verify).read_bytes()).hexdigest()
        except OSError:
            verify = f"unreadable:{verify}"
    return hashlib.sha256(json.dumps([policy.proxy, verify]).encode()).hexdigest()[:16]


def _to_do(urls: list[str], journal: Path, retry_failed: bool, settings: str = "") -> tuple[dict, list[str], int]:
    """(the outcomes a previous run journaled that stand, the URLs still to fetch, each once, and how many
    of those failed before under other proxy/TLS settings)."""
    done = read_outcomes(journal)

    def stale(rec: dict) -> bool:
        if rec.get("status") != "failed":
            return False
        reason = rec.get("reason", "")
        return (retry_failed and is_transient(reason)) or (reason in SETTINGS and rec.get("settings") != settings)

    changed = sum(1 for u in set(urls) if u in done and stale(done[u]) and not retry_failed)
    done = {u: rec for u, rec in done.items() if not stale(rec)}
    return done, list(dict.fromkeys(u for u in urls if u not in done)), changed


def _journal(out, rec: dict, counts: DownloadCounts) -> None:
    """One outcome, written and synced the moment it is known."""
    out.write(json.dumps(rec) + "\n")
    out.flush()
    os.fsync(out.fileno())
    key = rec["reason"] or rec["status"]
    counts[key] += 1
    counts.new[key] += 1


def _progress_line(i: int, todo: int, counts: DownloadCounts, shown: Progress, pending: int) -> str:
    return (
        f"downloaded {i}/{todo} new: ok {counts.new['ok']}, failed "
        f"{i - counts.new['ok'] - counts.new['duplicate']}, duplicate "
        f"{counts.new['duplicate']} ({sum(counts.had.values())} already had) "
        f"{shown.elapsed():.0f}s" + (f", waiting on {pending}" if pending else "")
    )


def download_urls(
    urls: list[str],
    dest: Path,
    policy: FetchPolicy = FetchPolicy(),
    log=print,
    progress: bool | None = None,
    retry_failed: bool = False,
    every: float = 10.0,
) -> DownloadCounts:
    """Download `urls` into `dest` (content-named files) and record each outcome in dest/downloads.jsonl.

    Re-running skips every URL that already has an outcome, so an interrupted run resumes without
    downloading anything twice; `retry_failed` fetches transient failures (timeouts, 5xx...) again.
    Progress: a live line on a terminal, else a line through `log` every `every` seconds."""
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".*.part"):  # temporary files of a killed run
        stale.unlink()
    journal = dest / OUTCOMES_FILE
    key = settings_key(policy)
    done, todo, changed = _to_do(urls, journal, retry_failed, key)
    if changed:
        log(f"  download {changed} that failed under other proxy/verify settings: fetched again with these")
    d = _Downloader(dest, policy)
    d.claimed = {rec["file"] for rec in done.values() if rec.get("status") == "ok" and rec.get("file")}
    counts = DownloadCounts()
    wanted = set(urls)
    for u, rec in done.items():
        if u in wanted:
            counts.had[rec["reason"] or rec["status"]] += 1
    counts.update(counts.had)
    shown = Progress(log, every, tty=progress)
    pool = ThreadPoolExecutor(policy.workers)
    futures: list = []
    journaled: set = set()
    try:
        with open(journal, "a", encoding="utf-8") as out:
            futures = [pool.submit(d.fetch, u) for u in todo]
            _journal_as_they_finish(futures, out, key, counts, shown, journaled, every)
    except BaseException:  # Ctrl-C: what was journaled is kept; the rest is fetched by the next run
        d.abort.abort()
        pool.shutdown(wait=True, cancel_futures=True)
        _journal_arrived(futures, journaled, journal, key, counts)
        raise
    pool.shutdown()
    if shown.tty and todo:
        shown.end()
    return counts


def _journal_as_they_finish(futures: list, out, key: str, counts, shown, journaled: set, every: float) -> None:
    """Each outcome journaled the moment it is known, in the order they finish: one slow URL holds up neither
    the journal nor the progress, which also ticks while nothing finishes."""
    pending, i = set(futures), 0
    while pending:
        finished, pending = wait(pending, timeout=0.5 if shown.tty else every, return_when=FIRST_COMPLETED)
        for fut in finished:
            _journal(out, fut.result() | {"settings": key}, counts)
            journaled.add(fut)
            i += 1
        if pending or shown.tty:  # a log hears the totals from the caller's summary
            shown.show(_progress_line(i, len(futures), counts, shown, len(pending)))


def _journal_arrived(futures: list, journaled: set, journal: Path, key: str, counts) -> None:
    """After an interruption: images that had fully arrived (written, content-named) but were not journaled
    yet are journaled now, so that the next run does not fetch them again."""
    with open(journal, "a", encoding="utf-8") as out:
        for fut in futures:
            if fut in journaled or not fut.done() or fut.cancelled() or fut.exception() is not None:
                continue
            if fut.result()["status"] == "ok":
                _journal(out, fut.result() | {"settings": key}, counts)
