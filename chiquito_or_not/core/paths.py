"""Where data and runs live: one data root and one runs root (Roots), resolved once by whoever starts the work
(the command line, or a stage called from Python) and passed down; nothing is created at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Roots", "npm_artifact"]


@dataclass(frozen=True)
class Roots:
    """The data root (sources' downloads and extracts, one folder per dataset) and the runs root."""

    data: Path = Path("datasets")
    runs: Path = Path("runs")

    @classmethod
    def from_env(cls, data: str | Path | None = None, runs: str | Path | None = None) -> Roots:
        """The roots given, else $CHIQUITO_DATA / $CHIQUITO_RUNS, else ./datasets and ./runs."""
        return cls(
            Path(data or os.environ.get("CHIQUITO_DATA") or "datasets"),
            Path(runs or os.environ.get("CHIQUITO_RUNS") or "runs"),
        )

    @property
    def cache(self) -> Path:
        """Downloaded artifacts (npm tarballs, .deb files, archives, feature vectors), kept to avoid repeats."""
        return self.data / ".cache"

    @property
    def raw(self) -> Path:
        """Extracted artifacts and exported package images: raw, never modified after writing."""
        return self.data / "raw"

    def dataset(self, name: str) -> Path:
        """One recipe's clean images, split folders and manifests."""
        return self.data / name

    def run(self, name: str) -> Path:
        """One recipe's run folder: recipe, plots, metrics, checkpoints and the exported model."""
        return self.runs / name

    def partial_run(self, name: str) -> Path:
        """Where a run is built (and resumed from) until it succeeds and replaces run(name)."""
        return self.runs / f"{name}.partial"


def npm_artifact(package: str, version: str) -> str:
    """An npm tarball's name under Roots.cache; without `.tgz`, its extracted folder under Roots.raw."""
    return f"npm/{package.replace('/', '-').lstrip('@')}-{version}.tgz"
