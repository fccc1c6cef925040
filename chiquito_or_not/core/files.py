"""Small file helpers: hashing, atomic writes, glob patterns."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .reasons import Reason

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}  # taken for images

__all__ = [
    "IMAGE_EXTS",
    "sha256_file",
    "sha256_bytes",
    "atomic_write_bytes",
    "atomic_write_text",
    "glob_match",
    "read_regular",
    "NotRegular",
    "MAX_FILE_BYTES",
    "bytes_written",
    "write_csv",
    "read_csv_rows",
    "shown_path",
    "ends_with_newline",
]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MAX_FILE_BYTES = 256 * 2**20  # larger than any image worth training on; a cap so /dev/zero cannot fill memory


class NotRegular(OSError):
    """A path that is not a regular file (pipe, device, socket, folder) or is over the size cap."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_regular(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, at most max_bytes: a named pipe, a device or a socket is refused
    without blocking (opened non-blocking, then fstat), and the read is bounded."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a named pipe"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a folder"
                if stat.S_ISDIR(st.st_mode)
                else "not a regular file"
            )
            raise NotRegular(Reason.NOT_A_REGULAR_FILE, f"{kind}, not a regular file")
        if st.st_size > max_bytes:
            raise NotRegular(Reason.TOO_LARGE, f"{st.st_size} bytes, over the {max_bytes} byte cap")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew while we read
            raise NotRegular(Reason.TOO_LARGE, f"over the {max_bytes} byte cap")
        return data
    finally:
        if fd >= 0:
            os.close(fd)


def ends_with_newline(path: Path) -> bool:
    """Whether an append-only file is empty or ends with a line break (else its last line was torn, and
    the next line must start on a line of its own)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_written = [0]  # bytes this process wrote through atomic_write_bytes (what a disk-full message reports)


def bytes_written() -> int:
    return _written[0]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _written[0] += len(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write rows as CSV atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file this project wrote (write_csv), as dicts keyed by its header."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _lower_ext(s: str) -> str:
    """`a/B.JPG` -> `a/B.jpg`: the extension, case-folded (a pattern's too, when it ends in one)."""
    head, dot, ext = s.rpartition(".")
    return f"{head}.{ext.lower()}" if dot and "/" not in ext else s


@functools.lru_cache(maxsize=1024)
def _compiled(patterns: tuple[str, ...]):
    """wcmatch's matcher for `patterns`, compiled once (a source's files are matched against the same few)."""
    from wcmatch import glob

    return glob.compile([_lower_ext(p) for p in patterns], flags=glob.GLOBSTAR | glob.BRACE | glob.DOTMATCH)


def glob_match(rel_path: str, include: tuple[str, ...], exclude: tuple[str, ...] = ()) -> bool:
    """Whether a relative POSIX path matches an include glob and no exclude glob, with wcmatch: `**` spans
    folders, `{a,b}` gives alternatives, `[ab]` classes; extensions match whatever their case."""
    path = _lower_ext(rel_path)
    return (
        bool(include)
        and _compiled(tuple(include)).match(path)
        and not (exclude and _compiled(tuple(exclude)).match(path))
    )


def shown_path(path: str) -> str:
    """A path as one unambiguous field: as it is, or JSON-quoted with escapes when it holds a control
    character, a backslash, a quote at the start, or bytes that are not UTF-8."""
    if not path.isprintable() or "\\" in path or path.startswith('"'):  # surrogates are not printable
        return json.dumps(path)
    return path
