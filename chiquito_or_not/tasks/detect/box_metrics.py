"""Detector metrics with the maintained COCO implementation (torchmetrics' MeanAveragePrecision on
pycocotools): mAP@[.5:.95], mAP@0.5, mAP@0.75, per-class AP, recall, AP by object size (COCO's small /
medium / large: box area below 32², up to 96², above, in the evaluated image's pixels); a detection
confusion matrix with a "missed" column and a "false alarm" row; a precision-recall plot per class and a
picture of the worst images with predicted and true boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.boxes import box_iou
from ...core.errors import DataError
from .box_inference import draw_boxes, predict_paths
from .box_postprocess import mean_average_precision
from .box_splits import read_split

__all__ = ["coco_map", "detection_confusion", "evaluate_set", "headline", "image_errors"]

SIZES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}  # COCO's areas, px²


def _tensors(dets: list[list[dict]], truth: list[list], labels: list[str]):
    import torch

    preds = [
        {
            "boxes": torch.tensor([d["box"] for d in ds], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([d["score"] for d in ds], dtype=torch.float32),
            "labels": torch.tensor([labels.index(d["label"]) for d in ds], dtype=torch.long),
        }
        for ds in dets
    ]
    targets = [
        {
            "boxes": torch.tensor([t[1:] for t in ts], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([labels.index(t[0]) for t in ts], dtype=torch.long),
        }
        for ts in truth
    ]
    return preds, targets


def coco_map(dets: list[list[dict]], truth: list[list], labels: list[str], curves: bool = False) -> dict:
    """COCO metrics of detections against true boxes ([label, x0, y0, x1, y1]), boxes in the same pixels."""
    preds, targets = _tensors(dets, truth, labels)
    m = mean_average_precision(class_metrics=True, extended_summary=curves)
    m.update(preds, targets)
    r = m.compute()
    m50 = mean_average_precision(iou_thresholds=[0.5], class_metrics=True)
    m50.update(preds, targets)
    r50 = m50.compute()

    def per_class(t):
        classes = [int(c) for c in np.atleast_1d(r["classes"].numpy())]
        vals = np.atleast_1d(t.numpy()).tolist()
        return {labels[c]: (None if v < 0 else round(float(v), 4)) for c, v in zip(classes, vals)}

    out = {
        "map": round(float(r["map"]), 4),
        "map_50": round(float(r["map_50"]), 4),
        "map_75": round(float(r["map_75"]), 4),
        "mar_100": round(float(r["mar_100"]), 4),
        "ap_per_class": per_class(r["map_per_class"]),
        "ap50_per_class": {
            labels[int(c)]: (None if v < 0 else round(float(v), 4))
            for c, v in zip(np.atleast_1d(r50["classes"].numpy()), np.atleast_1d(r50["map_per_class"].numpy()))
        },
        "recall_per_class": per_class(r["mar_100_per_class"]),
        "ap_by_size": {k: (None if float(r[f"map_{k}"]) < 0 else round(float(r[f"map_{k}"]), 4)) for k in SIZES},
        "boxes_by_size": {
            k: sum(1 for ts in truth for t in ts if lo <= (t[3] - t[1]) * (t[4] - t[2]) < hi)
            for k, (lo, hi) in SIZES.items()
        },
    }
    if curves:
        out["_precision"] = r["precision"].numpy()  # T x R x K x areas x maxdets
        out["_classes"] = [int(c) for c in np.atleast_1d(r["classes"].numpy())]
    return out


def _ious(dets: list[dict], truth: list) -> np.ndarray:
    """len(dets) x len(truth) IoU of each detection's box with each true box (label first in a true box)."""
    a = np.asarray([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4)
    return box_iou(a, np.asarray([t[1:] for t in truth], dtype=np.float64).reshape(-1, 4))


def _above(dets: list[dict], threshold: float) -> list[dict]:
    return sorted((d for d in dets if d["score"] >= threshold), key=lambda d: -d["score"])


def image_errors(dets: list[dict], truth: list, threshold: float, iou: float = 0.5) -> int:
    """Missed true boxes + false detections (score >= threshold, greedy matching at IoU >= `iou`, same label)."""
    shown = _above(dets, threshold)
    ious, used, hits = _ious(shown, truth), set(), 0
    for n, d in enumerate(shown):
        best = max(
            ((k, ious[n, k]) for k, t in enumerate(truth) if k not in used and t[0] == d["label"]),
            key=lambda kv: kv[1],
            default=(None, 0.0),
        )
        if best[0] is not None and best[1] >= iou:
            used.add(best[0])
            hits += 1
    return (len(truth) - hits) + (len(shown) - hits)


def detection_confusion(dets: list[list[dict]], truth: list[list], labels: list[str], threshold: float, iou=0.5):
    """Counts (labels + 1) x (labels + 1): row = the true box's label, column = the detection's; the last
    column counts true boxes no detection (score >= threshold) covered at IoU >= `iou` ("missed"), the last
    row detections that cover no true box ("false alarm"). Each detection, best score first, takes the
    unmatched true box of any label it overlaps most."""
    k = len(labels)
    cm = np.zeros((k + 1, k + 1), dtype=int)
    for ds, ts in zip(dets, truth):
        shown = _above(ds, threshold)
        ious, free = _ious(shown, ts), set(range(len(ts)))
        for n, d in enumerate(shown):
            best = max(((j, ious[n, j]) for j in free), key=lambda kv: kv[1], default=(None, 0.0))
            if best[0] is not None and best[1] >= iou:
                free.discard(best[0])
                cm[labels.index(ts[best[0]][0]), labels.index(d["label"])] += 1
            else:
                cm[k, labels.index(d["label"])] += 1
        for j in free:
            cm[labels.index(ts[j][0]), k] += 1
    return cm


def _confusion(dets, truth, labels, threshold: float, name: str, path: Path) -> dict:
    from ...core.plots import plot_confusion

    cm = detection_confusion(dets, truth, labels, threshold)
    rows, cols = labels + ["false alarm"], labels + ["missed"]
    title = f"{name}: boxes at score >= {threshold:g}, IoU >= 0.5"
    plot_confusion(cm, rows, path, title, cols=cols, axes=("true box", "detection"))
    return {
        "rows_true_cols_detected": cm.tolist(),
        "rows": rows,
        "cols": cols,
        "score_threshold": threshold,
        "iou": 0.5,
    }


def _pr_plot(res: dict, labels: list[str], path: Path) -> None:
    from ...core.plots import plt, save

    prec = res["_precision"]  # T x R x K x A x M; IoU 0.5 is T=0, area "all" is 0, maxdets 100 is the last
    recall = np.linspace(0, 1, prec.shape[1])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, c in enumerate(res["_classes"]):
        p = prec[0, :, k, 0, -1]
        if (p >= 0).any():
            ax.plot(
                recall, np.where(p < 0, np.nan, p), label=f"{labels[c]} (AP50 {res['ap50_per_class'].get(labels[c])})"
            )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall per class, IoU 0.5 (COCO 101-point)")
    ax.legend(loc="lower left")
    save(fig, path)


def _worst_picture(paths, dets, truth, labels, threshold, path: Path, n: int) -> None:
    from PIL import Image

    from ...core.plots import plt, save

    errs = [image_errors(d, t, threshold) for d, t in zip(dets, truth)]
    order = sorted(range(len(paths)), key=lambda i: (-errs[i], str(paths[i])))[:n]
    cols = min(3, max(1, len(order)))
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        with Image.open(paths[i]) as im:
            ax.imshow(draw_boxes(im, [d for d in dets[i] if d["score"] >= threshold], labels, truth[i]))
        ax.set_title(f"{Path(paths[i]).name[:24]}: {errs[i]} error(s)", fontsize=8)
    fig.suptitle(f"worst first: predicted boxes (score >= {threshold:g}, coloured) and true boxes (dashed)", fontsize=9)
    save(fig, path)


def evaluate_set(model, name: str, folder, out, suffix: str, top_k: int, log) -> dict:
    """COCO metrics and figures for one split folder (images + annotations.json)."""
    spec = model.spec
    labels = spec["labels"]
    paths, truth, _ = read_split(Path(folder), labels)
    preds = predict_paths(model, paths, threshold=spec["post"]["score_thresh"])
    bad = [p for p in preds if p.error]
    if bad:
        raise DataError(f"{bad[0].path}: {bad[0].error}; rebuild the dataset with `chiquito dataset RECIPE`")
    dets = [p.boxes for p in preds]
    res = coco_map(dets, truth, labels, curves=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _pr_plot(res, labels, out / f"pr_curves{suffix}.png")
    _worst_picture(paths, dets, truth, labels, spec["score_threshold"], out / f"worst{suffix}.png", max(1, top_k))
    res.pop("_precision")
    res.pop("_classes")
    thr = spec["score_threshold"]
    res["confusion"] = _confusion(dets, truth, labels, thr, name, out / f"detection_confusion{suffix}.png")
    n_err = sum(image_errors(d, t, thr) for d, t in zip(dets, truth))
    res.update(
        {
            "images": len(paths),
            "boxes": sum(len(t) for t in truth),
            "errors_at_threshold": n_err,
            "score_threshold": thr,
            "figures": [f"pr_curves{suffix}.png", f"worst{suffix}.png", f"detection_confusion{suffix}.png"],
        }
    )
    log(f"  {name}: {headline(res)}")
    return res


def headline(m: dict) -> str:
    per = ", ".join(f"{k} {v:.3f}" for k, v in m.get("ap50_per_class", {}).items() if v is not None)
    return (
        f"mAP@0.5 {m['map_50']:.3f}  mAP@[.5:.95] {m['map']:.3f}  recall {m['mar_100']:.3f}  "
        f"({m.get('images', '?')} images, {m.get('boxes', '?')} boxes; AP50 {per})"
    )
