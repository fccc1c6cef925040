"""Archives: download a pinned archive from mirrors, verify it, extract it safely."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..core.errors import SourceError
from ..core.files import sha256_file
from ..core.http_fetch import FetchError, clip, open_url
from ..core.progress_line import Progress

__all__ = ["fetch_archive", "extract_once", "extract_archive"]


def fetch_archive(
    mirrors,
    size: int,
    sha256: str,
    target: Path,
    verify: bool | str = True,
    timeout: float = 30.0,
    what: str = "'mirrors'",
    local: str = "set archive = PATH",
    log=print,
    every: float = 10.0,
    proxy: str = "",
) -> Path:
    """`target` holding the archive: reused when it checks out, else downloaded from the first mirror that
    works. `size` 0 means unknown (the sha256 still decides). Fetched through net.open_url, the guarded
    fetch every download shares (no overall deadline: archives are large; each read still times out),
    through `proxy` when given. A mirror that fails is named, and so is the one tried next."""
    if target.is_file() and (not size or target.stat().st_size == size) and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    mirrors = list(mirrors)
    for i, url in enumerate(mirrors):
        if errors:
            log(f"  {target.name}: {errors[-1]}; trying mirror {i + 1} of {len(mirrors)}, {url}")
        part = target.with_name(f".{target.name}.part")
        try:
            problem = _download_one(url, part, target.name, size, sha256, verify, timeout, proxy, log, every)
            if not problem:
                part.replace(target)
                return target
            errors.append(f"{url}: {problem}")
        except FetchError as e:
            errors.append(f"{url}: {e.reason}: {clip(e.detail, 80)}")
        finally:
            part.unlink(missing_ok=True)
    raise SourceError(
        f"no mirror gave a good {target.name} ({'; '.join(errors)}); download it yourself "
        f"and {local}, or add a mirror to {what}"
    )


def _download_one(url, part: Path, name: str, size: int, sha256: str, verify, timeout, proxy, log, every) -> str:
    """One mirror's archive into `part`, checked: "" when it is the pinned file, else what is wrong with it."""
    with open_url(url, verify=verify, connect_timeout=10, read_timeout=timeout, deadline=None, proxy=proxy) as r:
        if r.status != 200:
            return f"HTTP {r.status}"
        h, n = hashlib.sha256(), 0
        total = size or int(r.headers.get("Content-Length", "0") or 0)
        log(f"  fetching {name}" + (f" ({total / 2**20:.1f} MB)" if total else ""))
        progress = Progress(log, every)
        with open(part, "wb") as f:
            for chunk in r.iter_chunks(1 << 20):
                n += len(chunk)
                if size and n > size:
                    break
                h.update(chunk)
                f.write(chunk)
                progress.show(_mb_line(name, n, total, progress.elapsed()))
        progress.end(_mb_line(name, n, total, progress.elapsed()) + " (done)")
    if size and n != size:
        return f"{n if n <= size else 'more than ' + str(size)} bytes, expected {size}"
    if h.hexdigest() != sha256:
        return f"sha256 {h.hexdigest()[:16]}…, expected {sha256[:16]}…"
    return ""


def _mb_line(name: str, n: int, total: int, seconds: float) -> str:
    t = max(seconds, 1e-6)
    return (
        f"{name}: {n / 2**20:.1f}{f' of {total / 2**20:.1f}' if total else ''} MB, {n / 2**20 / t:.1f} MB/s, {t:.0f}s"
    )


def extract_once(archive: Path, dest: Path, extract) -> Path:
    """`extract(archive, folder)` into a temporary folder beside `dest`, then rename: a half-extracted
    folder never looks finished, and a failed one leaves nothing behind."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        extract(archive, tmp)
        tmp.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _untar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r|*") as tf:  # streamed; `data` refuses `..`, absolute paths, links leaving
        tf.extractall(dest, filter="data")


def extract_archive(archive: Path, dest: Path) -> Path:
    """A .tar(.gz) stream-extracted safely into `dest` (see extract_once); unsafe members are refused."""
    try:
        return extract_once(archive, dest, _untar)
    except tarfile.FilterError as e:
        raise SourceError(f"{archive}: unsafe archive member ({e}); nothing was extracted") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SourceError(f"{archive}: cannot extract ({type(e).__name__}: {e}); download it again") from None
