"""The predict stage: the files to predict, and the model's task's batched inference on them (core.model_loader
loads the model, whatever its format)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ChiquitoError
from ..core.files import IMAGE_EXTS, ends_with_newline
from ..core.paths import Roots
from ..core.task_registry import task_of_model

__all__ = [
    "expand_paths",
    "predict_paths",
    "predict_to_jsonl",
    "done_in_jsonl",
    "predict_model",
    "predict_model_to_jsonl",
]


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), in a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
        else:
            out.append(p)
    return out


def predict_paths(model, paths: list[Path], bs: int = 64, workers: int = 2, threshold: float | None = None) -> list:
    """The model's task's predictions for every file; a file that is not a usable image gets an error
    and the others go on. `threshold`: a detector's lowest score."""
    return task_of_model(model).inference.predict_files(model, paths, bs=bs, workers=workers, threshold=threshold)


def done_in_jsonl(out: Path) -> set[str]:
    """The paths a JSON-lines output already answers without an error (a line torn by a kill, or any
    line that is not such a record, is not counted: that file is predicted again)."""
    done = set()
    if not out.exists():
        return done
    if not out.is_file():
        raise ChiquitoError(f"--out {out}: not a regular file; give a .jsonl file path")
    with open(out, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("path"), str) and "error" not in rec:
                done.add(rec["path"])
    return done


def predict_to_jsonl(
    model, paths: list[Path], out: Path, bs: int = 64, threshold: float | None = None, top_k: int = 1, chunk: int = 0
) -> dict:
    """Predict `paths` into `out`, one JSON line per image as each batch is answered (appended and synced:
    memory holds one chunk, an interrupted run loses at most the chunk in flight), skipping the paths the
    file already answers. {"done": already there, "predicted": now, "failed": now with an error}."""
    out = Path(out)
    done = done_in_jsonl(out)
    todo = [p for p in paths if str(p) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"done": len(paths) - len(todo), "predicted": 0, "failed": 0}
    chunk = chunk or max(bs * 4, 256)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if not ends_with_newline(out):
            os.write(fd, b"\n")  # a torn last line stays on its own line
        for i in range(0, len(todo), chunk):
            results = predict_paths(model, todo[i : i + chunk], bs=bs, threshold=threshold)
            os.write(fd, "".join(json.dumps(r.to_json(top_k)) + "\n" for r in results).encode("utf-8"))
            os.fsync(fd)
            counts["predicted"] += sum(1 for r in results if not r.error)
            counts["failed"] += sum(1 for r in results if r.error)
    finally:
        os.close(fd)
    return counts


def _files_of(paths: list[str | Path]) -> list[Path]:
    files = expand_paths(paths)
    if not files:
        raise ChiquitoError("no images found in the given paths")
    return files


def predict_model(
    model_path: Path,
    paths: list[str | Path],
    bs: int = 64,
    threshold: float | None = None,
    draw: Path | None = None,
    roots: Roots | None = None,
) -> tuple[list, int]:
    """`chiquito predict`: load the model (a .pkl is a pickle: loading it runs the code it holds), predict every
    image under `paths`, and draw a detector's answers into `draw`: (results, images drawn)."""
    from ..core.model_loader import load_model

    model = load_model(model_path, roots=roots)
    drawing = task_of_model(model).draw
    if draw is not None and drawing is None:
        raise ChiquitoError("--draw applies to detectors: a classifier has no boxes to draw")
    results = predict_paths(model, _files_of(paths), bs=bs, threshold=threshold)
    drawn = drawing.draw_files(model, results, draw) if draw is not None else 0
    return results, drawn


def predict_model_to_jsonl(
    model_path: Path,
    paths: list[str | Path],
    out: Path,
    bs: int = 64,
    threshold: float | None = None,
    top_k: int = 1,
    roots: Roots | None = None,
) -> dict:
    """`chiquito predict --out`: load the model (a .pkl runs the code it holds) and stream its answers into `out`."""
    from ..core.model_loader import load_model

    model = load_model(model_path, roots=roots)
    return predict_to_jsonl(model, _files_of(paths), out, bs=bs, threshold=threshold, top_k=top_k)
