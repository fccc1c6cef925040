"""review.csv: the user's decisions on suspect images (keep, relabel, exclude), by content hash.

Append-only and written by one process at a time (an exclusive lock on `review.csv.lock` for as long as
a review page is open): a decision is a whole line, flushed and synced before the page hears "saved",
so a closed tab or a crash loses nothing. The last line for an image wins; `keep` undoes earlier ones.
`chiquito dataset` applies the decisions after the split is made on the labels the sources gave, so
every image the review did not touch keeps its split.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import DataError
from ..core.files import NotRegular, ends_with_newline, read_regular
from ..core.reasons import Reason, Status

__all__ = [
    "DECISIONS",
    "COLUMNS",
    "Decision",
    "Journal",
    "ReviewLog",
    "valid_sha",
    "read_decisions",
    "last_decisions",
    "journal_rows",
    "apply_review",
]

DECISIONS = ("keep", "relabel", "exclude")
COLUMNS = ["sha256", "path", "decision", "label", "time"]


@dataclass(frozen=True)
class Decision:
    sha256: str
    path: str
    decision: str  # one of DECISIONS
    label: str  # the new label for relabel; the current one otherwise
    time: str


def valid_sha(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def read_decisions(path: Path) -> tuple[dict[str, Decision], list[str]]:
    """({sha256: the last decision, unless it was keep}, problems): what `dataset` applies."""
    last, problems = last_decisions(path)
    return {k: d for k, d in last.items() if d.decision != "keep"}, problems


MAX_LINE = 1 << 20  # a journal line longer than this is not one the program wrote


def journal_rows(path: Path, columns: list[str], what: str) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """([(line number, fields)] with exactly len(columns) fields, problems) of a journal file. Each line
    is parsed on its own (Journal writes no line break inside a field), so a line torn by a crash, an
    unclosed quote or a field over any size limit loses that line only, named in `problems`. A file
    whose first line is not `columns` is refused (DataError); no file at all is no rows (a folder or
    other non-file in its place is refused)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return [], []
    try:
        text = read_regular(path).decode("utf-8", errors="replace")
    except (NotRegular, OSError) as e:
        raise DataError(f"{path}: cannot read it ({e}); move it away, or pass --no-review") from None
    lines = text.split("\n")
    if _fields(lines[0].rstrip("\r")) != columns:
        raise DataError(
            f"{path}: not a {what} file (its first line should be {','.join(columns)}); "
            "move it away, or pass --no-review"
        )
    rows, problems = [], []
    for n, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        row = _fields(line) if len(line) <= MAX_LINE else None
        if row is None:
            problems.append(f"line {n}: not a CSV line" + (" (over 1 MiB)" if len(line) > MAX_LINE else ""))
        elif len(row) != len(columns):
            problems.append(f"line {n}: {len(row)} fields, expected {len(columns)}")
        else:
            rows.append((n, row))
    return rows, problems


def _fields(line: str) -> list[str] | None:
    csv.field_size_limit(MAX_LINE + 1)
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def last_decisions(path: Path) -> tuple[dict[str, Decision], list[str]]:
    """({sha256: the last decision}, problems): a line that cannot be read is left out and named in
    `problems` (a crash can leave a last half line). No file: no decisions; a folder or other
    non-file in its place: DataError."""
    out: dict[str, Decision] = {}
    rows, problems = journal_rows(path, COLUMNS, "review")
    for n, row in rows:
        d = Decision(*row)
        if not valid_sha(d.sha256) or d.decision not in DECISIONS:
            problems.append(f"line {n}: not a sha256 and one of {', '.join(DECISIONS)}")
            continue
        out[d.sha256] = d
    return out, problems


class Journal:
    """The one writer of an append-only CSV journal (`columns` its header): holds `PATH.lock` from open()
    to close(), so a second page on the same dataset is refused. Each row is appended whole, after a
    newline if the file does not end with one (a line torn by a crash, or by anything else writing to
    the file, stays as it is and is skipped when read), then synced before write returns."""

    columns: list[str] = []
    what = "journal"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def check(self) -> None:
        """Refuse a file that is not this journal before appending to it (a subclass reads it)."""

    def open(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataError(
                f"{self.path} is open in another {self.what} (one writer at a time); close that one first"
            ) from None
        self._fd = fd
        if self.path.is_file():
            self.check()
        return self

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def append_row(self, row: list) -> None:
        if self._fd is None:
            raise RuntimeError(f"{type(self).__name__}.write before open()")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        # one physical line per row: a line break inside a field (a path may hold one) becomes a space
        row = [" ".join(str(v).splitlines()) if isinstance(v, str) else v for v in row]
        with self._lock:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                w.writerow(self.columns)
            elif not ends_with_newline(self.path):
                buf.write("\n")
            w.writerow(row)
            self._append(buf.getvalue().encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


class ReviewLog(Journal):
    """review.csv's one writer (chiquito review)."""

    columns = COLUMNS
    what = "review"

    def check(self) -> None:
        read_decisions(self.path)

    def write(self, sha256: str, path: str, decision: str, label: str) -> Decision:
        if not valid_sha(sha256) or decision not in DECISIONS:
            raise ValueError(f"bad decision {decision!r} for {sha256!r}")
        d = Decision(sha256, path, decision, label, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.append_row([d.sha256, d.path, d.decision, d.label, d.time])
        return d


def apply_review(rows: list[dict], recs: list, decisions: dict[str, Decision]) -> dict[str, int]:
    """Apply decisions to the split rows (in place: excluded rows removed, relabelled rows moved to their
    class in the same split) and to the manifest records; returns counts excluded / relabelled."""
    counts = {"excluded": 0, "relabelled": 0}
    if not decisions:
        return counts
    keep = []
    for r in rows:
        d = decisions.get(r["sha256"])
        if d is None or (d.decision == "relabel" and d.label == r["label"]):
            keep.append(r)
        elif d.decision == "exclude":
            counts["excluded"] += 1
        else:
            name = r["file"].rsplit("/", 1)[-1]
            keep.append({**r, "label": d.label, "file": f"{r['split']}/{d.label}/{name}"})
            counts["relabelled"] += 1
    rows[:] = keep
    for rec in recs:
        d = decisions.get(rec.sha256)
        if d is None or rec.status == Status.REJECTED:
            continue
        if d.decision == "exclude":
            rec.status, rec.reason = Status.REJECTED, Reason.EXCLUDED_IN_REVIEW
            rec.detail = f"excluded in review.csv at {d.time}"
        elif d.label != rec.label:
            rec.detail = f"relabelled in review.csv at {d.time}: was {rec.label!r}"
            rec.label = d.label
    return counts
