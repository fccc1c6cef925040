"""Loading an exported model, whatever its file, as its task's runtime model: a `.pkl` learner (a pickle:
loading it runs any code it holds), or an `.onnx` / `.tflite` file (neither imports torch).

Every format answers with the same surface (RuntimeModel), so predict, evaluate, serve, export and review
never ask which file a model came from."""

from __future__ import annotations

import pickle
import types
from functools import cached_property
from pathlib import Path

from .errors import ChiquitoError
from .face_detectors import face_step
from .litefile import LiteSession
from .onnxfile import onnx_session
from .paths import Roots
from .task_registry import DEFAULT_TASK, get_task, task_name_problem

__all__ = ["PICKLE_NOTICE", "RuntimeModel", "load_model", "MOVED_MODULES"]

PICKLE_NOTICE = (
    "note: {path} is a pickle (fastai's format): loading it runs any code it holds. Load only "
    "model.pkl files you made or trust; to share a model, or serve one from someone else, use "
    "its .onnx export (`chiquito export RUN`), which cannot run code."
)

# modules a model.pkl written by an earlier version names (a detector's layers are pickled by reference),
# and where they live now: such a file still loads
MOVED_MODULES = {
    "chiquito_or_not.tasks.detect.net": "chiquito_or_not.tasks.detect.ssd",
    "chiquito_or_not.tasks.detect.data": "chiquito_or_not.tasks.detect.box_data",
    "chiquito_or_not.tasks.detect.model": "chiquito_or_not.tasks.detect.box_head",
    "chiquito_or_not.tasks.detect.postprocess": "chiquito_or_not.tasks.detect.box_postprocess",
}


class RuntimeModel:
    """What every command uses of a loaded model: `task` (its name), `path`, `vocab` (the names it answers
    with), `faces` (the crop settings of a model trained on face crops, else None), `preprocess(image)`,
    `run(batch)` and `face_step`; `learn` is the fastai Learner of a .pkl model (None for .onnx and .tflite)."""

    task = DEFAULT_TASK
    learn = None
    faces = None
    raw = None  # the data root's raw folder, where `chiquito dataset` fetched a face detector (load_model sets it)
    path: Path
    vocab: list

    def preprocess(self, im):
        """One Pillow image → the array `run` takes for it."""
        raise NotImplementedError

    def run(self, x):
        """The model's raw outputs for a batch of preprocessed images."""
        raise NotImplementedError

    @cached_property
    def face_step(self):
        """None, or the face crop (core.face_detectors.face_step) a model trained on crops needs first."""
        if not self.faces:
            return None

        return face_step(self.faces, self.path.parent, self.raw)


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return super().find_class(MOVED_MODULES.get(module, module), name)


_PICKLE = types.SimpleNamespace(Unpickler=_RenamingUnpickler, load=pickle.load, loads=pickle.loads, __name__="pickle")


def _task_named(name, p: Path, fix: str = " in its metadata; export it with this version's `chiquito export`"):
    """The task a model file names, or a one-line error saying what to do about the file."""
    if problem := task_name_problem(name):
        raise ChiquitoError(f"{p}: {problem}{fix}")
    return get_task(name)


def _load_pickle(p: Path, notice):
    import warnings

    from fastai.learner import load_learner

    if not p.is_file():
        raise ChiquitoError(
            f"{p}: no such model file; train one with `chiquito finetune RECIPE` (it writes runs/<name>/model.pkl)"
        )
    if notice is None:
        import sys

        def notice(m):
            print(m, file=sys.stderr)

    notice(PICKLE_NOTICE.format(path=p))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fastai's own two-line warning says what PICKLE_NOTICE said
            return load_learner(p, cpu=True, pickle_module=_PICKLE)
    except (pickle.UnpicklingError, EOFError, RuntimeError, AttributeError, ImportError, ValueError) as e:
        raise ChiquitoError(
            f"{p}: cannot load as a fastai learner ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120]}); pass a model.pkl written by `chiquito finetune`"
        ) from None


def load_model(path: str | Path, notice=None, threads: int = 0, roots: Roots | None = None) -> RuntimeModel:
    """The model in `path` as its task's RuntimeModel: a .pkl learner on the CPU, an .onnx file on
    onnxruntime, a .tflite file in LiteRT; a one-line error if it is missing or not a model. A .pkl runs
    code when loaded: `notice` (default: one line on stderr) says so every time one is loaded. A model
    trained on face crops finds its face detector beside it, or where `chiquito dataset` fetched it under
    `roots` (default Roots.from_env())."""
    model = _load(Path(path), notice, threads)
    model.raw = (roots or Roots.from_env()).raw
    return model


def _load(p: Path, notice, threads: int) -> RuntimeModel:
    if p.suffix.lower() == ".onnx":
        session = onnx_session(p, threads)
        task = _task_named(session.get_modelmeta().custom_metadata_map.get("task", DEFAULT_TASK), p)
        return task.inference.onnx_model(p, session)
    if p.suffix.lower() == ".tflite":
        session = LiteSession(p, threads)
        return _task_named(session.metadata.get("task", DEFAULT_TASK), p).inference.lite_model(p, session)
    learn = _load_pickle(p, notice)
    task = _task_named(
        getattr(learn, "chiquito_task", None) or DEFAULT_TASK,
        p,
        "; it was written by another version of chiquito_or_not",
    )
    task.inference.check_model(learn, p)
    return task.inference.learner_model(learn, p)
