"""URL lists (`kind = "urls"`): read a .txt / .csv / .tsv / .parquet list, download it with the project's own
downloader (data.download: journal, per-host limits, the address guard) or with img2dataset (processes,
threads, and its Spark or Ray distributors, resuming finished shards), and say per URL what happened in the
same reasons: a downloaded image goes on to cleaning, a failed URL becomes a rejected row of manifest.csv."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import SourceError
from ..core.http_fetch import FetchError, FetchPolicy, parse_url, short_error
from ..core.reasons import Reason
from .download import OUTCOMES_FILE, download_urls, log_counts, read_outcomes

__all__ = ["UrlOutcome", "read_url_list", "download_own", "download_img2dataset", "img2dataset_reason"]

LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet")
MAX_FIELD = 1 << 20  # a .csv / .tsv field (a URL, a caption) longer than this is not one a list holds


@dataclass(frozen=True)
class UrlOutcome:
    """One URL of the list: the downloaded file (or None) and, when it failed, why."""

    url: str
    file: Path | None
    reason: str = ""
    detail: str = ""


def _txt_urls(path: Path, column: str, where: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [s for s in (line.strip() for line in fh) if s and not s.startswith("#")]


def _parquet_urls(path: Path, column: str, where: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            f"{where}: reading a .parquet URL list needs pyarrow: pip install 'chiquito-or-not[img2dataset]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error kinds for a file that is not parquet
        raise SourceError(f"{where}: {path} is not a readable parquet file ({str(e)[:120]})") from None
    if column not in table.column_names:
        raise SourceError(
            f"{where}: {path} has no column {column!r} (it has {', '.join(table.column_names)}); set 'column'"
        )
    return [str(u).strip() for u in table.column(column).to_pylist() if u is not None and str(u).strip()]


def _csv_urls(path: Path, column: str, where: str) -> list[str]:
    # utf-8-sig: a list saved by a spreadsheet starts with a byte-order mark, which is not part of the header
    csv.field_size_limit(MAX_FIELD)  # process-wide in csv: set here, so the limit is this reader's own
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            names = reader.fieldnames or []
            if column not in names:
                raise SourceError(
                    f"{where}: {path} has no column {column!r} (its header: {', '.join(names) or 'none'}); set 'column'"
                )
            urls = [(row.get(column) or "").strip() for row in reader]
        except csv.Error as e:  # a field over csv's size limit, a NUL byte, an unclosed quote at the end
            raise SourceError(f"{where}: {path} after line {reader.line_num}: not a readable list ({e})") from None
    return [u for u in urls if u]


_READERS = {".txt": _txt_urls, ".parquet": _parquet_urls, ".csv": _csv_urls, ".tsv": _csv_urls}


def read_url_list(path: Path, column: str, where: str) -> list[str]:
    """The URLs of the list, in order, each once (blank lines and `#` comments of a .txt skipped)."""
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        raise SourceError(f"{where}: {path} is not a URL list; give a .txt (one URL per line), .csv, .tsv or .parquet")
    if not path.is_file():
        raise SourceError(f"{where}: URL list {str(path)!r} does not exist or is not a file; fix 'path'")
    urls = _READERS[suffix](path, column, where)
    if not urls:
        raise SourceError(f"{where}: {path} lists no URL")
    return list(dict.fromkeys(urls))


def list_folder(base: Path, path: Path, urls: list[str]) -> Path:
    """Where one list's downloads live: named by the list's file name and its URLs, so an edited list is a
    new folder and the same list resumes."""
    digest = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)[:40] or "urls"
    return base / f"{slug}-{digest}"


def download_own(urls: list[str], folder: Path, policy: FetchPolicy, log, retry_failed: bool) -> list[UrlOutcome]:
    """The project's downloader: every URL journaled in folder/images/downloads.jsonl with its outcome."""
    images = folder / "images"
    log_counts(download_urls(urls, images, policy, log=log, retry_failed=retry_failed), f"{len(urls)} URLs", log)
    outcomes = read_outcomes(images / OUTCOMES_FILE)
    out = []
    for u in urls:
        rec = outcomes.get(u) or {"status": "failed", "reason": "interrupted"}
        if rec.get("status") in ("ok", "duplicate") and rec.get("file"):
            # the same bytes at two URLs are one content-named file: both are handed on, and cleaning keeps
            # the first in the list's order (whichever download finished first) and calls the other a duplicate
            out.append(UrlOutcome(u, images / rec["file"]))
        else:
            out.append(UrlOutcome(u, None, rec.get("reason") or "failed", rec.get("detail", "")))
    return out


# img2dataset reports a failure as an exception's text: the same reasons the project's downloader gives
_I2D_REASONS = [
    (re.compile(r"redirect error|infinite loop", re.I), lambda m: "too_many_redirects"),
    (re.compile(r"HTTP Error (\d{3})"), lambda m: f"http_{m.group(1)}"),
    (re.compile(r"timed? ?out", re.I), lambda m: "timeout"),
    (re.compile(r"CERTIFICATE|SSL|TLS", re.I), lambda m: "tls_error"),
    (
        re.compile(
            r"Name or service not known|nodename nor servname|getaddrinfo|Connection (refused|reset)|"
            r"Remote end closed|RemoteDisconnected|urlopen error|IncompleteRead|BadStatusLine",
            re.I,
        ),
        lambda m: "connection_error",
    ),
    (re.compile(r"X-Robots-Tag", re.I), lambda m: "disallowed_by_robots_tag"),
    (re.compile(r"unknown url type|unsupported|no host given", re.I), lambda m: "bad_url"),
    (re.compile(r"decod|identify|cannot|image", re.I), lambda m: Reason.NOT_AN_IMAGE),
]


