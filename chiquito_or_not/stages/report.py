"""runs/NAME/report.html and runs/NAME/README.md: one page and one model card per run, built from the run's
own files (recipe.json, state.json, history.csv, lr_find.json, metrics.json, export.json, the figures) and its
dataset's manifest.csv and split.csv, with a Jinja2 template (static/report.html). The page is one file that
works offline: figures and thumbnails are embedded, nothing is asked of any host. Files the run did not write
(no export yet, LR finder off) leave their section out; a file that cannot be read is named on the page."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter, defaultdict
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..core.errors import RunError
from ..core.files import atomic_write_text, read_csv_rows
from ..core.layout import DatasetFolder, RunFolder
from ..core.recipe import load_resolved, recipe_toml
from ..core.task_registry import get_task
from ..train.runs import read_json

__all__ = ["write_report", "report_data", "model_card", "REPORT", "MODEL_CARD"]

REPORT = "report.html"
MODEL_CARD = "README.md"
STATIC = Path(__file__).resolve().parent.parent / "static"
THUMB = 96  # px, the longer side of a thumbnail on the page
FIGURES = ("confusion_matrix.png", "top_losses.png", "pr_curves.png", "detection_confusion.png", "worst.png")


def _json(path: Path, problems: list) -> dict:
    """A run file's JSON object ({} when the run did not write it; named in `problems` when unreadable)."""
    if not path.is_file():
        return {}
    data = read_json(path)
    if data is None:
        problems.append(f"{path.name}: unreadable, or not a JSON object")
    return data or {}


