"""Classifier inference: a model.pkl as a runtime model (LearnerClassifier), and batched predictions from any
classifier runtime with our own preprocessing (the numpy pipeline the ONNX and LiteRT files use too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ChiquitoError
from ...core.images import prefetched
from .class_runtime import OnnxClassifier

__all__ = ["Prediction", "LearnerClassifier", "predict_images", "preprocess_spec", "predict_paths"]


@dataclass
class Prediction:
    path: str
    label: str = ""
    probability: float = 0.0
    probabilities: dict = field(default_factory=dict)
    error: str = ""
    face: list | None = None  # a model trained on face crops: the square it classified (image pixels)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most likely (label, probability) pairs, most likely first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_json(self, top_k: int = 1) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        out = {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top": self.top(top_k),
            "probabilities": self.probabilities,
        }
        return out | ({"face_box": self.face} if self.face is not None else {})

    def lines(self, top_k: int = 1) -> list[str]:
        """What follows the path on predict's one output line: tab, label, tab, probability (k times)."""
        return ["\t" + "\t".join(f"{lab}\t{p:.4f}" for lab, p in self.top(top_k))]


def predict_images(learn, images: list, bs: int = 64):
    """Class probabilities (N x C tensor) for PIL images or paths, in batches through learn.dls.test_dl."""
    import torch
    from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds Learner.no_bar)

    if not images:
        return torch.zeros(0, len(learn.dls.vocab))
    dl = learn.dls.test_dl(images, bs=bs, num_workers=0)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=dl)
    return probs


def preprocess_spec(learn) -> dict:
    """The learner's validation preprocessing as data (what ONNX metadata carries and
    class_runtime.preprocess_image follows): resize method and size, scale, mean, std."""
    resize = next((t for t in learn.dls.after_item if type(t).__name__ == "Resize"), None)
    norm = next((t for t in learn.dls.after_batch if type(t).__name__ == "Normalize"), None)
    if resize is None or norm is None:
        raise ChiquitoError(
            "the learner has no Resize or Normalize transform; use a model.pkl written by `chiquito finetune`"
        )
    return {
        "resize": str(resize.method),
        "size_wh": [int(s) for s in resize.size],
        "resample": "bilinear",
        "scale": 1 / 255,
        "mean": [float(x) for x in norm.mean.flatten()],
        "std": [float(x) for x in norm.std.flatten()],
        "layout": "NCHW",
        "channels": "RGB",
    }


class LearnerClassifier(OnnxClassifier):
    """A loaded model.pkl as a classifier with the ONNX file's surface: its model in eval mode on the same
    numpy preprocessing (no DataLoader per call, no callbacks, no autograd); `learn` is the Learner."""

    def __init__(self, learn, path: str | Path):
        self.learn, self.path = learn, Path(path)
        self.vocab = [str(v) for v in learn.dls.vocab]
        self.spec = preprocess_spec(learn)
        self.faces = getattr(learn, "chiquito_faces", None)  # travels in the pickle: trained on face crops

    def run(self, x):
        import torch

        model = self.learn.model
        model.eval()
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(x)).float(), dim=1).numpy()


def predict_paths(model, paths: list[Path], bs: int = 64, workers: int = 2, faces: bool = True) -> list[Prediction]:
    """Predict every file with a classifier's runtime model (LearnerClassifier, OnnxClassifier,
    LiteClassifier); a file that is not a usable image gets an error and the others go on. Worker threads
    decode and preprocess the next batch while the model runs on this one, so memory holds at most two
    batches."""
    import numpy as np

    vocab = model.vocab
    step = model.face_step if faces else None

    def prepare(im):
        if step is None:
            return model.preprocess(im), None
        crop, box, _ = step(im)
        return model.preprocess(crop), (list(box) if box else None)

    results = [Prediction(str(p)) for p in paths]
    for good, prepared, errors in prefetched(paths, prepare, bs, workers):
        for i, err in errors:
            results[i].error = err
        if not prepared:
            continue
        for i, (_, box) in zip(good, prepared):
            results[i].face = box
        for i, row in zip(good, model.run(np.stack([a for a, _ in prepared])).tolist()):
            k_best = max(range(len(row)), key=row.__getitem__)
            results[i].label, results[i].probability = vocab[k_best], row[k_best]
            results[i].probabilities = dict(zip(vocab, row))
    return results