def img2dataset_reason(message: str) -> str:
    """The project's reason for one of img2dataset's error messages."""
    for pattern, reason in _I2D_REASONS:
        if m := pattern.search(message or ""):
            return str(reason(m))
    return "download_failed"


def _refused_here(url: str) -> tuple[str, str] | None:
    """What the project's URL guard says of a URL before img2dataset is given it (only http(s), well formed):
    img2dataset's urllib would otherwise open file:// and ftp:// URLs too."""
    try:
        parse_url(url)
    except FetchError as e:
        return e.reason, e.detail
    return None


def _distributor_available(distributor: str) -> None:
    """A missing engine is one line naming what to install, before any download starts."""
    need = {"pyspark": "pip install pyspark", "ray": "pip install 'chiquito-or-not[ray]'"}
    if distributor in need and importlib.util.find_spec(distributor) is None:
        raise SourceError(f'distributor = "{distributor}" needs {distributor}: {need[distributor]}')


def download_img2dataset(
    urls: list[str],
    folder: Path,
    *,
    distributor: str,
    processes: int,
    threads: int,
    timeout: float,
    retries: int,
    log,
    shard_size: int = 1000,
) -> list[UrlOutcome]:
    """img2dataset over the URLs (original bytes kept: no resize, no re-encode; finished shards are not
    fetched again), its per-sample status read back from each shard's parquet."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which asks PyPI
    try:
        import img2dataset
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            "engine = \"img2dataset\" needs img2dataset: pip install 'chiquito-or-not[img2dataset]'"
        ) from None
    _distributor_available(distributor)
    refused = {u: r for u in urls if (r := _refused_here(u))}
    todo = [u for u in urls if u not in refused]
    out_dir = folder / "img2dataset"
    folder.mkdir(parents=True, exist_ok=True)
    if todo:
        listed = folder / "urls.parquet"
        if not listed.is_file():  # written whole or not at all: a torn list would stop every later run
            part = folder / ".urls.parquet.part"
            pq.write_table(pa.table({"url": todo}), part)
            os.replace(part, listed)
        log(f"  img2dataset: {len(todo)} URLs, {distributor} distributor, {processes} processes x {threads} threads")
        settings = dict(
            processes_count=processes,
            thread_count=threads,
            distributor=distributor,
            timeout=max(1, round(timeout)),
            retries=retries,
            number_sample_per_shard=shard_size,
        )
        _run_img2dataset(img2dataset, listed, out_dir, settings)
    got = _shard_outcomes(out_dir, log) if todo else {}
    missing = UrlOutcome("", None, "interrupted", "img2dataset did not report it")
    result = [UrlOutcome(u, None, *refused[u]) if u in refused else got.get(u, replace(missing, url=u)) for u in urls]
    counts = Counter(o.reason or "ok" for o in result)
    log("  img2dataset: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return result


def _run_img2dataset(img2dataset, listed: Path, out_dir: Path, settings: dict) -> None:
    """img2dataset.download over the parquet list; its failure is one line that keeps the finished shards."""
    try:
        img2dataset.download(
            url_list=str(listed),
            input_format="parquet",
            url_col="url",
            output_folder=str(out_dir),
            output_format="files",
            resize_mode="no",
            skip_reencode=True,
            disable_all_reencoding=True,
            extract_exif=False,
            compute_hash="sha256",
            incremental_mode="incremental",
            enable_wandb=False,
            **settings,
        )
    except Exception as e:  # its distributor failing to start, a full disk: one line, the shards done are kept
        cause = " ".join(short_error(e, 160).split())
        raise SourceError(
            f"img2dataset stopped: {cause}; fix that and run `chiquito dataset` again (finished shards in "
            f"{out_dir} are not fetched again)"
        ) from None


def _shard_outcomes(out_dir: Path, log) -> dict[str, UrlOutcome]:
    """Each URL's outcome as img2dataset's shards report it (a torn shard's URLs are fetched again next run)."""
    import pyarrow.parquet as pq

    got: dict[str, UrlOutcome] = {}
    for shard in sorted(out_dir.glob("*.parquet")):
        try:
            rows = pq.read_table(shard, columns=["url", "key", "status", "error_message"]).to_pylist()
        except Exception as e:  # a shard torn by a kill: its URLs count as not fetched (the next run redoes it)
            log(f"  img2dataset: {shard.name} unreadable ({str(e)[:80]}); its URLs are fetched again next run")
            continue
        for r in rows:
            url = r["url"]
            if r["status"] == "success":
                f = out_dir / shard.stem / f"{r['key']}.jpg"
                got[url] = UrlOutcome(url, f) if f.is_file() else UrlOutcome(url, None, "interrupted", "file missing")
            else:
                msg = " ".join((r["error_message"] or r["status"] or "").split())  # one line in manifest.csv
                got[url] = UrlOutcome(url, None, img2dataset_reason(msg), msg[:200])
    return got
