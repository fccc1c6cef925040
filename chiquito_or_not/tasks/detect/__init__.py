"""Object detection: boxes with labels in, an SSD detector out (task = "detect").

`TASK` is what the shared stages use (see chiquito_or_not.tasks.Task); the modules beside it hold the
parts: annotations (VOC/CSV/COCO/YOLO readers and box checks), dataset (the dataset stage), data
(DataLoaders, box-aware augmentation), net and model (SSDLite head on the body, loss, decoding),
postprocess (numpy NMS shared by every runtime), evaluate, predict, export and onnxmodel.
"""

from __future__ import annotations

__all__ = ["TASK", "Detect"]


class Detect:
    name = "detect"
    history_metrics = ("map_50",)
    scores = ("map_50", "map")
    rank = ("map_50", "map")
    feature_cache = False  # augmentation moves the boxes: the body must see every augmented image
    channels_last = True  # one training step 1.48x faster here: 24 unfrozen epochs fit where 16 did
    onnx_outputs = ("boxes", "scores")

    # data
    def build_dataset(self, recipe, root, log, retry_failed: bool, use_review: bool):
        from .dataset import build_detection_dataset

        # review.csv is classification's (chiquito review refuses a detection recipe): nothing to apply

        return build_detection_dataset(recipe, root, log, retry_failed)

    def review_suspects(self, recipe, root, run, folds: int, log) -> dict:
        from ...core.errors import ChiquitoError

        raise ChiquitoError(f"{recipe.path}: review ranks classification datasets only; for a detector, "
                            "look at runs/NAME/worst.png (its images with the most missed or wrong boxes)")

    def check_dataset(self, recipe, root) -> None:
        from .data import check_dataset

        check_dataset(recipe, root)

    # training
    def dataloaders(self, recipe, root, augment: bool):
        from .data import make_dls

        return make_dls(recipe, augment=augment, root=root)

    def memorise_dls(self, recipe, root, n_images: int) -> tuple:
        from .data import memorise_dls

        return memorise_dls(recipe, root, n_images)

    def adapt_body(self, recipe, body):
        from .model import adapt_body

        return adapt_body(recipe, body)

    def model_parts(self, recipe, body, n_features: int, dls, root) -> tuple:
        from .model import model_parts

        return model_parts(recipe, body, n_features, dls, root)

    def headline(self, metrics: dict) -> str:
        from .evaluate import headline

        return headline(metrics)

    # using a trained model
    def check_model(self, model, path) -> None:
        from ...core.errors import ChiquitoError

        try:
            head = model.model[1]
        except (AttributeError, TypeError, IndexError, KeyError):
            head = None
        if not hasattr(head, "anchors") or not hasattr(head, "labels"):
            raise ChiquitoError(f"{path}: not an exported detector (no SSD head)")

    def labels(self, model) -> list[str]:
        from .predict import model_spec

        return model_spec(model)["labels"]

    def evaluate_set(self, model, name, folder, out, suffix, top_k, log, split: bool = False) -> dict:
        from .evaluate import evaluate_set

        return evaluate_set(model, name, folder, out, suffix, top_k, log)

    def predict_files(self, model, paths, bs: int = 16, workers: int = 2, threshold: float | None = None) -> list:
        from .predict import predict_paths

        return predict_paths(model, paths, bs=bs, workers=workers, threshold=threshold)

    def draw_files(self, model, results, folder) -> int:
        from .predict import draw_files

        return draw_files(model, results, folder)

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        from .predict import detect_images

        boxes = detect_images(model, [image], threshold=threshold)[0]
        return {"boxes": boxes, "width": image.width, "height": image.height}

    def onnx_model(self, path, session):
        from .onnxmodel import OnnxDetector

        return OnnxDetector(path, session)

    def onnx_graph(self, learn):
        from .export import onnx_graph

        return onnx_graph(learn)

    def onnx_metadata(self, learn) -> dict:
        from .export import onnx_metadata

        return onnx_metadata(learn)

    def lite_model(self, path, session):
        from .onnxmodel import LiteDetector

        return LiteDetector(path, session)

    def input_spec(self, learn) -> dict:
        from .predict import model_spec

        s = model_spec(learn)
        return {"size_wh": [s["size"], s["size"]], "mean": s["mean"], "std": s["std"], "scale": 1 / 255}

    def parity(self, learn, exported, files, what: str) -> dict:
        from .export import parity

        return parity(learn, exported, files, what)

    def compare(self, reference, other, files) -> dict:
        from .export import compare

        return compare(reference, other, files)


TASK = Detect()
