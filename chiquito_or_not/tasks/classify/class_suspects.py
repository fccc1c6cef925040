"""Suspects for review: which images of a classification dataset probably carry the wrong label.

Out-of-fold class probabilities from a logistic regression on the pretrained body's pooled features
(k folds, stratified, seeded; the features come from the feature cache, so this takes seconds, not a
training run per fold), then cleanlab's confident learning: `find_label_issues` flags the images whose
given label the out-of-fold probabilities contradict beyond the per-class noise it estimates, and
`get_label_quality_scores` (self-confidence: the out-of-fold probability of the given label) ranks them.
Beside them: images unlike the rest of the dataset (cleanlab's k-nearest-neighbour out-of-distribution
score on the same features), the run's top losses when a run is given, and the cross-class duplicates
the dataset stage left out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...core.errors import DataError
from ...core.files import read_csv_rows, shown_path
from ...core.layout import DatasetFolder
from ...core.model_loader import load_model
from ...core.reasons import Reason
from ...core.task_registry import Suspects
from ...train.backbones import get_backbone
from ...train.features import FeatureCache, cached_features, learner_key
from .class_data import dataset_classes
from .class_inference import predict_paths

__all__ = ["oof_probabilities", "rank_items", "suspects", "ClassSuspects", "FEATURE_BACKBONE"]

FEATURE_BACKBONE = "efficientnet_lite0"  # when the recipe's own body is untrained (a scratch CNN)
OUTLIER_SHARE = 0.02  # the lowest out-of-distribution scores listed as "unlike the rest"
TOP_LOSSES = 0.02  # the run's highest losses listed


def oof_probabilities(features: np.ndarray, y: np.ndarray, n_classes: int, folds: int, seed: int) -> tuple:
    """(N x C class probabilities, each image's from a model that never saw it (stratified k-fold), the
    regularisation C used). C is chosen by cross-validated log-loss on the given labels: noisy labels
    want a strong prior, and the data say how strong."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, int(np.bincount(y, minlength=n_classes).min()))
    if k < 2:
        raise DataError("review needs at least 2 images of every class; add images first")
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pick = make_pipeline(
        StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 0, 9), cv=cv, scoring="neg_log_loss", max_iter=3000)
    )
    with warnings.catch_warnings():  # scikit-learn 1.8 announces changes to defaults we do not use
        warnings.simplefilter("ignore", FutureWarning)
        c = float(pick.fit(features, y)[-1].C_[0])
    probs = np.zeros((len(y), n_classes))
    for tr, te in cv.split(features, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        clf.fit(features[tr], y[tr])
        probs[np.ix_(te, clf[-1].classes_)] = clf.predict_proba(features[te])
    return probs, c


def rank_items(
    features: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0, losses: np.ndarray | None = None
) -> dict:
    """The ranking, on plain arrays: order (worst first), and per image the out-of-fold probabilities,
    label quality, label-issue flag, out-of-distribution score and why it is listed."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    probs, c = oof_probabilities(features, y, n_classes, folds, seed)
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    issue = find_label_issues(labels=y, pred_probs=probs, filter_by="prune_by_noise_rate", n_jobs=1)  # no fork
    k = min(10, len(y) - 1)
    ood = OutOfDistribution(params={"k": k}).fit_score(features=features, verbose=False) if k >= 1 else np.ones(len(y))
    outlier = np.zeros(len(y), bool)
    n_out = max(1, int(round(OUTLIER_SHARE * len(y))))
    outlier[np.argsort(ood, kind="stable")[:n_out]] = True
    top_loss = np.zeros(len(y), bool)
    if losses is not None:
        top_loss[np.argsort(-losses, kind="stable")[: max(1, int(round(TOP_LOSSES * len(y))))]] = True
    why = [
        [w for w, on in (("label issue", issue[i]), ("top loss", top_loss[i]), ("unlike the rest", outlier[i])) if on]
        for i in range(len(y))
    ]
    # flagged label issues (most confident first), then the run's top losses, then outliers, then the rest
    tier = np.where(issue, 0, np.where(top_loss, 1, np.where(outlier, 2, 3)))
    key = np.where(tier == 2, ood, quality)
    order = sorted(range(len(y)), key=lambda i: (tier[i], key[i], i))
    return {"order": order, "probs": probs, "quality": quality, "issue": issue, "ood": ood, "why": why, "C": c}


def _features(task, recipe, root: Path, files: list[Path], log, cache_root: Path) -> np.ndarray:
    """The pretrained body's pooled features of `files`, through the feature cache."""
    import tempfile

    from ...train.learner import make_learner

    f = recipe.finetune
    if get_backbone(f.backbone).family == "scratch":
        log(f"  {f.backbone} starts untrained: features from {FEATURE_BACKBONE} (ImageNet) instead")
        recipe = replace(recipe, finetune=replace(f, backbone=FEATURE_BACKBONE, weights=""))
    with tempfile.TemporaryDirectory() as tmp:  # the learner's path: nothing is saved there
        learn = make_learner(recipe, task, task.data.dataloaders(recipe, root, augment=False), Path(tmp), root)
        cache = FeatureCache(cache_root / "features", learner_key(learn, recipe.finetune.backbone))
        x, counts = cached_features(learn, files, cache)
    log(f"  features ({recipe.finetune.backbone}): {counts['hit']} cached, {counts['computed']} computed")
    return x.numpy().astype(np.float64)


def _losses(run: Path, files: list[Path], labels: list[str], log) -> np.ndarray:
    """Each image's cross-entropy under the run's model (model.pkl: a pickle, loading it runs code)."""
    learn = load_model(Path(run) / "model.pkl", notice=log)
    out = predict_paths(learn, files, faces=False)  # the dataset's pictures: already cropped
    return np.array(
        [-np.log(max(r.probabilities.get(lab, 0.0), 1e-12)) if r.probabilities else 0.0 for r, lab in zip(out, labels)]
    )


def cross_class_duplicates(folder: DatasetFolder) -> list[dict]:
    """Images the dataset stage left out because they (nearly) appear in two classes."""
    if not folder.manifest.is_file():
        return []
    why = {Reason.IN_SEVERAL_CLASSES, Reason.NEAR_DUPLICATE_IN_SEVERAL_CLASSES}
    return [
        {
            "sha256": r["sha256"],
            "path": r["raw_path"],
            "label": r["label"],
            "reason": r["reason"],
            "detail": r["detail"],
            "clean_path": r["clean_path"],
        }
        for r in read_csv_rows(folder.manifest)
        if r["reason"] in why
    ]


@dataclass(frozen=True)
class ClassSuspects(Suspects):
    """Review's ranking of a class dataset: each image's label, the suggested label, scores and why; and the
    images left out because they (nearly) appear in two classes (shown, not decided)."""

    C: float  # the regularisation the out-of-fold logistic regressions chose
    duplicates: list

    def to_json(self, name: str, top: list) -> dict:
        keep = {"classes": list(self.labels), "issues": self.issues, "C": self.C, "folds": self.folds}
        return {"name": name, **keep, "duplicates": self.duplicates, "items": top}

    def lines(self, name: str, top: list) -> list[str]:
        out = [
            f"{name}: {len(self.items)} images, {self.issues} flagged as likely label issues "
            f"(out-of-fold, {self.folds} folds, C {self.C:.0e}); the {len(top)} worst:"
        ]
        for it in top:
            sug = f" -> {it['suggested']}?" if it["suggested"] != it["label"] else ""
            decision = it.get("decision", "")  # the review stage adds review.csv's decisions
            relabel = " " + it.get("decided_label", "") if decision == "relabel" else ""
            dec = f"  [{decision}{relabel}]" if decision else ""
            out.append(
                f"{it['rank']:>5}  p({it['label']}) {it['quality']:.3f}  {it['label']}{sug}  "
                f"{', '.join(it['why']) or '-'}  {shown_path(it['path'])}{dec}"
            )
        out += [f"  left out, {d['reason']}: {d['label']} {shown_path(d['path'])}" for d in self.duplicates]
        return out


def suspects(
    task, recipe, root: Path, run: Path | None = None, folds: int = 5, log=print, *, cache: Path
) -> ClassSuspects:
    """Every image of the dataset's splits, worst first, with its label, the suggested label, scores and
    why; plus the cross-class duplicates. `run`: also rank by that run's losses."""
    folder = DatasetFolder(Path(root))
    if not folder.split_csv.is_file():
        raise DataError(f"{folder.root}: no split.csv; run `chiquito dataset {recipe.path}` first")
    classes = dataset_classes(recipe, folder.root)
    rows = [r for r in read_csv_rows(folder.split_csv) if r["label"] in classes]
    raw = {r["sha256"]: r["raw_path"] for r in read_csv_rows(folder.manifest)} if folder.manifest.is_file() else {}
    files = [folder.root / r["file"] for r in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: listed in split.csv but not there; run `chiquito dataset {recipe.path}` again")
    y = np.array([classes.index(r["label"]) for r in rows])
    x = _features(task, recipe, folder.root, files, log, cache)
    losses = _losses(run, files, [r["label"] for r in rows], log) if run else None
    res = rank_items(x, y, len(classes), folds=folds, seed=recipe.seed, losses=losses)
    items = []
    for rank, i in enumerate(res["order"], start=1):
        r, p = rows[i], res["probs"][i]
        best = int(np.argmax(p))
        items.append(
            {
                "rank": rank,
                "sha256": r["sha256"],
                "file": r["file"],
                "split": r["split"],
                "path": raw.get(r["sha256"], r["file"]),
                "label": r["label"],
                "suggested": classes[best],
                "p_suggested": round(float(p[best]), 4),
                "quality": round(float(res["quality"][i]), 4),
                "ood": round(float(res["ood"][i]), 4),
                "loss": None if losses is None else round(float(losses[i]), 4),
                "why": res["why"][i],
            }
        )
    return ClassSuspects(
        root=folder.root,
        labels=tuple(classes),
        items=items,
        issues=int(res["issue"].sum()),
        folds=folds,
        C=res["C"],
        duplicates=cross_class_duplicates(folder),
    )
