"""Predict: batched inference with an exported model.pkl on files and folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .clean import clean_one
from .errors import ChiquitoError
from .recipe import DatasetSpec

__all__ = ["Prediction", "load_model", "expand_paths", "predict_images", "predict_paths", "model_vocab",
           "model_probabilities", "IMAGE_EXTS", "ACCEPT"]

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
# what predict accepts: any decodable still image of at least 8 px
ACCEPT = DatasetSpec(min_size=8, formats=("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"))


@dataclass
class Prediction:
    path: str
    label: str = ""
    probability: float = 0.0
    probabilities: dict = field(default_factory=dict)
    error: str = ""

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most likely (label, probability) pairs, most likely first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]


def load_model(path: str | Path):
    """Load an exported learner (.pkl) onto the CPU, or an exported .onnx file on onnxruntime (without
    importing torch); a clear error if it is missing or not a model."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        from .onnxmodel import OnnxClassifier

        return OnnxClassifier(p)
    import pickle
    import warnings

    from fastai.learner import load_learner

    if not p.is_file():
        raise ChiquitoError(f"{p}: no such model file; train one with `chiquito finetune RECIPE` "
                            "(it writes runs/<name>/model.pkl)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load_learner warns about pickle on every call
            learn = load_learner(p, cpu=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, AttributeError, ImportError, ValueError) as e:
        raise ChiquitoError(f"{p}: cannot load as a fastai learner ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120]}); pass a model.pkl written by `chiquito finetune`") from None
    if not hasattr(learn, "dls") or not hasattr(learn.dls, "vocab"):
        raise ChiquitoError(f"{p}: not an exported image classifier (no vocab)")
    return learn


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), in a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
        else:
            out.append(p)
    return out


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


def model_vocab(model) -> list[str]:
    """Class names of a learner or an OnnxClassifier."""
    return [str(v) for v in (model.vocab if hasattr(model, "session") else model.dls.vocab)]


def model_probabilities(model, images: list, bs: int = 64) -> list[list[float]]:
    """Class probabilities for PIL images, from a learner or an OnnxClassifier."""
    if hasattr(model, "session"):
        return model.probabilities(images, bs=bs).tolist()
    return predict_images(model, images, bs=bs).tolist()


def predict_paths(learn, paths: list[Path], bs: int = 64) -> list[Prediction]:
    """Predict every file with a learner or an OnnxClassifier; a file that is not a usable image gets an
    error and the others go on."""
    vocab = model_vocab(learn)
    results = [Prediction(str(p)) for p in paths]
    for start in range(0, len(paths), bs):  # decode one batch at a time: memory stays bounded
        chunk = list(range(start, min(start + bs, len(paths))))
        good, images = [], []
        for i in chunk:
            if not paths[i].exists():
                results[i].error = "missing: no such file"
                continue
            reason, detail, im = clean_one(paths[i], ACCEPT)
            if reason:
                results[i].error = f"{reason}: {detail}"
            else:
                good.append(i)
                images.append(im)
        probs = model_probabilities(learn, images, bs=bs) if images else []
        for i, row in zip(good, probs):
            k = max(range(len(row)), key=row.__getitem__)
            results[i].label, results[i].probability = vocab[k], row[k]
            results[i].probabilities = dict(zip(vocab, row))
    return results
