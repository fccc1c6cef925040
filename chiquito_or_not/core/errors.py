"""Errors the CLI turns into one line and exit code 2."""

import struct
import zipfile

__all__ = [
    "DAMAGED_FILE",
    "ChiquitoError",
    "RecipeError",
    "SourceError",
    "DataError",
    "WeightsError",
    "RunError",
    "ExportError",
    "ImageRefused",
]


class ChiquitoError(Exception):
    """A problem the user can fix; its message says what, where and how."""


class RecipeError(ChiquitoError):
    """The recipe file is wrong: unknown key, wrong type, out of range, missing."""


class SourceError(ChiquitoError):
    """A data source could not be fetched or read."""


class DataError(ChiquitoError):
    """The data on disk cannot make a dataset (too few images, missing folders)."""


class WeightsError(ChiquitoError):
    """Pretrained weights are missing or do not match the backbone."""


class RunError(ChiquitoError):
    """A run folder is missing, incomplete or cannot be resumed."""


class ExportError(ChiquitoError):
    """An exported file does not reproduce the model."""


class ImageRefused(ChiquitoError):
    """One input cannot be answered (a model trained on face crops finds no face in it): that file's error."""


# what reading a damaged or foreign weights/checkpoint file raises (torch.load, Learner.load, a zip or pickle
# cut short): caught where such a file is read, to name the file and the fix instead of a traceback
DAMAGED_FILE = (
    OSError,
    RuntimeError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
    zipfile.BadZipFile,
)
