"""The classify task's TASK: its parts as the roles the shared stages use (core.task_registry.Task)."""

from __future__ import annotations

from ...core.errors import ChiquitoError
from ...core.task_registry import Task
from .class_data import check_dataset, class_weights, make_dls, memorise_dls
from .class_dataset import ClassDataset
from .class_export import compare, onnx_graph, onnx_metadata, parity
from .class_folder import folder_recipe
from .class_head import model_parts
from .class_inference import LearnerClassifier, predict_paths
from .class_runtime import LiteClassifier, OnnxClassifier
from .class_suspects import suspects

__all__ = ["TASK"]


class ClassData:
    """A label is a folder: classes, their splits, DataLoaders with class weights."""

    def dataset_parts(self, recipe, folder, roots, log, use_review: bool):
        return ClassDataset(recipe, folder, roots, log, use_review)

    check_dataset = staticmethod(check_dataset)

    def dataloaders(self, recipe, root, augment: bool):
        return make_dls(recipe, augment=augment, root=root)

    memorise_dls = staticmethod(memorise_dls)
    from_folder = staticmethod(folder_recipe)


class ClassModel:
    """A classification head on the body, cross-entropy (class-weighted when the dataset asks), accuracy."""

    history_metrics = ("accuracy",)
    feature_cache = True  # the frozen stage may train the head on cached body features
    # not channels-last: faster per step (bench/bench_channels_last.py), but its backward pass is less exact
    # on a CPU (the README's "Speed on a CPU"), and a classifier trains exactly as it always has
    channels_last = False

    def adapt_body(self, recipe, body):
        return body

    def model_parts(self, recipe, body, n_features: int, dls, root) -> tuple:
        weights = class_weights(recipe, root) if root is not None else None
        return model_parts(recipe, body, n_features, dls.c, weights)


class ClassEvaluation:
    """Accuracy and balanced accuracy with their intervals, the confusion matrix, the worst mistakes."""

    scores = ("accuracy", "balanced_accuracy")
    rank = ("balanced_accuracy", "accuracy")

    def headline(self, metrics: dict) -> str:
        from .class_metrics import headline

        return headline(metrics)

    def evaluate_set(self, model, name, folder, out, suffix, top_k, log, split: bool = False) -> dict:
        from .class_metrics import evaluate_set

        return evaluate_set(model, name, folder, out, suffix, top_k, log, split=split)


class ClassInference:
    """A classifier in use: its label and probabilities for each image."""

    def check_model(self, model, path) -> None:
        if not hasattr(model, "dls") or not hasattr(model.dls, "vocab"):
            raise ChiquitoError(f"{path}: not an exported image classifier (no vocab)")

    def learner_model(self, learn, path):
        return LearnerClassifier(learn, path)

    def onnx_model(self, path, session):
        return OnnxClassifier(path, session=session)

    def lite_model(self, path, session):
        return LiteClassifier(path, session)

    def predict_files(self, model, paths, bs: int = 64, workers: int = 2, threshold: float | None = None) -> list:
        if threshold is not None:
            raise ChiquitoError("--threshold applies to detectors; a classifier answers with its most likely class")
        return predict_paths(model, paths, bs=bs, workers=workers)

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        face = {}
        if model.face_step is not None:  # a model trained on face crops: the same crop first (ImageRefused: no face)
            crop, box, n = model.face_step(image)
            if box is not None:
                face = {"face": {"box": list(box), "faces_found": n}, "width": image.width, "height": image.height}
            image = crop
        vocab, probs = model.vocab, model.probabilities([image])[0].tolist()
        k = max(range(len(probs)), key=probs.__getitem__)
        return {"label": vocab[k], "probability": probs[k], "probabilities": dict(zip(vocab, probs)), **face}


class ClassExport:
    """The exported graph answers with probabilities; parity is the top class and probabilities within bounds."""

    onnx_outputs = ("probabilities",)

    onnx_graph = staticmethod(onnx_graph)
    onnx_metadata = staticmethod(onnx_metadata)

    def input_spec(self, model) -> dict:
        s = model.spec
        return {"size_wh": s["size_wh"], "mean": s["mean"], "std": s["std"], "scale": s["scale"]}

    parity = staticmethod(parity)
    compare = staticmethod(compare)


class ClassReview:
    """Review: out-of-fold predictions on cached features ranked by cleanlab (and a run's top losses)."""

    def suspects(self, recipe, roots, root, run, folds: int, log) -> dict:
        return suspects(TASK, recipe, root, run, folds, log, cache=roots.cache)


TASK = Task(
    name="classify",
    data=ClassData(),
    model=ClassModel(),
    evaluation=ClassEvaluation(),
    inference=ClassInference(),
    export=ClassExport(),
    review=ClassReview(),
)
