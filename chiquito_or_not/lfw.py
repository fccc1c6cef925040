"""LFW negatives: fetch lfw.tgz from a mirror, verify it, extract it safely, pick one photo per person."""

from __future__ import annotations

import hashlib
import random
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import SourceError

__all__ = ["LFW_MIRRORS", "LFW_SHA256", "LFW_SIZE", "fetch_archive", "extract_archive", "lfw_root",
           "sample_one_per_person"]

# The original host (vis-www.cs.umass.edu) is dead; this is the mirror scikit-learn uses.
LFW_MIRRORS = ("https://ndownloader.figshare.com/files/5976018",)
LFW_SIZE = 180_566_744
LFW_SHA256 = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"


def fetch_archive(mirrors, size: int, sha256: str, target: Path, verify: bool | str = True,
                  timeout: float = 30.0) -> Path:
    """`target` holding the archive: reused when it checks out, else downloaded from the first mirror that works."""
    import requests

    if target.is_file() and target.stat().st_size == size and _sha256(target) == sha256:
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
                        if n > size:
                            break
                        h.update(chunk)
                        f.write(chunk)
            if n != size:
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
    raise SourceError(f"LFW: no mirror gave a good lfw.tgz ({'; '.join(errors)}); download it yourself "
                      "and set archive = PATH in the lfw source, or add a mirror to 'mirrors'")


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


def lfw_root(folder: Path) -> Path:
    """The folder whose sub-folders are people: `folder/lfw` when the archive's top folder is there."""
    inner = folder / "lfw"
    root = inner if inner.is_dir() else folder
    if not any(p.is_dir() for p in root.iterdir()):
        raise SourceError(f"{root}: no person folders; expected lfw/<Person_Name>/<Person_Name>_0001.jpg")
    return root


def sample_one_per_person(root: Path, count: int, seed: int) -> list[Path]:
    """`count` people chosen at random (seeded), one random photo of each; all people when count exceeds them."""
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(f"lfw-people:{seed}")
    chosen = sorted(rng.sample(people, min(count, len(people))))
    out = []
    for person in chosen:
        photos = sorted(p for p in person.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        if photos:
            out.append(random.Random(f"lfw-photo:{seed}:{person.name}").choice(photos))
    return out
