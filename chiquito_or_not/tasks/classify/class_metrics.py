"""The classifier's evaluation on one labelled folder: metrics, confusion matrix, worst mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import DataError
from ...core.files import write_csv
from ...core.plots import plot_confusion
from ...core.stats import DRAWS, LEVEL, balanced_interval, recall_intervals, wilson
from .class_data import labelled_files
from .class_figures import plot_top_losses
from .class_inference import predict_paths

__all__ = ["compute_metrics", "evaluate_set", "headline"]

NO_FACE = "no face found"  # core.face_detectors.face_step's refusal


def headline(m: dict) -> str:
    """accuracy 0.7939 (104/131, 95 % CI 0.717-0.854), balanced 0.7702 (0.690-0.846)"""
    n = m["counts"]["n"]
    (a0, a1), (b0, b1) = m["accuracy_ci95"], m["balanced_accuracy_ci95"]
    return (
        f"accuracy {m['accuracy']:.4f} ({n - m['errors']}/{n}, 95 % CI {a0:.3f}-{a1:.3f}), "
        f"balanced {m['balanced_accuracy']:.4f} ({b0:.3f}-{b1:.3f})"
    )


def compute_metrics(y: np.ndarray, pred: np.ndarray, vocab: list[str], seed: int = 0) -> dict:
    """Accuracy and balanced accuracy with their 95 % intervals (Wilson; seeded posterior simulation),
    per-class precision/recall/F1 (recall with its interval), confusion matrix, counts, and the
    right/wrong outcome of every image in order (what compare's and sweep's paired test reads)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    y, pred = np.asarray(y), np.asarray(pred)
    k = list(range(len(vocab)))
    p, r, f1, sup = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    right = y == pred
    bal_ci, recall_ci = balanced_interval(y, right, len(vocab), seed=seed), recall_intervals(y, right, len(vocab))
    cm = confusion_matrix(y, pred, labels=k)
    confused = sorted(
        ((int(cm[i, j]), vocab[i], vocab[j]) for i in k for j in k if i != j and cm[i, j]),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    return {
        "accuracy": float(right.mean()),
        "accuracy_ci95": list(wilson(int(right.sum()), len(y))),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "balanced_accuracy_ci95": list(bal_ci),
        "interval": {
            "level": LEVEL,
            "accuracy, recall": "Wilson score interval",
            "balanced_accuracy": f"shortest interval of the mean recall's posterior, each Beta(k + 1/2, n - k + 1/2) "
            f"(Jeffreys; after Brodersen et al. 2010), {DRAWS} draws, seed {seed}",
        },
        "per_class": {
            vocab[i]: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "recall_ci95": list(recall_ci[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i in k
        },
        "confusion_matrix": {"labels": vocab, "rows_actual_cols_predicted": cm.tolist()},
        "counts": {"n": int(len(y)), **{vocab[i]: int(sup[i]) for i in k}},
        "errors": int((y != pred).sum()),
        "most_confused": [{"actual": a, "predicted": p_, "count": n} for n, a, p_ in confused],
        "outcomes": "".join("1" if x else "0" for x in right),  # per image, in the order evaluated
    }


def _answered(model, name: str, folder: Path, split: bool, log) -> tuple[list, list, list, int]:
    """(files, labels, predictions, how many were refused) for folder/<class>/: pictures a face model finds
    no face in are left out and counted; any other unusable file is a DataError."""
    files, ys = labelled_files(folder, model.vocab)
    preds = predict_paths(model, files, faces=not split)
    refused = [i for i, p in enumerate(preds) if p.error.startswith(NO_FACE)]  # a face model, no face in it
    bad = [p for p in preds if p.error and not p.error.startswith(NO_FACE)]
    if bad:
        raise DataError(f"{bad[0].path}: {bad[0].error}; {len(bad)} file(s) in {folder} are not usable images")
    if refused:
        log(
            f"  {name}: {len(refused)} of {len(files)} pictures without a face left out (the model answers "
            f"about faces only): {preds[refused[0]].path} ..."
        )
        keep = [i for i in range(len(files)) if i not in set(refused)]
        files, ys, preds = [files[i] for i in keep], [ys[i] for i in keep], [preds[i] for i in keep]
    if not preds:
        raise DataError(f"{folder}: no picture the model can answer (no face found in any)")
    return files, ys, preds, len(refused)


def evaluate_set(model, name: str, folder: Path, out: Path, suffix: str, top_k: int, log, split: bool = False) -> dict:
    """Metrics of `model` on folder/<class>/ images; writes confusion_matrix{suffix}.png/.csv and
    top_losses{suffix}.png under `out`. `split`: a dataset split, already face-cropped where the model is."""
    vocab = model.vocab
    files, ys, preds, refused = _answered(model, name, folder, split, log)
    probs = np.array([[p.probabilities[c] for c in vocab] for p in preds])
    y = np.array(ys)
    pred = probs.argmax(1)
    m = compute_metrics(y, pred, vocab)
    m["set"], m["folder"], m["no_face"] = name, str(folder), refused
    cm = np.array(m["confusion_matrix"]["rows_actual_cols_predicted"])
    plot_confusion(cm, vocab, out / f"confusion_matrix{suffix}.png", f"{name}: accuracy {m['accuracy']:.3f}")
    write_csv(
        out / f"confusion_matrix{suffix}.csv",
        [
            {"actual": vocab[i], **{f"predicted_{vocab[j]}": int(cm[i, j]) for j in range(len(vocab))}}
            for i in range(len(vocab))
        ],
        ["actual"] + [f"predicted_{c}" for c in vocab],
    )
    p_true = probs[np.arange(len(y)), y]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    worst = np.argsort(-loss)[:top_k]
    plot_top_losses(
        [
            dict(
                path=files[i],
                actual=vocab[y[i]],
                predicted=vocab[pred[i]],
                loss=float(loss[i]),
                prob_actual=float(p_true[i]),
            )
            for i in worst
        ],
        out / f"top_losses{suffix}.png",
        name,
    )
    m["top_losses"] = [
        {"file": str(files[i]), "actual": vocab[y[i]], "predicted": vocab[pred[i]], "loss": round(float(loss[i]), 4)}
        for i in worst
    ]
    log(f"  {name}: {headline(m)}; confusion (rows actual) {cm.tolist()}")
    if m["most_confused"]:
        log(
            "  most confused: "
            + ", ".join(f"{c['actual']} as {c['predicted']} x{c['count']}" for c in m["most_confused"][:5])
        )
    return m
