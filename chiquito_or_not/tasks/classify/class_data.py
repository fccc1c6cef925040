"""Classification data: a label is a folder. Classes, counts, DataLoaders, class weights, labelled folders."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ...core.errors import DataError
from ...core.images import IMAGE_EXTS
from ...core.layout import DatasetFolder
from ...data.dedup import unit_hash
from ...train.backbones import get_backbone

__all__ = ["dataset_classes", "check_dataset", "make_dls", "class_weights", "labelled_files", "memorise_dls"]


def _root(recipe, root) -> Path:
    """The dataset folder the caller resolved (core.paths.Roots.dataset): a task never guesses it."""
    if root is None:
        raise TypeError(f"{recipe.name}: the dataset folder must be given (Roots.dataset(name))")
    return Path(root)


def _count(root: Path, split: str, classes: list[str]) -> Counter:
    c = Counter()
    for lab in classes:
        d = root / split / lab
        c[lab] = sum(1 for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS) if d.is_dir() else 0
    return c


def dataset_classes(recipe, root: Path | None = None) -> list[str]:
    """The classes the dataset stage kept (classes.json), else the recipe's."""
    f = DatasetFolder(_root(recipe, root)).classes
    return json.loads(f.read_text()) if f.is_file() else recipe.class_names


def check_dataset(recipe, root: Path | None = None) -> None:
    """A DataError naming `chiquito dataset` unless every class has train and valid images."""
    root = _root(recipe, root)
    classes = dataset_classes(recipe, root)
    for split in ("train", "valid"):
        counts = _count(root, split, classes)
        empty = [lab for lab in classes if not counts[lab]]
        if empty:
            raise DataError(
                f"{root / split}: no images for class {', '.join(empty)}; run `chiquito dataset {recipe.path}` first"
            )


def make_dls(recipe, augment: bool, root: Path | None = None):
    """fastai DataLoaders over `<root>/train` and `<root>/valid`, with or without augmentation."""
    from fastai.vision.all import Dihedral, ImageDataLoaders, Normalize, Resize, aug_transforms

    root = _root(recipe, root)
    check_dataset(recipe, root)
    classes = dataset_classes(recipe, root)
    n_train = sum(_count(root, "train", classes).values())
    f, b = recipe.finetune, get_backbone(recipe.finetune.backbone)
    a = f.augment
    tfms = (
        aug_transforms(
            max_rotate=a.max_rotate,
            min_zoom=a.min_zoom,
            max_zoom=a.max_zoom,
            do_flip=a.flip,
            max_lighting=a.max_lighting,
            max_warp=a.max_warp,
        )
        if augment
        else []
    )
    if augment and a.rotate90:
        tfms.append(Dihedral(p=0.75))
    return ImageDataLoaders.from_folder(
        root,
        train="train",
        valid="valid",
        vocab=classes,
        seed=recipe.seed,
        item_tfms=Resize(f.size),
        batch_tfms=[*tfms, Normalize.from_stats(b.mean, b.std)],
        bs=min(f.bs, n_train),
        num_workers=f.workers,
    )


def class_weights(recipe, root: Path | None = None) -> list[float] | None:
    """Loss weights n_samples / (n_classes * count) when the recipe balances by weights, else None."""
    if recipe.dataset.balance != "weights":
        return None
    classes = dataset_classes(recipe, root)
    counts = _count(_root(recipe, root), "train", classes)
    n, k = sum(counts.values()), len(counts)
    return [n / (k * counts[lab]) for lab in classes]


def labelled_files(folder: Path, vocab: list[str]) -> tuple[list[Path], list[int]]:
    """Images under folder/<class>/, with their class index; unknown class folders are an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass a folder with one sub-folder per class")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [d.name for d in subdirs if d.name not in vocab]
    if unknown:
        raise DataError(
            f"{folder}: class folder(s) {', '.join(unknown)} are not classes of the model "
            f"({', '.join(vocab)}); rename or remove them"
        )
    files, ys = [], []
    for d in subdirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                files.append(p)
                ys.append(vocab.index(d.name))
    if not files:
        raise DataError(f"{folder}: no images in class sub-folders ({', '.join(vocab)})")
    return files, ys


def memorise_dls(recipe, root: Path | None, n_images: int) -> tuple:
    """(DataLoaders, items) for `sanity`: about n_images training images, the same per class for a seed,
    validated on themselves (validation accuracy is then memorisation), two batches, no augmentation."""
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import parent_label
    from fastai.vision.all import ImageBlock, Normalize, Resize

    root = DatasetFolder(_root(recipe, root)).split("train")
    classes = dataset_classes(recipe, root.parent)
    per_class = max(1, n_images // len(classes))
    items = []
    for lab in classes:
        files = (
            sorted(
                (p for p in (root / lab).glob("*") if p.suffix.lower() in IMAGE_EXTS),
                key=lambda p: unit_hash(recipe.seed, "sanity", p.name),
            )
            if (root / lab).is_dir()
            else []
        )
        if not files:
            raise DataError(f"{root / lab}: no training images; run `chiquito dataset {recipe.path}` first")
        items += files[:per_class]
    b = get_backbone(recipe.finetune.backbone)
    same = list(range(len(items)))
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=classes)),
        get_y=parent_label,
        splitter=lambda _: (same, same),
        item_tfms=Resize(recipe.finetune.size),
        batch_tfms=[Normalize.from_stats(b.mean, b.std)],
    )
    return block.dataloaders(items, bs=max(1, len(items) // 2), num_workers=0, drop_last=False), items
