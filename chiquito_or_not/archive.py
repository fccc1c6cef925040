"""Archives: download a pinned archive from mirrors, verify it, extract it safely."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import SourceError
from .files import sha256_file

__all__ = ["fetch_archive", "extract_once", "extract_archive"]


def fetch_archive(mirrors, size: int, sha256: str, target: Path, verify: bool | str = True,
                  timeout: float = 30.0, what: str = "'mirrors'", local: str = "set archive = PATH",
                  log=print, every: float = 10.0) -> Path:
    """`target` holding the archive: reused when it checks out, else downloaded from the first mirror that
    works. `size` 0 means unknown (the sha256 still decides). Fetched through net.open_url, the guarded
    fetch every download shares (no overall deadline: archives are large; each read still times out)."""
    from .net import FetchError, open_url

    if target.is_file() and (not size or target.stat().st_size == size) and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in mirrors:
        part = target.with_name(f".{target.name}.part")
        try:
            with open_url(url, verify=verify, connect_timeout=10, read_timeout=timeout, deadline=None) as r:
                if r.status != 200:
                    errors.append(f"{url}: HTTP {r.status}")
                    continue
                h, n = hashlib.sha256(), 0
                progress = _Progress(target.name, size or int(r.headers.get("Content-Length", "0") or 0), log,
                                     every)
                with open(part, "wb") as f:
                    for chunk in r.iter_chunks(1 << 20):
                        n += len(chunk)
                        if size and n > size:
                            break
                        h.update(chunk)
                        f.write(chunk)
                        progress(n)
                progress.done(n)
            if size and n != size:
                errors.append(f"{url}: {n if n <= size else 'more than ' + str(size)} bytes, expected {size}")
            elif h.hexdigest() != sha256:
                errors.append(f"{url}: sha256 {h.hexdigest()[:16]}…, expected {sha256[:16]}…")
            else:
                part.replace(target)
                return target
        except FetchError as e:
            errors.append(f"{url}: {e.reason}: {e.detail[:80]}")
        finally:
            part.unlink(missing_ok=True)
    raise SourceError(f"no mirror gave a good {target.name} ({'; '.join(errors)}); download it yourself "
                      f"and {local}, or add a mirror to {what}")


class _Progress:
    """An archive download's progress: a live line on a terminal, else a line every `every` seconds."""

    def __init__(self, name: str, total: int, log, every: float):
        import sys
        import time

        self.name, self.total, self.log, self.every = name, total, log, every
        self.tty, self.t0 = sys.stdout.isatty(), time.monotonic()
        self.last = self.t0
        log(f"  fetching {name}" + (f" ({total / 2**20:.1f} MB)" if total else ""))

    def line(self, n: int) -> str:
        import time

        t = max(time.monotonic() - self.t0, 1e-6)
        of = f" of {self.total / 2**20:.1f}" if self.total else ""
        return f"  {self.name}: {n / 2**20:.1f}{of} MB, {n / 2**20 / t:.1f} MB/s, {t:.0f}s"

    def __call__(self, n: int):
        import sys
        import time

        if self.tty:
            sys.stdout.write("\r" + self.line(n))
            sys.stdout.flush()
        elif time.monotonic() - self.last >= self.every:
            self.log(self.line(n))
            self.last = time.monotonic()

    def done(self, n: int):
        import sys

        if self.tty:
            sys.stdout.write("\n")
        self.log(self.line(n) + " (done)")


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
