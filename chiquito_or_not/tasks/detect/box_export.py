"""ONNX export of a detector: body + head + box decoding in one graph (dynamic batch); NMS stays in the
shared numpy post-processing. Parity on the validation images before a file is kept: raw outputs within
tolerance, identical detection lists, equal mAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import ExportError
from ...core.images import ACCEPT, clean_one
from .box_inference import _detections
from .box_metrics import coco_map
from .box_splits import SPLIT_ANNOTATIONS, read_split

__all__ = ["onnx_graph", "onnx_metadata", "parity", "compare", "BOX_ATOL", "SCORE_ATOL"]

BOX_ATOL = 1e-3  # px, raw decoded boxes and final detections
SCORE_ATOL = 1e-4


def onnx_graph(model):
    import torch

    from .ssd import Decoded

    head = model.learn.model[1]
    return Decoded(model.learn.model).eval(), torch.zeros(2, 3, head.size, head.size)


def onnx_metadata(model) -> dict:
    s = model.spec
    return {
        "task": "detect",
        "labels": s["labels"],
        "size": str(s["size"]),
        "mean": s["mean"],
        "std": s["std"],
        "postprocess": s["post"],
        "score_threshold": str(s["score_threshold"]),
        "input": "float32 N x 3 x size x size RGB: bilinear resize to the square, /255, (x - mean) / std",
        "outputs": "boxes N x A x 4 (x0 y0 x1 y1 in input pixels: scale by width/size, height/size); "
        "scores N x A x C (softmax without background); then per-class NMS (postprocess)",
    }


def _images(files: list[Path]) -> list:
    ims = []
    for f in files:
        reason, detail, im = clean_one(f, ACCEPT)
        if reason:
            raise ExportError(f"{f}: {reason} ({detail}); rebuild the dataset")
        ims.append(im)
    return ims


def _raw(r, ims: list, bs: int = 16):
    """Runner `r`'s raw (boxes, scores) for the images, each preprocessed the runner's own way."""
    b, s = [], []
    for i in range(0, len(ims), bs):
        bb, ss = r.run(np.stack([r.preprocess(im) for im in ims[i : i + bs]]))
        b.append(bb)
        s.append(ss)
    return np.concatenate(b), np.concatenate(s)


def _truth(files: list[Path], labels):
    """The true boxes of `files` when they sit in a split folder with annotations.json, else None."""
    folder = files[0].parent.parent if files else None
    if folder is None or not (folder / SPLIT_ANNOTATIONS).is_file():
        return None
    paths, boxes, _ = read_split(folder, labels)
    table = {p.resolve(): b for p, b in zip(paths, boxes)}
    got = [table.get(f.resolve()) for f in files]
    return None if any(g is None for g in got) else got


def _lists(r, boxes, scores, ims) -> list[list[dict]]:
    return [
        _detections(r, b, s, im.width, im.height, r.spec["post"]["score_thresh"])
        for b, s, im in zip(boxes, scores, ims)
    ]


def _compare_lists(
    a: list[list[dict]], b: list[list[dict]], files, threshold: float = 0.0
) -> tuple[int, float, float, str]:
    """(identical images, max |Δbox| px, max |Δscore|, first difference or ""). Lists are compared as sets
    (two near-equal scores may swap places); each detection must have a twin with the same label, box
    within BOX_ATOL and score within SCORE_ATOL. The one exception: a detection whose score is within
    SCORE_ATOL of the score threshold may be on one side only (it sits on the line)."""
    same, dbox, dscore, first = 0, 0.0, 0.0, ""
    for f, x, y in zip(files, a, b):
        ok, db, ds = _twins(x, y, threshold)
        dbox, dscore = max(dbox, db), max(dscore, ds)
        if ok:
            same += 1
        elif not first:
            first = f"{Path(f).name}: {len(x)} vs {len(y)} detections, not all with a twin"
    return same, dbox, dscore, first


def _twins(x: list[dict], y: list[dict], threshold: float) -> tuple[bool, float, float]:
    """(whether every detection of one image in `x` and `y` has its twin in the other, max |Δbox| and max |Δscore|
    over the twins)."""
    left, ok, dbox, dscore = list(y), True, 0.0, 0.0
    for p in x:
        twin = min(
            (q for q in left if q["label"] == p["label"]),
            key=lambda q: max(abs(u - v) for u, v in zip(p["box"], q["box"])),
            default=None,
        )
        db = max(abs(u - v) for u, v in zip(p["box"], twin["box"])) if twin else float("inf")
        if twin is not None and db <= BOX_ATOL and abs(p["score"] - twin["score"]) <= SCORE_ATOL:
            left.remove(twin)
            dbox, dscore = max(dbox, db), max(dscore, abs(p["score"] - twin["score"]))
        elif p["score"] - threshold > SCORE_ATOL:
            ok = False
    if any(q["score"] - threshold > SCORE_ATOL for q in left):
        ok = False
    return ok, dbox, dscore


def parity(model, exported, files: list[Path], what: str) -> dict:
    """PyTorch (the learner) vs an exported file's runner on `files`: raw outputs within BOX_ATOL and
    SCORE_ATOL, identical detection lists, equal mAP@0.5; ExportError naming `what` on any mismatch."""
    torch_r = model
    if not files:
        raise ExportError("no validation images to check the export against; rebuild the dataset")
    ims = _images(files)
    tb, ts = _raw(torch_r, ims)
    ob, os_ = _raw(exported, ims)
    raw_box, raw_score = float(np.abs(tb - ob).max()), float(np.abs(ts - os_).max())
    t_lists, o_lists = _lists(torch_r, tb, ts, ims), _lists(torch_r, ob, os_, ims)
    same, dbox, dscore, first = _compare_lists(t_lists, o_lists, files, torch_r.spec["post"]["score_thresh"])
    report = {
        "images": len(files),
        "raw_max_abs_box_px": raw_box,
        "raw_max_abs_score": raw_score,
        "identical_detection_lists": same,
        "max_abs_box_px": dbox,
        "max_abs_score": dscore,
        "box_atol_px": BOX_ATOL,
        "score_atol": SCORE_ATOL,
    }
    truth = _truth(files, torch_r.spec["labels"])
    key = f"map_50_{what.lower()}"
    if truth is not None:
        report["map_50_torch"] = coco_map(t_lists, truth, torch_r.spec["labels"])["map_50"]
        report[key] = coco_map(o_lists, truth, torch_r.spec["labels"])["map_50"]
    problems = []
    if raw_box > BOX_ATOL or raw_score > SCORE_ATOL:
        problems.append(
            f"raw outputs differ (max |Δbox| {raw_box:.2e} px > {BOX_ATOL:g} or max |Δscore| "
            f"{raw_score:.2e} > {SCORE_ATOL:g})"
        )
    if same != len(files):
        problems.append(f"{len(files) - same} of {len(files)} detection lists differ ({first})")
    if truth is not None and report["map_50_torch"] != report[key]:
        problems.append(f"mAP@0.5 {report[key]} from {what} vs {report['map_50_torch']} from PyTorch")
    if problems:
        raise ExportError(f"the {what} file does not reproduce PyTorch: " + "; ".join(problems) + "; no file was kept")
    report["summary"] = (
        f"parity on {len(files)} validation images: {same}/{len(files)} identical detection lists, "
        f"raw max |Δbox| {raw_box:.1e} px, max |Δscore| {raw_score:.1e}"
        + (f", mAP@0.5 {report[key]} both" if truth is not None else "")
    )
    return report


def compare(a, b, files, label: str = "int8") -> dict:
    """How runner `b` (a quantised copy) differs from runner `a` on `files`: detection lists and mAP@0.5."""
    ims = _images(files)
    la, lb = _lists(a, *_raw(a, ims), ims), _lists(a, *_raw(b, ims), ims)
    same, dbox, dscore, _ = _compare_lists(la, lb, files, a.spec["post"]["score_thresh"])
    truth = _truth(files, a.spec["labels"])
    rep = {"images": len(files), "identical_detection_lists": same, "max_abs_box_px": dbox, "max_abs_score": dscore}
    if truth is not None:
        rep["map_50_reference"] = coco_map(la, truth, a.spec["labels"])["map_50"]
        rep["map_50"] = coco_map(lb, truth, a.spec["labels"])["map_50"]
    rep["summary"] = f"{label} vs float on {len(files)} images: {same} identical detection lists" + (
        f", mAP@0.5 {rep['map_50']} vs {rep['map_50_reference']}" if truth is not None else ""
    )
    return rep
