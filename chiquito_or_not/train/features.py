"""Feature cache: the frozen body's pooled activations, computed once per image and kept on disk.

fastai 0.7's `precompute=True`, brought back: a stage without augmentation and with the body frozen
only needs the body's output for each image once. Each vector is stored under a key made of the
image's content hash and a model key (backbone, the body's weights and BatchNorm statistics, image
size, resize method, normalisation, pooling), so a change to any of them computes afresh. Every file
carries the sha256 of its payload; a corrupt or truncated file is detected, recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_bytes

__all__ = ["FeatureCache", "model_key", "learner_key", "head_split", "cached_features", "head_learner"]

CACHE_VERSION = 1
_HEADER = struct.Struct("<32sI")  # sha256 of the payload, number of float32 values


def head_split(head) -> int:
    """How many leading head layers only pool and flatten (no parameters): they run before the cache."""
    import torch.nn as nn

    n = 0
    for m in head:
        if any(True for _ in m.parameters()) or isinstance(m, (nn.Dropout, nn.BatchNorm1d)):
            break
        n += 1
        if type(m).__name__ == "Flatten":  # torch's or fastai's
            break
    if n == 0 or type(head[n - 1]).__name__ != "Flatten":
        raise ValueError("the head does not start with pooling and Flatten: features cannot be cached")
    return n


def model_key(backbone: str, body, pool, size, mean, std, resize: str = "crop") -> str:
    """A short hash of everything that changes the body's output for a given image."""
    h = hashlib.sha256(
        json.dumps(
            dict(
                v=CACHE_VERSION,
                backbone=backbone,
                resize=resize,
                size=[int(x) for x in np.ravel(size)],
                mean=[round(float(x), 8) for x in mean],
                std=[round(float(x), 8) for x in std],
                pool=[repr(m) for m in pool],
            ),
            sort_keys=True,
        ).encode()
    )
    for name, t in body.state_dict().items():  # weights and BatchNorm running statistics
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass
class FeatureCache:
    """One model key's vectors: `<root>/<key>/<sha[:2]>/<sha>.f32`, each with a checksum header."""

    root: Path
    key: str

    @property
    def folder(self) -> Path:
        return self.root / self.key

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{sha}.f32"

    def get(self, sha: str) -> tuple[np.ndarray | None, bool]:
        """(vector, corrupt): (None, False) when absent, (None, True) when the file fails its check."""
        p = self.path(sha)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None, False
        except OSError:
            return None, True
        if len(data) < _HEADER.size:
            return None, True
        digest, n = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if len(payload) != 4 * n or hashlib.sha256(payload).digest() != digest:
            return None, True
        return np.frombuffer(payload, dtype="<f4").copy(), False

    def put(self, sha: str, vec: np.ndarray) -> None:
        payload = np.ascontiguousarray(vec, dtype="<f4").tobytes()
        atomic_write_bytes(self.path(sha), _HEADER.pack(hashlib.sha256(payload).digest(), vec.size) + payload)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cached_features(learn, files: list[Path], cache: FeatureCache, bs: int = 64) -> tuple["object", dict]:
    """The pooled body features of `files` (an N x F float tensor), computing only those not cached.

    Images go through the learner's validation transforms (resize with a centre crop, normalise), the
    body runs in eval mode without gradients. Returns the tensor and counts: hit, computed, rebuilt."""
    import torch

    body, head = learn.model[0], learn.model[1]
    pool = head[: head_split(head)]
    shas = [_sha(f) for f in files]
    out: list = [None] * len(files)
    counts = {"hit": 0, "computed": 0, "rebuilt": 0}
    todo = []
    for i, sha in enumerate(shas):
        vec, corrupt = cache.get(sha)
        if vec is not None:
            out[i] = vec
            counts["hit"] += 1
        else:
            todo.append(i)
            counts["rebuilt" if corrupt else "computed"] += 1
    if todo:
        dl = learn.dls.test_dl([files[i] for i in todo], bs=bs, num_workers=0)
        modes = [(m, m.training) for m in (body, pool)]
        body.eval(), pool.eval()
        try:
            k = 0
            with torch.no_grad():
                for (xb,) in dl:
                    feats = pool(body(xb)).float().cpu().numpy()
                    for v in feats:
                        i = todo[k]
                        cache.put(shas[i], v)
                        out[i] = v
                        k += 1
        finally:
            for m, mode in modes:
                m.train(mode)
    return torch.from_numpy(np.stack(out)), counts


def learner_key(learn, backbone: str) -> str:
    """The model key of a learner's body, pooling and validation preprocessing (its cache folder's name)."""
    dls, body, head = learn.dls, learn.model[0], learn.model[1]
    resize = next(t for t in dls.after_item if type(t).__name__ == "Resize")
    norm = next(t for t in dls.after_batch if type(t).__name__ == "Normalize")
    return model_key(
        backbone,
        body,
        head[: head_split(head)],
        tuple(resize.size),
        norm.mean.flatten().tolist(),
        norm.std.flatten().tolist(),
        resize=f"{resize.method} {resize.pad_mode} {resize.mode}",
    )


def head_learner(learn, backbone: str, cache_root: Path, log=print):
    """A Learner for the head of a frozen `learn` over cached body features (train and valid).

    Same loss, optimiser and batch size as `learn`; its model is `learn`'s head after pooling, shared,
    so training it trains `learn`. Its `lr_find` and `fit_one_cycle` stand in for `learn`'s in the
    frozen stage. `.cache_counts` says how many vectors were hit, computed and rebuilt."""
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastcore.basics import noop
    from torch.utils.data import TensorDataset

    dls = learn.dls
    head = learn.model[1]
    learn.model.to(dls.device)  # fastai moves it only when a fit starts; the features are computed now
    n_pool = head_split(head)
    cache = FeatureCache(Path(cache_root), learner_key(learn, backbone))
    total = {"hit": 0, "computed": 0, "rebuilt": 0}
    sets = []
    for ds in (dls.train_ds, dls.valid_ds):
        files = list(ds.items)
        x, counts = cached_features(learn, files, cache, bs=max(dls.bs, 32))
        for k, v in counts.items():
            total[k] += v
        # each item's target through the dataset's own label pipeline (no image is decoded)
        y = torch.stack([torch.as_tensor(ds.tls[1][i]) for i in range(len(files))])
        sets.append(TensorDataset(x, y))
    log(
        f"  feature cache {cache.folder}: {total['hit']} hit, {total['computed']} computed"
        + (f", {total['rebuilt']} corrupt and rebuilt" if total["rebuilt"] else "")
    )
    bs = min(dls.bs, len(sets[0]))
    feat_dls = DataLoaders(
        DataLoader(sets[0], bs=bs, shuffle=True, drop_last=len(sets[0]) > bs),
        DataLoader(sets[1], bs=bs),
        device=dls.device,
    )
    hl = Learner(
        feat_dls,
        head[n_pool:],
        loss_func=learn.loss_func,
        opt_func=learn.opt_func,
        metrics=[accuracy],
        path=learn.path,
        model_dir=learn.model_dir,
    )
    hl.remove_cb(ProgressCallback)
    hl.logger = noop
    hl.cache_counts = total
    return hl
