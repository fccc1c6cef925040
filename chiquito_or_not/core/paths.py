"""Where data and runs live: one data root, one runs root, nothing created at import time."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "data_root",
    "runs_root",
    "cache_dir",
    "raw_dir",
    "dataset_dir",
    "run_dir",
    "partial_run_dir",
    "npm_artifact",
]


def data_root() -> Path:
    """The data root: $CHIQUITO_DATA, else ./datasets."""
    return Path(os.environ.get("CHIQUITO_DATA", "datasets"))


def runs_root() -> Path:
    """The runs root: $CHIQUITO_RUNS, else ./runs."""
    return Path(os.environ.get("CHIQUITO_RUNS", "runs"))


def cache_dir() -> Path:
    """Downloaded artifacts (npm tarballs, .deb files), kept to avoid repeated downloads."""
    return data_root() / ".cache"


def raw_dir() -> Path:
    """Extracted artifacts and exported package images: raw, never modified after writing."""
    return data_root() / "raw"


def dataset_dir(name: str) -> Path:
    """One recipe's clean images, split folders and manifests."""
    return data_root() / name


def run_dir(name: str) -> Path:
    """One recipe's run folder: recipe, plots, metrics, checkpoints and the exported model."""
    return runs_root() / name


def partial_run_dir(name: str) -> Path:
    """Where a run is built (and resumed from) until it succeeds and replaces run_dir(name)."""
    return runs_root() / f"{name}.partial"


def npm_artifact(package: str, version: str) -> str:
    """An npm tarball's name under cache_dir(); without `.tgz`, its extracted folder under raw_dir()."""
    return f"npm/{package.replace('/', '-').lstrip('@')}-{version}.tgz"
