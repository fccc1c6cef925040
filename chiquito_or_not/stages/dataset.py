"""The dataset stage: sources → raw → clean → train/valid/test folders, with manifests, for every task.

One skeleton for every task: its DatasetParts (data.dataset_parts) fetch, label and sample the inputs,
clean them and split them; this stage then writes manifest.csv, split.csv, the split folders, recipe.json
and classes.json, in that order."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import atomic_write_text, write_csv
from ..core.layout import DatasetFolder
from ..core.paths import Roots
from ..core.recipe import Recipe, write_resolved
from ..core.task_registry import get_task
from ..data.dataset_parts import SPLIT_COLUMNS, DatasetSummary
from ..data.split import materialize

__all__ = ["dataset_lines", "build_dataset"]


def build_dataset(
    recipe: Recipe,
    root: Path | None = None,
    log=print,
    retry_failed: bool = False,
    use_review: bool = True,
    roots: Roots | None = None,
) -> DatasetSummary:
    """Fetch, clean and split the recipe's images into `root` (default: its folder in the data root of
    `roots`, itself by default Roots.from_env()) the way its task reads them; `retry_failed` fetches again
    the downloads that failed for reasons that may pass; `use_review` applies the decisions in
    `root/review.csv` (chiquito review)."""
    roots = roots or Roots.from_env()
    root = Path(root) if root else roots.dataset(recipe.name)
    folder = DatasetFolder(root)
    parts = get_task(recipe.task).data.dataset_parts(recipe, folder, roots, log, use_review)
    records = parts.clean(parts.gather(retry_failed))
    rows = parts.split(records)
    parts.write_manifest(records)
    write_csv(folder.split_csv, rows, SPLIT_COLUMNS)
    changes = materialize(rows, folder.clean, root)
    parts.write_split_files(rows)
    write_resolved(recipe, root)
    atomic_write_text(folder.classes, json.dumps(parts.labels()) + "\n")
    return parts.summary(records, rows, changes)


def dataset_lines(s: DatasetSummary) -> list[str]:
    """What `chiquito dataset` says of a build: review decisions, kept and rejected counts with reasons,
    notes, the splits' counts per label, and what was written."""
    out = []
    if s.review:
        out.append(
            f"  review.csv: {s.review['excluded']} excluded, {s.review['relabelled']} relabelled "
            "(--no-review ignores it)"
        )
        out += [f"  review.csv: ignored {p}" for p in s.review["problems"]]
    used = s.kept - sum(s.unused.values())
    out.append(
        f"cleaned {s.inputs} inputs: {s.kept} kept, {s.inputs - s.kept} rejected; "
        f"{used} in the splits" + (f", {sum(s.unused.values())} left out" if s.unused else "")
    )
    out += [f"  rejected {n:>5}  {reason}" for reason, n in s.rejected.most_common()]
    out += [f"  left out {n:>5}  {reason}" for reason, n in s.unused.most_common()]
    out += [f"  {note}" for note in s.notes]
    out += [
        f"  {split:<6} " + "  ".join(f"{lab} {n}" for lab, n in sorted(counts.items()))
        for split, counts in s.counts.items()
    ]
    out.append(
        f"wrote {s.root}/{{train,valid{',test' if 'test' in s.counts else ''}}}/, manifest.csv, split.csv "
        f"({s.changes['added']} files added, {s.changes['removed']} removed)"
    )
    return out
