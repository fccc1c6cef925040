"""The detect task's TASK: its parts as the roles the shared stages use (core.task_registry.Task)."""

from __future__ import annotations

from dataclasses import replace

from ...core.errors import ChiquitoError
from ...core.layout import DatasetFolder
from ...core.task_registry import Task
from .box_dataset import BoxDataset
from .box_export import compare, onnx_graph, onnx_metadata, parity
from .box_head import adapt_body, model_parts
from .box_inference import LearnerDetector, detect_images, draw_files, predict_paths
from .box_journal import BoxJournal, check_boxes_json, read_box_journal
from .box_label import label_items
from .box_metrics import evaluate_set, headline
from .box_runtime import LiteDetector, OnnxDetector

__all__ = ["TASK"]


class BoxData:
    """Boxes with labels from an annotation layout; splits that keep near-duplicates and layouts' own splits."""

    def dataset_parts(self, recipe, folder, roots, log, use_review: bool):
        return BoxDataset(recipe, folder, roots, log, use_review)

    def check_dataset(self, recipe, root) -> None:
        from .box_data import check_dataset

        check_dataset(recipe, root)

    def dataloaders(self, recipe, root, augment: bool):
        from .box_data import make_dls

        return make_dls(recipe, augment=augment, root=root)

    def memorise_dls(self, recipe, root, n_images: int) -> tuple:
        from .box_data import memorise_dls

        return memorise_dls(recipe, root, n_images)

    def from_folder(self, folder):
        from .box_folder import folder_recipe

        return folder_recipe(folder)


class BoxModel:
    """An SSDLite head on two of the body's feature maps."""

    history_metrics = ("map_50",)
    feature_cache = False  # augmentation moves the boxes: the body must see every augmented image
    channels_last = True  # a training step is faster in this layout on a CPU (bench/bench_channels_last.py)

    adapt_body = staticmethod(adapt_body)
    model_parts = staticmethod(model_parts)


class BoxEvaluation:
    """mAP (COCO's reference implementation) with bootstrap intervals, PR curves, a detection confusion matrix."""

    scores = ("map_50", "map")
    rank = ("map_50", "map")

    headline = staticmethod(headline)

    def evaluate_set(self, model, name, folder, out, suffix, top_k, log, split: bool = False) -> dict:
        return evaluate_set(model, name, folder, out, suffix, top_k, log)


class BoxInference:
    """A detector in use: labelled, scored boxes in each image's pixels."""

    def check_model(self, model, path) -> None:
        try:
            head = model.model[1]
        except (AttributeError, TypeError, IndexError, KeyError):
            head = None
        if not hasattr(head, "anchors") or not hasattr(head, "labels"):
            raise ChiquitoError(f"{path}: not an exported detector (no SSD head)")

    def learner_model(self, learn, path):
        return LearnerDetector(learn, path)

    def onnx_model(self, path, session):
        return OnnxDetector(path, session)

    def lite_model(self, path, session):
        return LiteDetector(path, session)

    def predict_files(self, model, paths, bs: int = 16, workers: int = 2, threshold: float | None = None) -> list:
        return predict_paths(model, paths, bs=bs, workers=workers, threshold=threshold)

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        boxes = detect_images(model, [image], threshold=threshold)[0]
        return {"boxes": boxes, "width": image.width, "height": image.height}


class BoxExport:
    """The exported graph answers with boxes and scores; parity is every detection's twin within bounds."""

    onnx_outputs = ("boxes", "scores")

    onnx_graph = staticmethod(onnx_graph)
    onnx_metadata = staticmethod(onnx_metadata)

    def input_spec(self, model) -> dict:
        s = model.spec
        return {"size_wh": [s["size"], s["size"]], "mean": s["mean"], "std": s["std"], "scale": 1 / 255}

    parity = staticmethod(parity)
    compare = staticmethod(compare)


class BoxReview:
    """Review: cleanlab's box scores on out-of-fold detections; the suspects are shown on the label page, whose
    journal (box_labels.csv) takes the decisions."""

    def suspects(self, recipe, roots, root, run, folds: int, log):
        """`run` is not used: its model saw every box."""
        from .box_review import suspects

        res = suspects(TASK, recipe, root, folds=folds, log=log)
        saved, problems = read_box_journal(DatasetFolder(root).box_labels)
        for it in res.items:
            if it["sha256"] in saved:
                it["boxes"] = [[b.label, b.x0, b.y0, b.x1, b.y1] for b in saved[it["sha256"]].boxes]
                it["saved"] = True
        return replace(res, problems=problems)


class BoxLabel:
    """`chiquito label`: the images whose boxes are missing or had problems, drawn and fixed on a page."""

    items = staticmethod(label_items)

    def suspects_page(self, suspects, show: int):
        return suspects.on_label_page(show)

    def journal(self, root):
        return BoxJournal(DatasetFolder(root).box_labels)

    def check_boxes(self, boxes, labels, width: int, height: int) -> list:
        return check_boxes_json(boxes, labels, width, height)


class BoxDraw:
    draw_files = staticmethod(draw_files)


TASK = Task(
    name="detect",
    data=BoxData(),
    model=BoxModel(),
    evaluation=BoxEvaluation(),
    inference=BoxInference(),
    export=BoxExport(),
    review=BoxReview(),
    label=BoxLabel(),
    draw=BoxDraw(),
)
