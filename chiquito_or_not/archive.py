"""Archives: download a pinned archive from mirrors, verify it, extract it safely."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import SourceError

__all__ = ["fetch_archive", "extract_archive"]


def fetch_archive(mirrors, size: int, sha256: str, target: Path, verify: bool | str = True,
                  timeout: float = 30.0, what: str = "'mirrors'", local: str = "set archive = PATH") -> Path:
    """`target` holding the archive: reused when it checks out, else downloaded from the first mirror that
    works. `size` 0 means unknown (the sha256 still decides)."""
    import requests

    if target.is_file() and (not size or target.stat().st_size == size) and _sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in mirrors:
        part = target.with_name(f".{target.name}.part")
        try:
            with requests.get(url, stream=True, timeout=(10, timeout), verify=verify) as r:
                if r.status_code != 200:
                    errors.append(f"{url}: HTTP {r.status_code}")
                    continue
                h, n = hashlib.sha256(), 0
                with open(part, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        n += len(chunk)
                        if size and n > size:
                            break
                        h.update(chunk)
                        f.write(chunk)
            if size and n != size:
                errors.append(f"{url}: {n if n <= size else 'more than ' + str(size)} bytes, expected {size}")
            elif h.hexdigest() != sha256:
                errors.append(f"{url}: sha256 {h.hexdigest()[:16]}…, expected {sha256[:16]}…")
            else:
                part.replace(target)
                return target
        except requests.RequestException as e:
            errors.append(f"{url}: {type(e).__name__}: {str(e)[:80]}")
        finally:
            part.unlink(missing_ok=True)
    raise SourceError(f"no mirror gave a good {target.name} ({'; '.join(errors)}); download it yourself "
                      f"and {local}, or add a mirror to {what}")


def _sha256(path: Path) -> str:
    from .files import sha256_file

    return sha256_file(path)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Stream-extract into a temporary folder beside `dest`, then rename; refuses `..`, absolute paths
    and links that leave the folder, and leaves nothing behind when it refuses."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with tarfile.open(archive, "r|*") as tf:
            tf.extractall(tmp, filter="data")
        tmp.replace(dest)
    except tarfile.FilterError as e:
        raise SourceError(f"{archive}: unsafe archive member ({e}); nothing was extracted") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SourceError(f"{archive}: cannot extract ({type(e).__name__}: {e}); download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
