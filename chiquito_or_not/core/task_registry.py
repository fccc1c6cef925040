"""The task registry: what differs between kinds of model, as a few typed roles (Task).

The stages never ask "is this classification?": they ask the recipe's task (`get_task(recipe.task)`) or
the loaded model's (`task_of_model`) for the parts below. A task is a package under tasks/ with two modules
registered here by one line in TASKS and imported by name when first asked for (this module imports nothing
of the package above core): its `TASK` (a Task of role objects: data, model, evaluation, inference, export,
and the optional capabilities review, label and draw), and its recipe section (the top-level
keys it adds to the recipe schema, the labels it answers with, and the checks the schema cannot say).
Classification (tasks/classify) is the first; detection (tasks/detect) the second.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol

__all__ = [
    "TASKS",
    "DEFAULT_TASK",
    "TaskModules",
    "Task",
    "ROLES",
    "CAPABILITIES",
    "DataRole",
    "ModelRole",
    "EvaluationRole",
    "InferenceRole",
    "ExportRole",
    "ReviewRole",
    "LabelRole",
    "DrawRole",
    "Suspects",
    "LabelItems",
    "FolderRecipe",
    "get_task",
    "task_section",
    "task_of_model",
    "task_name_problem",
]


@dataclass(frozen=True)
class TaskModules:
    """Where one task lives: the module holding its TASK, and the module holding its recipe section."""

    task: str
    recipe: str


# task name in a recipe → the modules that implement it
TASKS = {
    "classify": TaskModules("chiquito_or_not.tasks.classify.class_task", "chiquito_or_not.tasks.classify.class_recipe"),
    "detect": TaskModules("chiquito_or_not.tasks.detect.box_task", "chiquito_or_not.tasks.detect.box_recipe"),
}
DEFAULT_TASK = "classify"


@dataclass(frozen=True)
class FolderRecipe:
    """A folder of pictures read as one task's recipe (`chiquito train FOLDER`)."""

    task: str
    data: dict  # the recipe as plain data (what a TOML file would hold), before name and path
    said: list  # what was inferred, a few lines for the user


class DataRole(Protocol):
    """How a task's labels are read, checked and split, and fed to training."""

    def dataset_parts(self, recipe, folder, roots, log, use_review: bool):
        """This task's side of one dataset build into `folder` (a data.dataset_parts.DatasetParts): how the
        sources become labelled records (fetched under `roots`, a core.paths.Roots), how they are split, what
        is written per split; `use_review`: apply the dataset's review decisions."""

    def check_dataset(self, recipe, root) -> None:
        """DataError (naming `chiquito dataset`) unless `root` holds usable train and valid splits."""

    def dataloaders(self, recipe, root, augment: bool):
        """fastai DataLoaders over root's train and valid splits."""

    def memorise_dls(self, recipe, root, n_images: int) -> tuple:
        """(DataLoaders, items) for `sanity`: a few training images validated on themselves."""

    def from_folder(self, folder) -> FolderRecipe | None:
        """The recipe for a folder of pictures in this task's layouts, None when it is in none of them;
        DataError (one line) when it is one of this task's but cannot make a recipe."""


class ModelRole(Protocol):
    """What the shared Learner is built from, and how this task's model trains."""

    history_metrics: tuple[str, ...]  # the metric columns of history.csv, after the losses
    feature_cache: bool  # whether the frozen stage may train the head on cached body features
    channels_last: bool  # whether finetune trains in channels-last memory layout (faster on a CPU)

    def adapt_body(self, recipe, body):
        """The backbone's body as this task's model uses it (a detector taps two feature maps)."""

    def model_parts(self, recipe, body, n_features: int, dls, root) -> tuple:
        """(head, loss_func, metrics) for the body."""


class EvaluationRole(Protocol):
    """How a trained model is scored."""

    scores: tuple[str, ...]  # the metrics.json keys of a split that compare and sweep report, in order
    rank: tuple[str, ...]  # the keys compare ranks backbones by, best first

    def headline(self, metrics: dict) -> str:
        """One split's metrics in one line, for the command summaries."""

    def evaluate_set(self, model, name: str, folder, out, suffix: str, top_k: int, log, split: bool = False) -> dict:
        """Metrics (and the task's figures, written under `out`) on one labelled folder; `split`: one of
        the dataset's own splits, whose pictures are already what the model takes (face crops included)."""


class InferenceRole(Protocol):
    """A trained model in use, whatever its file: loading it as this task's runtime model and predicting."""

    def check_model(self, model, path) -> None:
        """ChiquitoError unless `model` (a loaded learner or ONNX model) is this task's."""

    def learner_model(self, learn, path):
        """A loaded model.pkl's Learner as this task's runtime model (core.model_loader.RuntimeModel)."""

    def onnx_model(self, path, session):
        """The task's runtime model over an opened onnxruntime session."""

    def lite_model(self, path, session):
        """The task's runtime model over an opened .tflite file (core.litefile.LiteSession)."""

    def predict_files(self, model, paths, bs: int, workers: int, threshold: float | None = None) -> list:
        """One result per path (with .error when the file is not a usable image; .to_json(top_k) and
        .lines(top_k) for the CLI); `threshold`: a detector's score threshold."""

    def predict_image(self, model, image, threshold: float | None = None) -> dict:
        """The web app's JSON payload for one decoded image."""


