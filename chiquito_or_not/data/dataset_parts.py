"""What the dataset stage (stages/dataset.py) asks of a task, and what it returns: the stage runs one
skeleton for every task (fetch → sample → clean → split → manifest → split.csv → the split folders →
recipe.json → classes.json), and a task's DatasetParts supply only what differs."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["DatasetSummary", "DatasetParts", "SPLIT_COLUMNS", "sample_per_label"]

SPLIT_COLUMNS = ["split", "label", "file", "sha256", "group"]  # split.csv


@dataclass
class DatasetSummary:
    """What `dataset` did, for the CLI to print."""

    root: Path
    inputs: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    counts: dict = field(default_factory=dict)  # split -> label -> n
    changes: dict = field(default_factory=dict)
    unused: Counter = field(default_factory=Counter)  # kept (clean) but left out of the splits, by reason
    notes: list = field(default_factory=list)  # the task's own lines for the summary (a detector's bad boxes)
    review: dict = field(default_factory=dict)  # review.csv applied: excluded / relabelled counts, problems


class DatasetParts(Protocol):
    """One task's side of one dataset build (made by `Task.dataset_parts(recipe, folder, log, use_review)`,
    which reads every file it needs, such as review.csv, before the stage writes anything)."""

    def gather(self, retry_failed: bool) -> list:
        """Fetch the recipe's sources: the labelled inputs, sampled when `dataset.sample` asks for it."""

    def clean(self, inputs: list) -> list:
        """Decode and check every input: one record each (kept or rejected, with the reason)."""

    def split(self, records: list) -> list[dict]:
        """split.csv's rows (SPLIT_COLUMNS and `clean_path`) for the kept records, in file order; DataError
        (after writing the manifest) when the splits cannot be used."""

    def write_manifest(self, records: list) -> None:
        """manifest.csv (and the task's other per-input files)."""

    def write_split_files(self, rows: list[dict]) -> None:
        """What a split holds beside its images (a detector's annotations.json)."""

    def labels(self) -> list[str]:
        """classes.json: the dataset's classes or box labels, in the order models number them."""

    def summary(self, records: list, rows: list[dict], changes: dict) -> DatasetSummary:
        """The counts the CLI prints."""


def sample_per_label(raw: list, n: int, seed: int) -> list:
    """At most n (label, RawFile) pairs per label, the same ones on every run with this seed."""

    def rank(item):
        return hashlib.sha256(f"{seed}:{item[1].source}:{item[1].path.name}".encode()).hexdigest()

    out = []
    for label in sorted({lab for lab, _ in raw}):
        out += sorted((x for x in raw if x[0] == label), key=rank)[:n]
    return out
