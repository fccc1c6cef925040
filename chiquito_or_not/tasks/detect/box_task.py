"""The detect task's TASK: its parts behind the interface the shared stages use (core.task_registry.Task)."""

from __future__ import annotations

from ...core.errors import ChiquitoError
from ...core.layout import DatasetFolder
from .box_dataset import BoxDataset
from .box_export import compare, onnx_graph, onnx_metadata, parity
from .box_head import adapt_body, model_parts
from .box_inference import LearnerDetector, detect_images, draw_files, predict_paths
from .box_journal import BoxJournal, check_boxes_json, read_box_journal
from .box_label import label_items
from .box_metrics import evaluate_set, headline
from .box_runtime import LiteDetector, OnnxDetector

__all__ = ["TASK", "Detect"]


class Detect:
    name = "detect"
    history_metrics = ("map_50",)
    scores = ("map_50", "map")
    rank = ("map_50", "map")
    feature_cache = False  # augmentation moves the boxes: the body must see every augmented image
    channels_last = True  # a training step is faster in this layout on a CPU (bench/bench_channels_last.py)
    onnx_outputs = ("boxes", "scores")

    # data
    def dataset_parts(self, recipe, folder, log, use_review: bool):
        return BoxDataset(recipe, folder, log, use_review)

    def review_suspects(self, recipe, root, run, folds: int, log) -> dict:
        """Ranked by cleanlab's box scores on out-of-fold detections; shown on the label page, whose
        journal (box_labels.csv) takes the decisions. `run` is not used: its model saw every box."""
        from .box_review import suspects

        folder = DatasetFolder(root)
        res = suspects(self, recipe, root, folds=folds, log=log)
        saved, problems = read_box_journal(folder.box_labels)
        for it in res["items"]:
            if it["sha256"] in saved:
                it["boxes"] = [[b.label, b.x0, b.y0, b.x1, b.y1] for b in saved[it["sha256"]].boxes]
                it["saved"] = True
        journal = BoxJournal(folder.box_labels)
        return res | {"page": "label", "journal": journal, "check": check_boxes_json, "problems": problems}

    def label_items(self, recipe, root, log, everything: bool) -> dict:
        res = label_items(recipe, root, log, everything)
        return res | {"journal": BoxJournal(DatasetFolder(root).box_labels), "check": check_boxes_json}

    def check_dataset(self, recipe, root) -> None:
        from .box_data import check_dataset

        check_dataset(recipe, root)

    # training
    def dataloaders(self, recipe, root, augment: bool):
        from .box_data import make_dls

        return make_dls(recipe, augment=augment, root=root)

    def memorise_dls(self, recipe, root, n_images: int) -> tuple:
        from .box_data import memorise_dls

        return memorise_dls(recipe, root, n_images)

    def adapt_body(self, recipe, body):
        return adapt_body(recipe, body)

    def model_parts(self, recipe, body, n_features: int, dls, root) -> tuple:
        return model_parts(recipe, body, n_features, dls, root)

    def headline(self, metrics: dict) -> str:
        return headline(metrics)

    # using a trained model
    def check_model(self, model, path) -> None:
        try:
            head = model.model[1]
        except (AttributeError, TypeError, IndexError, KeyError):
            head = None
        if not hasattr(head, "anchors") or not hasattr(head, "labels"):
            raise ChiquitoError(f"{path}: not an exported detector (no SSD head)")

    def learner_model(self, learn, path):
        return LearnerDetector(learn, path)

    def evaluate_set(self, model, name, folder, out, suffix, top_k, log, split: bool = False) -> dict:
        return evaluate_set(model, name, folder, out, suffix, top_k, log)

    def predict_files(self, model, paths, bs: int = 16, workers: int = 2, threshold: float | None = None) -> list:
        return predict_paths(model, paths, bs=bs, workers=workers, threshold=threshold)

    def draw_files(self, model, results, folder) -> int:
        return draw_files(model, results, folder)

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        boxes = detect_images(model, [image], threshold=threshold)[0]
        return {"boxes": boxes, "width": image.width, "height": image.height}

    def onnx_model(self, path, session):
        return OnnxDetector(path, session)

    def onnx_graph(self, model):
        return onnx_graph(model)

    def onnx_metadata(self, model) -> dict:
        return onnx_metadata(model)

    def lite_model(self, path, session):
        return LiteDetector(path, session)

    def input_spec(self, model) -> dict:
        s = model.spec
        return {"size_wh": [s["size"], s["size"]], "mean": s["mean"], "std": s["std"], "scale": 1 / 255}

    def parity(self, model, exported, files, what: str) -> dict:
        return parity(model, exported, files, what)

    def compare(self, reference, other, files) -> dict:
        return compare(reference, other, files)


TASK = Detect()
