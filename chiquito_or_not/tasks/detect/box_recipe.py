"""The detection recipe's own section: `[detect]` with its labels, annotated sources and box policy."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from ...core.errors import RecipeError
from ...core.recipe_schema import Bool, Float, Int, Source, Str, bounded, schema

__all__ = ["AnnotatedSource", "DetectSpec", "FIELDS", "class_names", "sources", "check"]


@schema
class AnnotatedSource:
    """Detection images and their boxes: `images` is any source; the boxes are in `format`, one file per
    image (voc: NAME.xml, yolo: NAME.txt; beside it, or in a VOC devkit's or YOLO dataset's folders) or
    one file for many (coco, csv, cvat, labelstudio), found among the source's files or named in
    `annotations` (a path relative to the source, or on disk). "auto": the one layout the files show."""

    images: Source
    format: Literal["auto", "voc", "yolo", "coco", "csv", "cvat", "labelstudio"] = "auto"
    annotations: Str = ""
    names: tuple[Str, ...] = ()  # yolo: the label of class id 0, 1, ... (default: detect.labels in order)


@schema
class DetectSpec:
    """A detection recipe's labels, sources and annotation policy (task = "detect")."""

    labels: tuple[Str, ...] = ()
    sources: tuple[AnnotatedSource, ...] = ()
    # a bad box (outside the image beyond the tolerance, empty, unknown label): drop the whole image, or
    # only the box
    bad_boxes: Literal["drop_image", "drop_box"] = "drop_image"
    box_tolerance: Float = bounded(0.0, 100.0, default=2.0)  # px a box may pass the edge (then clipped)
    min_box: Float = bounded(0.0, 1000.0, default=2.0)  # px: a box narrower or lower than this is empty
    background_images: Bool = True  # keep images with no boxes (negatives); else they are rejected
    size_tolerance: Int = bounded(0, 1000, default=1)  # px the annotation's width/height may differ from the image's
    score_threshold: Float = bounded(0.0, 1.0, default=0.3)  # predict's and serve's default
    nms_iou: Float = bounded(0.0, 1.0, default=0.5)
    max_detections: Int = bounded(1, 10_000, default=100)


# (key, type, default) of each top-level key this task adds to the recipe
FIELDS = (("detect", DetectSpec, field(default=DetectSpec())),)


def class_names(recipe) -> list[str]:
    """The labels the model answers with: the detector's labels, in order."""
    return list(recipe.detect.labels)


def sources(recipe) -> list[tuple[str, object]]:
    """(key, source) of every source this section names."""
    return [("detect.sources", a.images) for a in recipe.detect.sources]


def check(recipe, where: str, foreign: list[str]) -> None:
    """What the schema cannot say: labels and sources, whole images, boxes a source can carry.
    `foreign`: the keys of other tasks' sections that the recipe sets."""
    d = recipe.detect
    if foreign:
        raise RecipeError(
            f"{where}: task = \"detect\" takes its labels from 'detect.labels' and its images from "
            "'detect.sources'; remove " + " / ".join(f"'{k}'" for k in foreign)
        )
    if recipe.dataset.faces.detector:
        raise RecipeError(
            f"{where}: 'dataset.faces' crops faces for a classifier; a detection recipe keeps whole images "
            "and their boxes: remove [dataset.faces]"
        )
    if not d.labels:
        raise RecipeError(f'{where}: \'detect.labels\' is empty; list the object labels, e.g. ["animal", "food"]')
    if len(set(d.labels)) != len(d.labels):
        raise RecipeError(f"{where}: 'detect.labels' names a label twice; list each once")
    for lab in d.labels:
        if not lab or "/" in lab or lab.startswith(".") or lab != lab.strip():
            raise RecipeError(f"{where}: label name {lab!r} must be a plain name (no '/', no leading dot or space)")
    if not d.sources:
        raise RecipeError(f"{where}: 'detect.sources' is empty; add a [[detect.sources]] table with 'images'")
    for i, s in enumerate(d.sources):
        _check_source(s.images, d.labels, f"{where}: 'detect.sources[{i}].images")


def _check_source(images, labels, at: str) -> None:
    """One annotated source's images: a source that can carry boxes; a composite's labels and shapes."""
    if images.kind == "urls":  # content-named downloads: no annotation file can name them
        raise RecipeError(
            f"{at}': a URL list has no boxes; download it into a folder, draw its boxes with `chiquito label`, "
            'and use kind = "folder"'
        )
    if images.kind != "composite":
        return
    unknown = sorted(set(images.objects) - set(labels))
    if unknown:
        raise RecipeError(
            f"{at}.objects' has label(s) {', '.join(unknown)} not in detect.labels ({', '.join(labels)}); "
            "add them there or rename"
        )
    if not images.backgrounds:
        raise RecipeError(f"{at}.backgrounds' is empty; add photo sources")
    lo, hi = images.per_image
    if not 1 <= lo <= hi <= 20:
        raise RecipeError(f"{at}.per_image' = [{lo}, {hi}] must be 1 <= min <= max <= 20")
    a, b = images.scale
    if not 0.01 <= a <= b <= 1.0:
        raise RecipeError(f"{at}.scale' = [{a}, {b}] must be 0.01 <= min <= max <= 1")
