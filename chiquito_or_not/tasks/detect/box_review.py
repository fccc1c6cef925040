"""Suspects for review in a detection dataset: which images probably have a box missing, a box with the
wrong label, or a box in the wrong place.

Out-of-fold detections, as cleanlab asks for: the recipe's pretrained body (frozen, as in the recipe's
first stages) computes every image's two feature maps once, and those of its mirror image (the one
augmentation that moves no box off its object); the images are dealt into k folds in content-hash
order, and for each fold a fresh SSD head is trained with fastai on the other folds' maps and detects
on its own. So no image is judged by a head that saw its boxes, and k heads cost about what one
augmented epoch of the body would. Then `cleanlab.object_detection`'s three per-box scores (overlooked:
a confident detection no given box covers; swap: a given box a detection of another label covers;
badloc: a given box no detection of its label covers well), pooled per image into the quality that
ranks the images and flags the issues, as its `get_label_quality_scores` does (see rank_boxes), say
which kind of error each image most probably has.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import DataError
from ...core.files import read_csv_rows, shown_path
from ...core.layout import DatasetFolder
from ...core.task_registry import LabelItems, Suspects
from ...data.dedup import unit_hash
from ...train.backbones import create_body, get_backbone, num_features
from .box_splits import read_split

__all__ = ["KINDS", "oof_detections", "rank_boxes", "suspects", "BoxSuspects"]

KINDS = ("overlooked", "swap", "badloc")  # cleanlab's three kinds of box error
HIGH_SCORE = 0.4  # a detection this sure counts as seen (overlooked, swap): see rank_boxes
HEAD_EPOCHS = 12
HEAD_LR = 1e-2
SHOWN_SCORE = 0.2  # predicted boxes listed with a suspect (cleanlab sees every detection)


def _maps(body, paths: list[Path], size: int, mean, std, bs: int = 16) -> list[tuple]:
    """[(stride-16 map, stride-32 map) of the image, of its mirror] per path, float16 on the CPU."""
    import torch
    from PIL import Image

    from .box_postprocess import preprocess

    out = []
    body.eval()
    for i in range(0, len(paths), bs):
        xs = []
        for p in paths[i : i + bs]:
            with Image.open(p) as im:
                xs.append(preprocess(im.convert("RGB"), size, mean, std))
        x = torch.from_numpy(np.stack(xs))
        with torch.no_grad():
            plain, mirror = body(x), body(torch.flip(x, dims=[3]))
        for j in range(x.shape[0]):
            out.append((tuple(f[j].half() for f in plain), tuple(f[j].half() for f in mirror)))
    return out


class _MapSet:
    """Cached maps and their boxes ([label index, x0, y0, x1, y1] in input pixels) as (maps..., target)."""

    def __init__(self, maps: list, boxes: list, size: int, mirror: bool):
        self.items = []
        for (plain, flipped), b in zip(maps, boxes):
            self.items.append((plain, b))
            if mirror:
                fb = b.clone()
                if len(fb):
                    fb[:, 1], fb[:, 3] = size - b[:, 3], size - b[:, 1]
                self.items.append((flipped, fb))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _collate(samples):
    import torch

    n_maps = len(samples[0][0])
    maps = [torch.stack([s[0][k].float() for s in samples]) for k in range(n_maps)]
    m = max(1, max(s[1].shape[0] for s in samples))
    t = torch.full((len(samples), m, 5), -1.0)
    for i, (_, b) in enumerate(samples):
        t[i, : b.shape[0]] = b
    return (*maps, t)


def _head_model(head):
    import torch.nn as nn

    class HeadOnMaps(nn.Module):  # the head fed cached maps: fastai passes them as separate inputs
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, *maps):
            return self.head(list(maps))

    return HeadOnMaps(head)


def oof_detections(recipe, task, paths: list[Path], boxes: list[list], sizes: list, folds: int, log) -> list:
    """Each image's detections ([{"label", "score", "box"}] in its pixels, every score above the post-
    processing floor) by a head trained on the other folds' cached maps."""
    import torch
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.optimizer import Adam
    from fastai.torch_core import set_seed
    from fastcore.basics import noop

    from .box_postprocess import postprocess

    f, labels = recipe.finetune, list(recipe.detect.labels)
    b = get_backbone(f.backbone)
    body = task.model.adapt_body(recipe, create_body(f.backbone, f.weights))
    maps = _maps(body, paths, f.size, b.mean, b.std)
    log(f"  feature maps of {len(paths)} images and their mirrors ({f.backbone} at {f.size} px, frozen)")
    scaled = [
        torch.tensor(
            [
                [labels.index(r[0]), r[1] * f.size / w, r[2] * f.size / h, r[3] * f.size / w, r[4] * f.size / h]
                for r in rs
            ],
            dtype=torch.float32,
        ).reshape(-1, 5)
        for rs, (w, h) in zip(boxes, sizes)
    ]
    order = sorted(range(len(paths)), key=lambda i: unit_hash(recipe.seed, "review-fold", paths[i].name))
    fold_of = np.empty(len(paths), int)
    fold_of[order] = np.arange(len(paths)) % folds
    lr = HEAD_LR if f.frozen.lr == "auto" else float(f.frozen.lr)
    dets: list = [None] * len(paths)
    for k in range(folds):
        tr, te = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        set_seed(recipe.seed + k, reproducible=True)
        head, loss, _ = task.model.model_parts(recipe, body, num_features(body), None, None)
        ds = _MapSet([maps[i] for i in tr], [scaled[i] for i in tr], f.size, mirror=f.augment.flip)
        bs = min(f.bs, len(ds))
        train = DataLoader(ds, bs=bs, shuffle=True, drop_last=len(ds) > bs, create_batch=_collate)
        held = _MapSet([maps[i] for i in te], [scaled[i] for i in te], f.size, mirror=False)
        valid = DataLoader(held, bs=bs, shuffle=False, create_batch=_collate)
        dls = DataLoaders(train, valid, device=torch.device("cpu"))
        learn = Learner(dls, _head_model(head), loss_func=loss, opt_func=Adam)
        learn.logger = noop
        from fastai.callback.progress import ProgressCallback

        learn.remove_cb(ProgressCallback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            learn.fit_one_cycle(HEAD_EPOCHS, lr)
        log(f"  fold {k + 1}/{folds}: head trained on {len(tr)} images, detecting on {len(te)}")
        head.eval()
        with torch.no_grad():
            for i in te:
                out = head([m.float()[None] for m in maps[i][0]])
                bx, sc = (t[0].numpy() for t in head.decode(out))
                pb, ps, pc = postprocess(bx, sc, **head.post)
                w, h = sizes[i]
                sx, sy = w / f.size, h / f.size
                dets[i] = [
                    {"label": labels[int(c)], "score": float(s), "box": [x0 * sx, y0 * sy, x1 * sx, y1 * sy]}
                    for (x0, y0, x1, y1), s, c in zip(pb.tolist(), ps, pc)
                ]
    return dets


def _cleanlab_inputs(boxes: list[list], dets: list[list], labels: list[str]) -> tuple:
    lab = [
        {
            "bboxes": np.array([r[1:] for r in rs], dtype=np.float32).reshape(-1, 4),
            "labels": np.array([labels.index(r[0]) for r in rs], dtype=int),
        }
        for rs in boxes
    ]
    pred = []
    for ds in dets:  # per image, one (M x 5) array per label, in an object array of length K
        per = np.empty(len(labels), dtype=object)
        for c, name in enumerate(labels):
            rows = [[*d["box"], d["score"]] for d in ds if d["label"] == name]
            per[c] = np.array(rows, dtype=np.float32).reshape(-1, 5)
        pred.append(per)
    return lab, pred


def rank_boxes(boxes: list[list], dets: list[list], labels: list[str], high_score: float = HIGH_SCORE) -> dict:
    """cleanlab's object-detection scores on plain lists: order (worst first), and per image the quality,
    the issue flag and each kind's pooled score (lower: that kind of error is more likely).

    cleanlab counts a detection as confident for "overlooked" and "swap" from 0.95, a level a full
    detector trained on the whole set reaches; the small out-of-fold heads here put an object they see
    clearly at 0.6-0.9, so `high_score` (0.5) is passed to the per-kind scores and the image quality is
    pooled from them exactly as cleanlab's get_label_quality_scores pools its own (its default weights,
    softmin per image, a weighted geometric mean; issues below its 0.1 quality threshold)."""
    from cleanlab.internal import constants as K
    from cleanlab.object_detection import rank as odr

    lab, pred = _cleanlab_inputs(boxes, dets, labels)
    weights = {
        "overlooked": K.CUSTOM_SCORE_WEIGHT_OVERLOOKED,
        "swap": K.CUSTOM_SCORE_WEIGHT_SWAP,
        "badloc": K.CUSTOM_SCORE_WEIGHT_BADLOC,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_box = {
            "overlooked": odr.compute_overlooked_box_scores(
                labels=lab, predictions=pred, high_probability_threshold=high_score
            ),
            "swap": odr.compute_swap_box_scores(labels=lab, predictions=pred, high_probability_threshold=high_score),
            "badloc": odr.compute_badloc_box_scores(labels=lab, predictions=pred),
        }
        kind = {name: odr.pool_box_scores_per_image(scores) for name, scores in per_box.items()}
    quality = np.exp(sum(w * np.log(K.TINY_VALUE + kind[name]) for name, w in weights.items()))
    issue = odr.issues_from_scores(quality)
    flagged = np.zeros(len(boxes), bool)
    flagged[np.asarray(issue, dtype=int)] = True
    order = sorted(range(len(boxes)), key=lambda i: (not flagged[i], float(quality[i]), i))
    return {"order": order, "quality": quality, "issue": flagged, "kind": kind, "per_box": per_box}


def _split_images(folder: DatasetFolder, labels: list) -> tuple[list, list, list]:
    """(split.csv rows, image paths, boxes) of every image in the dataset's splits, in split order."""
    by_file = {r["file"]: r for r in read_csv_rows(folder.split_csv)}
    rows, paths, boxes = [], [], []
    for split in ("train", "valid", "test"):
        if not (folder.root / split).is_dir():
            continue
        ps, bs, _ = read_split(folder.root / split, labels)
        for p, b in zip(ps, bs):
            rel = p.relative_to(folder.root).as_posix()
            if rel in by_file:
                rows.append(by_file[rel])
                paths.append(p)
                boxes.append(b)
    return rows, paths, boxes


def _item(rank: int, i: int, r: dict, size: tuple, given: list, dets: list, res: dict, raw: dict) -> dict:
    """One image as the label page shows it: its boxes, the detections worth showing, cleanlab's scores."""
    w, h = size
    kinds = {n: round(float(res["kind"][n][i]), 4) for n in KINDS}
    worst = min(kinds, key=kinds.get)
    return {
        "rank": rank,
        "sha256": r["sha256"],
        "file": r["file"],
        "split": r["split"],
        "path": raw.get(r["sha256"], r["file"]),
        "width": w,
        "height": h,
        "boxes": [[b[0], *(round(float(v), 1) for v in b[1:])] for b in given],
        "predicted": [
            [d["label"], *(round(float(v), 1) for v in d["box"]), round(d["score"], 3)]
            for d in dets
            if d["score"] >= SHOWN_SCORE
        ],
        "quality": round(float(res["quality"][i]), 4),
        "issue": bool(res["issue"][i]),
        "kinds": kinds,
        "likely": worst,
        "reason": (f"box issue: {worst}?" if res["issue"][i] else ""),
        "detail": ", ".join(f"{n} {v:.2f}" for n, v in kinds.items()),
        "saved": False,
    }


@dataclass(frozen=True)
class BoxSuspects(Suspects):
    """Review's ranking of a detection dataset, shown on the label page: each image's given boxes, its
    out-of-fold detections and cleanlab's scores."""

    files: dict  # sha256 → the stored image
    problems: list  # the box journal's lines that could not be used

    def on_label_page(self, show: int) -> LabelItems:
        """The first `show` images as the label page lists them."""
        return LabelItems(self.root, self.labels, self.items[:show], self.files, self.problems)

    def to_json(self, name: str, top: list) -> dict:
        top = [{k: v for k, v in it.items() if k != "saved"} for it in top]
        return {"name": name, "labels": list(self.labels), "issues": self.issues, "folds": self.folds, "items": top}

    def lines(self, name: str, top: list) -> list[str]:
        out = [
            f"{name}: {len(self.items)} images, {self.issues} flagged by cleanlab as likely box issues "
            f"(out-of-fold detections, {self.folds} folds); the {len(top)} worst (lower: more likely that error):"
        ]
        for it in top:
            k = it["kinds"]
            out.append(
                f"{it['rank']:>5}  quality {it['quality']:.3f}  {'ISSUE ' + it['likely'] if it['issue'] else '-':<16}"
                f"  overlooked {k['overlooked']:.2f}  swap {k['swap']:.2f}  badloc {k['badloc']:.2f}  "
                f"{len(it['boxes'])} given / {len(it['predicted'])} predicted  {shown_path(it['path'])}"
                + ("  [boxes saved]" if it["saved"] else "")
            )
        return out


def suspects(task, recipe, root: Path, run: Path | None = None, folds: int = 5, log=print) -> BoxSuspects:
    """Every image of the dataset's splits, worst first, with its given boxes, its out-of-fold detections
    and cleanlab's scores; in the shape the label page shows (boxes and suggestions per image)."""
    from PIL import Image

    folder = DatasetFolder(Path(root))
    if not folder.split_csv.is_file():
        raise DataError(f"{folder.root}: no split.csv; run `chiquito dataset {recipe.path}` first")
    labels = list(recipe.detect.labels)
    raw = {r["sha256"]: r["raw_path"] for r in read_csv_rows(folder.manifest)} if folder.manifest.is_file() else {}
    rows, paths, boxes = _split_images(folder, labels)
    k = min(folds, len(paths))
    if k < 2 or not any(boxes):
        raise DataError(f"{folder.root}: review needs at least 2 images with boxes; add images first")
    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    dets = oof_detections(recipe, task, paths, boxes, sizes, k, log)
    res = rank_boxes(boxes, dets, labels)
    items = [
        _item(rank, i, rows[i], sizes[i], boxes[i], dets[i], res, raw) for rank, i in enumerate(res["order"], start=1)
    ]
    return BoxSuspects(
        root=folder.root,
        labels=tuple(labels),
        items=items,
        issues=int(res["issue"].sum()),
        folds=k,
        files={r["sha256"]: p for r, p in zip(rows, paths)},
        problems=[],
    )