def _png(path: Path) -> str:
    """A figure as a data URI (the page holds it: no file beside it, no request)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""


def _thumb(path: Path) -> str:
    """A small JPEG of an image as a data URI, or "" when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _rejected(rows: list[dict]) -> list[tuple]:
    """(reason, how many, a few of the user's file names) for the inputs left out, most first."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.get("status") in ("rejected", "unused") and r.get("reason"):
            by_reason[r["reason"]].append(Path(r.get("raw_path") or r.get("clean_path") or "?").name)
    return sorted(((k, len(v), v[:5]) for k, v in by_reason.items()), key=lambda x: -x[1])


def _split_counts(folder: DatasetFolder) -> tuple[list[str], list[tuple]]:
    """(labels, [(split, counts per label, all)]) from split.csv (a detector's images count under "(images)")."""
    split = read_csv_rows(folder.split_csv) if folder.split_csv.is_file() else []
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in split:
        counts[r["split"]][r["label"] or "(images)"] += 1
    labels = sorted({lab for c in counts.values() for lab in c})
    return labels, [(s, [counts[s][lab] for lab in labels], sum(counts[s].values())) for s in counts]


def _data_section(root: Path) -> dict:
    """What went in: inputs per source, rejections by reason (a few names each), the split's counts."""
    folder = DatasetFolder(root)
    rows = read_csv_rows(folder.manifest) if folder.manifest.is_file() else []
    labels, split = _split_counts(folder)
    return {
        "root": str(root),
        "inputs": len(rows),
        "by_source": sorted(Counter(r.get("source", "") for r in rows).items()),
        "rejected": _rejected(rows),
        "split_labels": labels,
        "split": split,
        "raw_names": {r["clean_path"]: r.get("raw_path", "") for r in rows if r.get("clean_path")},
    }


def _history(run: RunFolder, kept: dict) -> dict:
    rows = read_csv_rows(run.history) if run.history.is_file() else []
    cols = list(rows[0]) if rows else []
    table = []
    for r in rows:
        cells = [r[c] if c in ("stage", "epoch") else _num(r[c]) for c in cols]
        table.append((cells, bool(kept) and str(r.get("epoch")) == str(kept.get("epoch"))))
    return {"columns": cols, "rows": table}


def _num(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def _mistakes(split: dict, raw_names: dict) -> list[dict]:
    """The worst predictions (highest loss first), with the user's own file names and thumbnails."""
    out = []
    for t in split.get("top_losses", [])[:12]:
        f = Path(t.get("file", ""))
        clean = "/".join(f.parts[-2:])  # label/hash.jpg, as the dataset's clean folder names it
        out.append(
            {
                "name": Path(raw_names.get(clean, "") or f.name).name,
                "actual": t.get("actual", ""),
                "predicted": t.get("predicted", ""),
                "loss": _num(t.get("loss")),
                "thumb": _thumb(f),
            }
        )
    return out


def _results(metrics: dict, task, raw_names: dict) -> list[dict]:
    out = []
    for split in ("valid", "test"):
        m = metrics.get(split)
        if not isinstance(m, dict):
            continue
        per_class = m.get("per_class") or {
            k: {"AP@0.5": v, "AP@[.5:.95]": m.get("ap_per_class", {}).get(k)}
            for k, v in m.get("ap50_per_class", {}).items()
        }
        cols = sorted({c for v in per_class.values() if isinstance(v, dict) for c in v})
        out.append(
            {
                "split": split,
                "headline": task.evaluation.headline(m),
                "per_class_cols": cols,
                "per_class": [
                    (k, [_cell(v.get(c)) for c in cols]) for k, v in per_class.items() if isinstance(v, dict)
                ],
                "by_size": sorted((m.get("ap_by_size") or {}).items()),
                "mistakes": _mistakes(m, raw_names),
                "interval": m.get("interval", {}),
            }
        )
    return out


def _cell(v) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"{_num(v[0])}-{_num(v[1])}"
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return str(int(v))
    return _num(v) if isinstance(v, float) else str(v)


def report_data(run_dir: str | Path) -> dict:
    """Everything the page shows, read from the run folder (RunError when it is not one)."""
    run = RunFolder(Path(run_dir))
    if not run.recipe.is_file():
        raise RunError(f"{run.root}: not a run folder (no recipe.json); pass runs/NAME")
    problems: list[str] = []
    recipe = load_resolved(run.recipe)
    task = get_task(recipe.task)
    state, metrics = _json(run.state, problems), _json(run.metrics, problems)
    lr = _json(run.lr_find_json, problems)
    root = Path(state.get("dataset") or "")
    data = _data_section(root) if state.get("dataset") else {}
    kept = metrics.get("kept") or {}
    exports = [(n, _json(run.root / n, problems)) for n in ("export.json", "export_tflite.json")]
    return {
        "name": recipe.name,
        "task": recipe.task,
        "question": recipe.description or f"which of {', '.join(task_labels(recipe))} a picture shows",
        "labels": task_labels(recipe),
        "recipe_toml": recipe_toml(recipe),
        "data": data,
        "lr": {"chosen": lr.get("chosen"), "chosen_by": lr.get("chosen_by"), "png": _png(run.lr_find_png)}
        if lr
        else {},
        "history": _history(run, kept),
        "loss_png": _png(run.loss_curve),
        "kept": kept,
        "results": _results(metrics, task, data.get("raw_names", {})),
        "figures": [(f, _png(run.root / f)) for f in FIGURES if (run.root / f).is_file()],
        "exports": [(n, e) for n, e in exports if e],
        "timings": sorted((state.get("timings") or {}).items()),
        "environment": sorted((metrics.get("environment") or state.get("environment") or {}).items()),
        "problems": problems,
    }


def task_labels(recipe) -> list[str]:
    return list(recipe.detect.labels) if recipe.task == "detect" else sorted(recipe.classes) or ["its classes"]


def _limitations(data: dict) -> list[str]:
    """What the run measured that limits the model: labels with few training pictures, what was left out."""
    train = next((cs for s, cs, _ in data.get("split", []) if s == "train"), [])
    few = [f"{lab} ({n})" for lab, n in zip(data.get("split_labels", []), train) if n < 30]
    out = [
        f"- labels with fewer than 30 training pictures: {', '.join(few)}"
        if few
        else "- every label has 30 training pictures or more"
    ]
    return out + [f"- {n} inputs left out: {r}" for r, n, _ in data.get("rejected", [])[:5]]


def model_card(d: dict, run: Path) -> str:
    """The run's model card (Hugging Face's form: YAML front matter, then sections), from report_data."""
    lines = [
        "---",
        "library_name: fastai",
        f"pipeline_tag: {'object-detection' if d['task'] == 'detect' else 'image-classification'}",
        "tags: [chiquito_or_not]",
        "---",
        "",
        f"# {d['name']}",
        "",
        "## Intended use",
        "",
        f"Tells {d['question']}. Trained by chiquito_or_not on the data below only: pictures unlike them "
        "(other sources, framing, lighting) may be answered worse than the figures say.",
        "",
        "## Data",
        "",
    ]
    data = d["data"]
    if data:
        lines.append(f"{data['inputs']} inputs from these sources (each source's own licence applies):")
        lines += [f"- {s or '(unnamed)'}: {n}" for s, n in data["by_source"]]
        lines += [
            "",
            "| split | " + " | ".join(data["split_labels"]) + " | all |",
            "|---" * (len(data["split_labels"]) + 2) + "|",
        ]
        lines += [f"| {s} | " + " | ".join(str(c) for c in cs) + f" | {n} |" for s, cs, n in data["split"]]
    lines += ["", "## Metrics", ""]
    lines += [f"- {r['split']}: {r['headline']}" for r in d["results"]]
    if d["kept"]:
        k = d["kept"]
        lines.append(f"- the model is the epoch {k.get('epoch')} of stage {k.get('stage')}; {k.get('note', '')}")
    lines += ["", "## Limitations measured", "", *_limitations(data)]
    lines += [
        "",
        "## How to load it",
        "",
        "- `model.onnx`: onnxruntime, no torch; `chiquito predict model.onnx PICTURE` or `chiquito serve`.",
        "- `model.pkl`: `fastai.learner.load_learner` (a pickle: loading it runs any code it holds; load only files "
        "you made or trust).",
        "- `model.tflite` (after `chiquito export RUN --format tflite`): LiteRT on a phone.",
        "",
        f"The run's page: `{run / REPORT}`.",
        "",
    ]
    return "\n".join(lines)


def write_report(run_dir: str | Path, log=None) -> Path | None:
    """Write report.html and the model card README.md into the run folder; the page's path. With `log`, a
    failure is said there and None returned (a finished run stands without its page)."""
    if log is not None:
        try:
            return write_report(run_dir)
        except (OSError, ValueError, KeyError, TypeError, RunError) as e:
            log(f"  report not written ({type(e).__name__}: {e}); `chiquito report {run_dir}` tries again")
            return None
    run = Path(run_dir)
    d = report_data(run)
    env = Environment(loader=FileSystemLoader(STATIC), autoescape=select_autoescape(["html"]))
    atomic_write_text(run / REPORT, env.get_template("report.html").render(**d))
    atomic_write_text(run / MODEL_CARD, model_card(d, run))
    return run / REPORT
