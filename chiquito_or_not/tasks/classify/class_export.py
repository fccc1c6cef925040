"""The classifier's ONNX export: the model with a softmax, class names and preprocessing as metadata, and
the parity check (PyTorch with fastai's preprocessing vs onnxruntime with ours, on validation images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import ExportError
from .class_inference import predict_images

__all__ = ["PARITY_ATOL", "onnx_graph", "onnx_metadata", "parity", "compare"]

PARITY_ATOL = 1e-4


def onnx_graph(model):
    """(module, example input): the learner's model with a softmax, probabilities out."""
    import torch

    w, h = model.spec["size_wh"]
    return torch.nn.Sequential(model.learn.model, torch.nn.Softmax(dim=1)).eval(), torch.zeros(2, 3, h, w)


def onnx_metadata(model) -> dict:
    faces = model.faces  # trained on face crops: predict crops the same way
    return {"task": "classify", "classes": model.vocab, "preprocess": model.spec} | ({"faces": faces} if faces else {})


def _labels(files: list[Path], vocab: list[str]) -> np.ndarray:
    return np.array([vocab.index(f.parent.name) if f.parent.name in vocab else -1 for f in files])


def _images(files):
    from PIL import Image

    return [Image.open(f).convert("RGB") for f in files]


def parity(model, exported, files: list[Path], what: str) -> dict:
    """PyTorch with fastai's preprocessing vs an exported file's model (`probabilities(images)`, our
    preprocessing) on `files`: every argmax equal, every probability within PARITY_ATOL, or ExportError."""
    vocab = model.vocab
    images = _images(files)
    p_torch = predict_images(model.learn, images).numpy()  # fastai's preprocessing, PyTorch
    p_file = np.asarray(exported.probabilities(images))  # ours, the file's runtime
    diff = float(np.abs(p_torch - p_file).max()) if len(files) else 0.0
    agree = int((p_torch.argmax(1) == p_file.argmax(1)).sum())
    if agree != len(files) or diff > PARITY_ATOL:
        raise ExportError(
            f"{what} parity check failed on {len(files)} validation images: {agree} argmax agree, "
            f"largest probability difference {diff:.2e} (limit {PARITY_ATOL:.0e}); "
            "the export was not kept"
        )
    labels = _labels(files, vocab)
    return {
        "parity": {"images": len(files), "argmax_agree": agree, "max_abs_diff": diff, "atol": PARITY_ATOL},
        "valid_accuracy": float((p_file.argmax(1) == labels).mean()) if len(files) else None,
        "summary": f"parity on {len(files)} validation images: {agree}/{len(files)} argmax agree, "
        f"max |p_torch - p_{what.lower()}| = {diff:.1e}",
    }


def compare(ref, oth, files: list[Path]) -> dict:
    """How model `oth` (a quantised copy) differs from model `ref` on `files`."""
    images = _images(files)
    p_ref, p_oth = np.asarray(ref.probabilities(images)), np.asarray(oth.probabilities(images))
    labels = _labels(files, ref.vocab)
    acc = float((p_oth.argmax(1) == labels).mean()) if len(files) else None
    acc_ref = float((p_ref.argmax(1) == labels).mean()) if len(files) else None
    same = int((p_oth.argmax(1) == p_ref.argmax(1)).sum())
    return {
        "valid_accuracy": acc,
        "valid_accuracy_float": acc_ref,
        "argmax_agree_with_float": same,
        "max_abs_diff": float(np.abs(p_oth - p_ref).max()) if len(files) else 0.0,
        "summary": (
            f"validation accuracy {acc:.4f} vs {acc_ref:.4f} in float ({acc - acc_ref:+.4f}), "
            f"{same}/{len(files)} same predictions"
        )
        if len(files)
        else "no validation images",
    }
