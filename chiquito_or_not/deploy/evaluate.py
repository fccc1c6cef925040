"""The evaluate stage: reload the exported model.pkl and measure it on folder-per-class images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import DataError, RunError
from ..core.files import atomic_write_text, write_csv
from ..core.plots import plot_confusion, plot_top_losses
from ..core.images import IMAGE_EXTS
from .predict import load_model, predict_paths

__all__ = ["evaluate", "labelled_files", "compute_metrics", "resolve_run"]


def resolve_run(target: str | Path) -> Path:
    """A run folder from a recipe file (its run folder) or a run folder itself."""
    from ..core.paths import run_dir
    from ..core.recipe import load_recipe

    p = Path(target)
    if p.is_file() and p.suffix == ".toml":
        return run_dir(load_recipe(p).name)
    if p.is_dir():
        return p
    raise RunError(f"{p}: neither a recipe file nor a run folder; pass recipes/NAME.toml or runs/NAME")


def labelled_files(folder: Path, vocab: list[str]) -> tuple[list[Path], list[int]]:
    """Images under folder/<class>/, with their class index; unknown class folders are an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass a folder with one sub-folder per class")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [d.name for d in subdirs if d.name not in vocab]
    if unknown:
        raise DataError(f"{folder}: class folder(s) {', '.join(unknown)} are not classes of the model "
                        f"({', '.join(vocab)}); rename or remove them")
    files, ys = [], []
    for d in subdirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                files.append(p)
                ys.append(vocab.index(d.name))
    if not files:
        raise DataError(f"{folder}: no images in class sub-folders ({', '.join(vocab)})")
    return files, ys


def compute_metrics(y: np.ndarray, pred: np.ndarray, vocab: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix, counts."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    k = list(range(len(vocab)))
    p, r, f1, sup = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    cm = confusion_matrix(y, pred, labels=k)
    confused = sorted(((int(cm[i, j]), vocab[i], vocab[j]) for i in k for j in k if i != j and cm[i, j]),
                      key=lambda t: (-t[0], t[1], t[2]))
    return {
        "accuracy": float((y == pred).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "per_class": {vocab[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]),
                                 "support": int(sup[i])} for i in k},
        "confusion_matrix": {"labels": vocab, "rows_actual_cols_predicted": cm.tolist()},
        "counts": {"n": int(len(y)), **{vocab[i]: int(sup[i]) for i in k}},
        "errors": int((y != pred).sum()),
        "most_confused": [{"actual": a, "predicted": p_, "count": n} for n, a, p_ in confused],
    }


def _evaluate_set(learn, name: str, folder: Path, out: Path, suffix: str, top_k: int, log) -> dict:
    vocab = list(learn.dls.vocab)
    files, ys = labelled_files(folder, vocab)
    preds = predict_paths(learn, files)
    bad = [p for p in preds if p.error]
    if bad:
        raise DataError(f"{bad[0].path}: {bad[0].error}; {len(bad)} file(s) in {folder} are not usable images")
    probs = np.array([[p.probabilities[c] for c in vocab] for p in preds])
    y = np.array(ys)
    pred = probs.argmax(1)
    m = compute_metrics(y, pred, vocab)
    m["set"], m["folder"] = name, str(folder)
    cm = np.array(m["confusion_matrix"]["rows_actual_cols_predicted"])
    plot_confusion(cm, vocab, out / f"confusion_matrix{suffix}.png", f"{name}: accuracy {m['accuracy']:.3f}")
    write_csv(out / f"confusion_matrix{suffix}.csv",
              [{"actual": vocab[i], **{f"predicted_{vocab[j]}": int(cm[i, j]) for j in range(len(vocab))}}
               for i in range(len(vocab))], ["actual"] + [f"predicted_{c}" for c in vocab])
    p_true = probs[np.arange(len(y)), y]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    worst = np.argsort(-loss)[:top_k]
    plot_top_losses([dict(path=files[i], actual=vocab[y[i]], predicted=vocab[pred[i]], loss=float(loss[i]),
                          prob_actual=float(p_true[i])) for i in worst], out / f"top_losses{suffix}.png", name)
    m["top_losses"] = [{"file": str(files[i]), "actual": vocab[y[i]], "predicted": vocab[pred[i]],
                        "loss": round(float(loss[i]), 4)} for i in worst]
    log(f"  {name}: accuracy {m['accuracy']:.4f} ({m['counts']['n'] - m['errors']}/{m['counts']['n']}), "
        f"balanced {m['balanced_accuracy']:.4f}; confusion (rows actual) {cm.tolist()}")
    if m["most_confused"]:
        log("  most confused: " + ", ".join(f"{c['actual']} as {c['predicted']} x{c['count']}"
                                             for c in m["most_confused"][:5]))
    return m


def evaluate(target: str | Path, data: Path | None = None, out: Path | None = None, top_k: int = 9,
             log=print, notice=None) -> dict:
    """Metrics and figures of the run's exported model.pkl on its valid (and test) split, or on `data`.
    `notice` is load_model's pickle warning (finetune silences it for the file it has just written)."""
    run = resolve_run(target)
    learn = load_model(run / "model.pkl", notice=notice) if (run / "model.pkl").is_file() else None
    if learn is None:
        raise RunError(f"{run}: no model.pkl; run `chiquito finetune RECIPE` first")
    if data is not None:
        data = Path(data)
        out = Path(out) if out else run / f"eval-{data.name}"
        res = {"data": _evaluate_set(learn, data.name, data, out, "", top_k, log)}
    else:
        state = json.loads((run / "state.json").read_text()) if (run / "state.json").is_file() else {}
        root = Path(state.get("dataset", ""))
        if not (root / "valid").is_dir():
            raise RunError(f"{run}: its dataset folder {root} has no valid/ split; pass --data FOLDER")
        out = Path(out) if out else run
        res = {"valid": _evaluate_set(learn, "valid", root / "valid", out, "", top_k, log)}
        if (root / "test").is_dir():
            res["test"] = _evaluate_set(learn, "test", root / "test", out, "_test", top_k, log)
    res["model"] = str(run / "model.pkl")
    atomic_write_text(out / "metrics.json", json.dumps(res, indent=2) + "\n")
    return res
