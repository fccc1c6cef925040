"""Detector inference: a model.pkl as a runtime model (LearnerDetector), batched boxes from any detector
runtime through one numpy pre- and post-processing path, boxes in the original image's pixels; drawing them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.files import atomic_write_bytes
from ...core.images import ACCEPT, clean_one, prefetched
from .box_postprocess import postprocess
from .box_runtime import OnnxDetector

__all__ = [
    "DetPrediction",
    "LearnerDetector",
    "learner_spec",
    "detect_images",
    "predict_paths",
    "draw_boxes",
    "draw_files",
]


@dataclass
class DetPrediction:
    path: str
    width: int = 0
    height: int = 0
    boxes: list = field(default_factory=list)  # [{"label", "score", "box": [x0, y0, x1, y1]}], best first
    error: str = ""

    def to_json(self, top_k: int = 0) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "width": self.width, "height": self.height, "boxes": self.boxes}

    def lines(self, top_k: int = 0) -> list[str]:
        """One line per box: label, score, x0 y0 x1 y1 (original pixels); "(no boxes)" when none."""
        if not self.boxes:
            return ["\t(no boxes)"]
        return [
            "\t" + "\t".join([d["label"], f"{d['score']:.4f}", *(f"{v:.1f}" for v in d["box"])]) for d in self.boxes
        ]


def learner_spec(learn) -> dict:
    """What inference needs, from a learner's SSDHead (an ONNX file carries the same in its metadata)."""
    head = learn.model[1]
    return {
        "labels": list(head.labels),
        "size": head.size,
        "mean": head.mean,
        "std": head.std,
        "post": dict(head.post),
        "score_threshold": getattr(head, "score_threshold", 0.3),
    }


class LearnerDetector(OnnxDetector):
    """A loaded model.pkl as a detector with the ONNX file's surface: its model with the box decoding, eval
    mode, no autograd (numpy batch → boxes, scores); `learn` is the Learner."""

    def __init__(self, learn, path: str | Path):
        from .ssd import Decoded

        self.learn, self.path = learn, Path(path)
        self.spec = learner_spec(learn)
        self.vocab = self.spec["labels"]
        self.net = Decoded(learn.model)

    def run(self, x):
        import torch

        self.net.eval()
        with torch.inference_mode():
            b, s = self.net(torch.from_numpy(x))
        return b.float().numpy(), s.float().numpy()


def _detections(r, boxes, scores, w: int, h: int, threshold: float, post: dict | None = None) -> list[dict]:
    spec = r.spec
    pb, ps, pc = postprocess(boxes, scores, **(post or spec["post"]))
    sx, sy = w / spec["size"], h / spec["size"]
    out = []
    for b, s, c in zip(pb, ps, pc):
        if s >= threshold:
            out.append(
                {
                    "label": spec["labels"][int(c)],
                    "score": float(s),
                    "box": [float(b[0] * sx), float(b[1] * sy), float(b[2] * sx), float(b[3] * sy)],
                }
            )
    return out


def detect_images(model, images: list, threshold: float | None = None, bs: int = 16, post: dict | None = None) -> list:
    """Detections for PIL images: [{"label", "score", "box"}] per image, boxes in its own pixels."""
    spec = model.spec
    thr = spec["score_threshold"] if threshold is None else threshold
    out = []
    for i in range(0, len(images), bs):
        chunk = images[i : i + bs]
        boxes, scores = model.run(np.stack([model.preprocess(im) for im in chunk]))
        out += [_detections(model, b, s, im.width, im.height, thr, post) for b, s, im in zip(boxes, scores, chunk)]
    return out


def predict_paths(
    model, paths: list[Path], bs: int = 16, workers: int = 2, threshold: float | None = None, post: dict | None = None
) -> list[DetPrediction]:
    """Detect in every file; a file that is not a usable image gets an error and the others go on.
    Worker threads decode the next batch while the model runs on this one."""
    spec = model.spec
    thr = spec["score_threshold"] if threshold is None else threshold
    results = [DetPrediction(str(p)) for p in paths]
    for good, values, errors in prefetched(paths, lambda im: (model.preprocess(im), im.size), bs, workers):
        for i, err in errors:
            results[i].error = err
        if not values:
            continue
        boxes, scores = model.run(np.stack([x for x, _ in values]))
        for i, (_, size), b, s in zip(good, values, boxes, scores):
            results[i].width, results[i].height = size
            results[i].boxes = _detections(model, b, s, *size, thr, post)
    return results


COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def draw_boxes(im, boxes: list[dict], labels: list[str], truth: list | None = None):
    """A copy of `im` with the detections (solid, label and score) and, when given, the true boxes
    ([label, x0, y0, x1, y1], dashed white)."""
    from PIL import ImageDraw

    im = im.convert("RGB").copy()
    d = ImageDraw.Draw(im)
    lw = max(2, round(max(im.size) / 250))
    for t in truth or []:
        x0, y0, x1, y1 = t[1:]
        for k in range(int(x0), int(x1), 8):
            d.line([(k, y0), (min(k + 4, x1), y0)], fill="white", width=lw)
            d.line([(k, y1), (min(k + 4, x1), y1)], fill="white", width=lw)
        for k in range(int(y0), int(y1), 8):
            d.line([(x0, k), (x0, min(k + 4, y1))], fill="white", width=lw)
            d.line([(x1, k), (x1, min(k + 4, y1))], fill="white", width=lw)
    for b in boxes:
        colour = COLOURS[labels.index(b["label"]) % len(COLOURS)] if b["label"] in labels else "yellow"
        d.rectangle(b["box"], outline=colour, width=lw)
        text = f"{b['label']} {b['score']:.2f}"
        x0, y0 = b["box"][0], max(0, b["box"][1] - 12)
        d.rectangle([x0, y0, x0 + 6 * len(text) + 4, y0 + 12], fill=colour)
        d.text((x0 + 2, y0), text, fill="white")
    return im


def draw_files(model, results: list[DetPrediction], folder: Path) -> int:
    """Each file that was predicted, with its boxes, as a JPEG in `folder` (a new or empty folder: nothing is
    overwritten; two inputs with one name get numbered copies). The inputs are only read."""
    labels = model.vocab
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken, n = set(), 0
    for r in results:
        if r.error:
            continue
        reason, _, im = clean_one(Path(r.path), ACCEPT)
        if reason:
            continue
        stem, k = Path(r.path).stem, 1
        name = f"{stem}.jpg"
        while name in taken or (folder / name).exists():
            k += 1
            name = f"{stem}-{k}.jpg"
        taken.add(name)
        import io

        buf = io.BytesIO()
        draw_boxes(im, r.boxes, labels).save(buf, "JPEG", quality=90)
        atomic_write_bytes(folder / name, buf.getvalue())
        n += 1
    return n
