"""Predict: load an exported model (.pkl learner, .onnx or .tflite file) and run its task's batched inference."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ChiquitoError
from ..core.onnxfile import onnx_session
from ..core.files import IMAGE_EXTS
from ..tasks import DEFAULT_TASK, get_task, task_name_problem, task_of_model

__all__ = ["PICKLE_NOTICE", "load_model", "onnx_session", "expand_paths", "predict_paths"]

PICKLE_NOTICE = ("note: {path} is a pickle (fastai's format): loading it runs any code it holds. Load only "
                 "model.pkl files you made or trust; to share a model, or serve one from someone else, use "
                 "its .onnx export (`chiquito export RUN`), which cannot run code.")


def _load_onnx(p: Path, threads: int = 0):
    """An exported .onnx file on onnxruntime (no torch), as its task's model class."""
    session = onnx_session(p, threads)
    name = session.get_modelmeta().custom_metadata_map.get("task", DEFAULT_TASK)
    if problem := task_name_problem(name):
        raise ChiquitoError(f"{p}: {problem} in its metadata; export it with this version's `chiquito export`")
    return get_task(name).onnx_model(p, session)


def _load_lite(p: Path, threads: int = 0):
    """An exported .tflite file in the LiteRT interpreter (no torch), as its task's model class."""
    from ..core.litefile import LiteSession

    session = LiteSession(p, threads)
    name = session.metadata.get("task", DEFAULT_TASK)
    if problem := task_name_problem(name):
        raise ChiquitoError(f"{p}: {problem} in its metadata; export it with this version's `chiquito export`")
    return get_task(name).lite_model(p, session)


def load_model(path: str | Path, notice=None, threads: int = 0):
    """Load an exported learner (.pkl) onto the CPU, or an exported .onnx file on onnxruntime (without
    importing torch); a clear error if it is missing or not a model. A .pkl runs code when loaded:
    `notice` (default: one line on stderr) says so every time one is loaded."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return _load_onnx(p, threads)
    if p.suffix.lower() == ".tflite":
        return _load_lite(p, threads)
    import pickle
    import warnings

    from fastai.learner import load_learner

    if not p.is_file():
        raise ChiquitoError(f"{p}: no such model file; train one with `chiquito finetune RECIPE` "
                            "(it writes runs/<name>/model.pkl)")
    if notice is None:
        import sys

        notice = lambda m: print(m, file=sys.stderr)  # noqa: E731
    notice(PICKLE_NOTICE.format(path=p))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fastai's own two-line warning says what PICKLE_NOTICE said
            learn = load_learner(p, cpu=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, AttributeError, ImportError, ValueError) as e:
        raise ChiquitoError(f"{p}: cannot load as a fastai learner ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120]}); pass a model.pkl written by `chiquito finetune`") \
            from None
    name = getattr(learn, "chiquito_task", None) or DEFAULT_TASK
    if problem := task_name_problem(name):
        raise ChiquitoError(f"{p}: {problem}; it was written by another version of chiquito_or_not")
    get_task(name).check_model(learn, p)
    learn.chiquito_model_path = str(p)  # where files that travel with the model are looked for
    return learn


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), in a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
        else:
            out.append(p)
    return out


def predict_paths(model, paths: list[Path], bs: int = 64, workers: int = 2, threshold: float | None = None) -> list:
    """The model's task's predictions for every file; a file that is not a usable image gets an error
    and the others go on. `threshold`: a detector's lowest score."""
    return task_of_model(model).predict_files(model, paths, bs=bs, workers=workers, threshold=threshold)
