"""A folder as a classification recipe (`chiquito train FOLDER`): one sub-folder per class
(`root/<class>/*.jpg`, the fastai / ImageNet / Ultralytics-classify layout), or split folders each with one
sub-folder per class (`root/{train,valid,test}/<class>/`), whose splits are kept as given."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import DataError
from ...core.files import IMAGE_EXTS
from ...core.task_registry import FolderRecipe

__all__ = ["folder_recipe", "SPLIT_NAMES"]

# a split folder's name → the split (as Ultralytics-classify and Roboflow name them)
SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS and _visible(p))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _classes(folder: Path, where: str) -> dict[str, int]:
    """class → its image count, for the sub-folders of `folder`; DataError for an empty one."""
    counts = {p.name: _images(p) for p in _subfolders(folder)}
    empty = [k for k, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"{where}: class folder {empty[0]!r} has no pictures (jpg, png, webp, bmp, tif); put pictures in it "
            "or remove it"
        )
    return counts


def folder_recipe(folder: Path) -> FolderRecipe | None:
    """The classification recipe for `folder`, or None when it has no sub-folders (then it is not a
    classification folder); DataError (one line) when it has one class, an empty class or loose pictures
    beside the class folders."""
    subs = _subfolders(folder)
    if not subs:
        return None
    where = str(folder)
    splits = {SPLIT_NAMES[p.name.lower()]: p for p in subs if p.name.lower() in SPLIT_NAMES}
    if splits and len(splits) == len(subs):
        return _split_folders(folder, splits)
    counts = _classes(folder, where)
    loose = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if loose:
        raise DataError(
            f"{where}: {loose} pictures lie beside the class folders; move each into its class's folder "
            "(root/<class>/picture.jpg)"
        )
    _two_classes(counts, where)
    data = {"classes": {c: {"sources": [{"kind": "folder", "path": str(folder / c)}]} for c in counts}}
    said = [
        f"task: classify, {len(counts)} classes from its sub-folders",
        "classes: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + " pictures",
        "splits: by content hash (valid 20 %)",
    ]
    return FolderRecipe("classify", data, said)


def _two_classes(counts: dict, where: str) -> None:
    if len(counts) < 2:
        only = f" ({next(iter(counts))!r})" if counts else ""
        raise DataError(
            f"{where}: one class{only}; a model that tells pictures apart needs at least two: add a folder of "
            "pictures of something else beside it"
        )


def _split_folders(folder: Path, splits: dict[str, Path]) -> FolderRecipe:
    where = str(folder)
    if "train" not in splits or "valid" not in splits:
        missing = "train" if "train" not in splits else "valid (or val)"
        raise DataError(
            f"{where}: split folders without {missing}/; add it, or put the class folders directly in {where}"
        )
    per_split = {s: _classes(p, f"{where}/{p.name}") for s, p in splits.items()}
    classes = sorted(per_split["train"])
    _two_classes(per_split["train"], f"{where}/{splits['train'].name}")
    for s, counts in per_split.items():
        other = sorted(set(counts) ^ set(classes))
        if other:
            raise DataError(
                f"{where}/{splits[s].name}: class folders differ from train/'s ({', '.join(other)}); give every "
                "split the same class folders"
            )
    data = {
        "classes": {
            c: {"sources": [{"kind": "folder", "path": str(p / c), "split": s} for s, p in splits.items()]}
            for c in classes
        },
        "dataset": {"split": "given"},
    }
    said = [
        f"task: classify, {len(classes)} classes in split folders ({', '.join(p.name for p in splits.values())})",
        "classes: " + ", ".join(f"{c} {sum(per_split[s][c] for s in per_split)}" for c in classes) + " pictures",
        "splits: as given (" + ", ".join(f"{s} {sum(per_split[s].values())}" for s in per_split) + ")",
    ]
    return FolderRecipe("classify", data, said)
