"""Classification: a label is a folder; a model answers with class probabilities.

`TASK` is what the shared stages use (see chiquito_or_not.tasks.Task); the modules beside it hold the
parts: data (classes, DataLoaders, class weights), model (head, loss, metric), evaluate and figures,
predict, export (ONNX parity) and onnxmodel (the ONNX runtime side, no torch).
"""

from __future__ import annotations

__all__ = ["TASK", "Classify"]


class Classify:
    name = "classify"
    history_metrics = ("accuracy",)
    scores = ("accuracy", "balanced_accuracy")
    rank = ("balanced_accuracy", "accuracy")
    feature_cache = True  # the frozen stage may train the head on cached body features
    # not channels-last: 1.95x faster per step, but its gradients differ from the default layout's (3.6e-3
    # of the gradient's norm against a float64 reference, 8e-5 in the default layout), and a classifier
    # trains exactly as it always has
    channels_last = False
    onnx_outputs = ("probabilities",)

    # data
    def build_dataset(self, recipe, root, log, retry_failed: bool, use_review: bool):
        from ...data.dataset import build_class_dataset

        return build_class_dataset(recipe, root, log, retry_failed, use_review)

    def review_suspects(self, recipe, root, run, folds: int, log) -> dict:
        from .review import suspects

        return suspects(recipe, root, run, folds, log)

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
        return body

    def model_parts(self, recipe, body, n_features: int, dls, root) -> tuple:
        from .data import class_weights
        from .model import model_parts

        weights = class_weights(recipe, root) if root is not None else None
        return model_parts(recipe, body, n_features, dls.c, weights)

    def headline(self, metrics: dict) -> str:
        from .evaluate import headline

        return headline(metrics)

    # using a trained model
    def check_model(self, model, path) -> None:
        from ...core.errors import ChiquitoError

        if not hasattr(model, "dls") or not hasattr(model.dls, "vocab"):
            raise ChiquitoError(f"{path}: not an exported image classifier (no vocab)")

    def labels(self, model) -> list[str]:
        from .predict import model_vocab

        return model_vocab(model)

    def evaluate_set(self, model, name, folder, out, suffix, top_k, log, split: bool = False) -> dict:
        from .evaluate import evaluate_set

        return evaluate_set(model, name, folder, out, suffix, top_k, log, split=split)

    def predict_files(self, model, paths, bs: int = 64, workers: int = 2, threshold: float | None = None) -> list:
        from ...core.errors import ChiquitoError
        from .predict import predict_paths

        if threshold is not None:
            raise ChiquitoError("--threshold applies to detectors; a classifier answers with its most likely class")
        return predict_paths(model, paths, bs=bs, workers=workers)

    def draw_files(self, model, results, folder) -> int:
        from ...core.errors import ChiquitoError

        raise ChiquitoError("--draw applies to detectors: a classifier has no boxes to draw")

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        from .predict import face_step, model_probabilities, model_vocab

        step, face = face_step(model), {}
        if step is not None:  # a model trained on face crops: the same crop first (ImageRefused: no face)
            crop, box, n = step(image)
            if box is not None:
                face = {"face": {"box": list(box), "faces_found": n}, "width": image.width, "height": image.height}
            image = crop
        vocab, probs = model_vocab(model), model_probabilities(model, [image])[0]
        k = max(range(len(probs)), key=probs.__getitem__)
        return {"label": vocab[k], "probability": probs[k], "probabilities": dict(zip(vocab, probs)), **face}

    def onnx_model(self, path, session):
        from .onnxmodel import OnnxClassifier

        return OnnxClassifier(path, session=session)

    def onnx_graph(self, learn):
        from .export import onnx_graph

        return onnx_graph(learn)

    def onnx_metadata(self, learn) -> dict:
        from .export import onnx_metadata

        return onnx_metadata(learn)

    def lite_model(self, path, session):
        from .onnxmodel import LiteClassifier

        return LiteClassifier(path, session)

    def input_spec(self, learn) -> dict:
        from .predict import preprocess_spec

        s = preprocess_spec(learn)
        return {"size_wh": s["size_wh"], "mean": s["mean"], "std": s["std"], "scale": s["scale"]}

    def parity(self, learn, exported, files, what: str) -> dict:
        from .export import parity

        return parity(learn, exported, files, what)

    def compare(self, reference, other, files) -> dict:
        from .export import compare

        return compare(reference, other, files)


TASK = Classify()