class ExportRole(Protocol):
    """What an exported file of this task holds, and how it is checked against the .pkl."""

    onnx_outputs: tuple[str, ...]  # the exported graph's output names

    def onnx_graph(self, model) -> tuple:
        """(module, example input): what ONNX export traces (the model with its output post-processing)."""

    def onnx_metadata(self, model) -> dict:
        """What the ONNX file must carry for a runtime without this package to use it."""

    def input_spec(self, model) -> dict:
        """The model's input: size_wh, mean, std, scale (what a phone-ready graph normalises inside)."""

    def parity(self, model, exported, files, what: str) -> dict:
        """Compare an exported file's runtime model (`what`: "ONNX", "LiteRT") with the .pkl's on `files`;
        ExportError when they disagree; the report has a one-line "summary"."""

    def compare(self, reference, other, files) -> dict:
        """How runtime model `other` (a quantised copy) differs from `reference` on `files`, with a "summary"."""


@dataclass(frozen=True)
class Suspects(ABC):
    """What a review role finds: every image of the dataset's splits, worst first, as plain data for the
    pages (one JSON-ready dict per image); each task's subclass says how it is listed."""

    root: Path  # the dataset folder
    labels: tuple[str, ...]  # the classes, or the detector's box labels
    items: list  # one dict per image, worst first
    issues: int  # how many are flagged as likely label issues
    folds: int  # the out-of-fold predictions' folds

    @abstractmethod
    def lines(self, name: str, top: list) -> list[str]:
        """`chiquito review --list`: a header and one line per image of `top`."""

    @abstractmethod
    def to_json(self, name: str, top: list) -> dict:
        """`chiquito review --list --json`: the summary and the images of `top`."""


@dataclass(frozen=True)
class LabelItems:
    """What the label page shows: images with their boxes, as plain data (one JSON-ready dict per image)."""

    root: Path  # the dataset folder, whose journal the page writes
    labels: tuple[str, ...]  # the box labels
    items: list  # one dict per image
    files: dict  # sha256 → the stored image shown
    problems: list  # the journal's lines that could not be used, said on the page


class ReviewRole(Protocol):
    """Optional: `chiquito review` ranks the dataset's images by how likely their labels are wrong."""

    def suspects(self, recipe, roots, root, run, folds: int, log) -> Suspects:
        """The dataset's images (of dataset folder `root`; caches under `roots`) worst first; `run`: a run
        folder whose model may rank them too, or None."""


class LabelRole(Protocol):
    """Optional: `chiquito label` draws and fixes boxes; a task that has it also shows its review suspects on
    the label page."""

    def items(self, recipe, roots, root, log, everything: bool) -> LabelItems:
        """The images whose boxes to draw or fix (all of them with `everything`)."""

    def suspects_page(self, suspects: Suspects, show: int) -> LabelItems:
        """This task's review suspects as the label page lists them (the first `show`)."""

    def journal(self, root):
        """The dataset's journal of drawn boxes (unopened)."""

    def check_boxes(self, boxes, labels, width: int, height: int) -> list:
        """The boxes a page sends, checked (ValueError names what is wrong)."""


class DrawRole(Protocol):
    """Optional: `predict --draw` writes each image with its answer drawn on it."""

    def draw_files(self, model, results, folder) -> int:
        """Write each predicted file with its answer drawn on it into `folder`; the number written."""


@dataclass(frozen=True)
class Task:
    """One kind of model as a few roles; a capability a task lacks is None, never a member that raises."""

    name: str
    data: DataRole
    model: ModelRole
    evaluation: EvaluationRole
    inference: InferenceRole
    export: ExportRole
    review: ReviewRole | None = None
    label: LabelRole | None = None
    draw: DrawRole | None = None


ROLES = ("data", "model", "evaluation", "inference", "export")
CAPABILITIES = ("review", "label", "draw")


def get_task(name: str) -> Task:
    """The task registered under `name` (imported on first use)."""
    if problem := task_name_problem(name):
        raise ValueError(problem)
    return import_module(TASKS[name].task).TASK


def task_section(name: str):
    """The recipe section module of task `name`: FIELDS, class_names(recipe), sources(recipe), check(recipe, where,
    foreign)."""
    return import_module(TASKS[name].recipe)


def task_name_problem(name) -> str:
    """Why `name` is not a task ("" when it is one)."""
    if isinstance(name, str) and name in TASKS:
        return ""
    return f"unknown task {name!r}; choose one of {', '.join(TASKS)}"


def task_of_model(model) -> Task:
    """The task of a loaded model (a core.model_loader.RuntimeModel)."""
    return get_task(model.task)
