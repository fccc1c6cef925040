"""Every reason an input can be left out of a dataset or refused by predict and the web app: one
enumeration, so manifest.csv, the dataset summary and the docs use the same words. Members are strings
(StrEnum): they compare equal to, and are written as, their values."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status", "Reason", "UNUSED_DETAIL"]


class Status(StrEnum):
    KEPT = "kept"
    REJECTED = "rejected"  # cannot be trained on
    UNUSED = "unused"  # clean, but left out of the splits by the recipe's policy


class Reason(StrEnum):
    # reading the file
    UNREADABLE = "unreadable"
    NOT_A_REGULAR_FILE = "not_a_regular_file"  # a pipe, device, socket or folder
    TOO_LARGE = "too_large"
    EMPTY_FILE = "empty_file"
    # decoding it (core.images.clean_one)
    NOT_AN_IMAGE = "not_an_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    CORRUPT = "corrupt"
    ANIMATED = "animated"
    FORMAT_NOT_ALLOWED = "format_not_allowed"
    TRUNCATED_OR_CORRUPT = "truncated_or_corrupt"
    TOO_SMALL = "too_small"
    CORRUPT_EXIF = "corrupt_exif"
    # de-duplication (data.clean)
    EXACT_DUPLICATE = "exact_duplicate"
    IN_SEVERAL_CLASSES = "in_several_classes"
    NEAR_DUPLICATE = "near_duplicate"
    NEAR_DUPLICATE_IN_SEVERAL_CLASSES = "near_duplicate_in_several_classes"
    # detection annotations (tasks.detect): an image's, or one box's
    NO_ANNOTATION = "no_annotation"  # an image without its annotation file (or entry)
    ANNOTATION_WITHOUT_IMAGE = "annotation_without_image"  # an annotation whose image is not there
    BAD_ANNOTATION = "bad_annotation"  # cannot be parsed, or a required field is missing or not a number
    UNSAFE_ANNOTATION = "unsafe_annotation"  # an XML bomb, entities or a DTD: refused unread
    SIZE_MISMATCH = "size_mismatch"  # the annotation's width/height disagree with the image's
    BOX_OUTSIDE_IMAGE = "box_outside_image"  # past the edge by more than detect.box_tolerance
    EMPTY_BOX = "empty_box"  # zero or negative width or height (below detect.min_box)
    UNKNOWN_LABEL = "unknown_label"  # a label not in detect.labels
    NO_BOXES = "no_boxes"  # no box left, and detect.background_images is false
    CROWD_BOX = "crowd_box"  # a COCO iscrowd region (many objects in one box): left out, as COCO's evaluation does
    ROTATED_BOX = "rotated_box"  # a box drawn rotated (CVAT, Label Studio): only axis-aligned boxes are trained on
    AMBIGUOUS_ANNOTATION = "ambiguous_annotation"  # two annotation files (or entries) claim one image
    NOT_IN_GIVEN_SPLIT = "not_in_given_split"  # split = "given", and the layout's splits do not name the image
    # the dataset's policy (stages.dataset, data.split): status "unused" except the first
    CLASS_BELOW_MIN_IMAGES = "class_below_min_images"
    BALANCED_OUT = "balanced_out"
    PER_CLASS_CAP = "per_class_cap"
    TRAIN_CAP = "train_cap"
    # face crops (data.face_crops, dataset.faces); predict and serve say no_face too
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    # the user's decision in datasets/NAME/review.csv (chiquito review)
    EXCLUDED_IN_REVIEW = "excluded_in_review"


UNUSED_DETAIL = {
    Reason.BALANCED_OUT: 'balance = "downsample": every class is cut to the smallest',
    Reason.PER_CLASS_CAP: "dataset.per_class = {per_class}",
    Reason.TRAIN_CAP: "dataset.train = {train}",
}
