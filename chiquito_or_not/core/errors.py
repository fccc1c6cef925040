"""Errors the CLI turns into one line and exit code 2."""

__all__ = [
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
