"""Run folders: a run is built beside the previous one and replaces it only when it has succeeded; an
interrupted run is resumed from its own folder, after checking what it left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..core.errors import RunError
from ..core.layout import RunFolder

__all__ = ["STAGES", "promote", "read_json", "resumable_state", "refuse_files_in_place"]

STAGES = ("frozen", "augmented", "unfrozen")  # the stage names, in order (finetune.SCHEDULE runs them)


def refuse_files_in_place(*folders: Path) -> None:
    """RunError when one of these run folders is a file (checked before any training: a run would fail
    only at its end, when it is promoted)."""
    for p in folders:
        if p.exists() and not p.is_dir():
            raise RunError(f"{p} is a file, not a run folder; move it away and run again")


def promote(work: Path, final: Path) -> None:
    """Replace the previous run folder by the finished one in two renames; until then the previous run,
    its model.pkl included, is untouched."""
    old = final.with_name(f".{final.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        for kept in RunFolder(final).kept_across_runs():  # compare's and sweep's files
            if kept.is_file() and not (work / kept.name).exists():
                shutil.copy2(kept, work / kept.name)
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def resumable_state(work: Path, final: Path, fingerprint: str) -> dict:
    """The interrupted run's state.json, checked; a one-line RunError when there is none or it is damaged."""
    path = RunFolder(work).state
    if not path.exists():
        done = read_json(RunFolder(final).state)
        if done and RunFolder(final).model.is_file():
            raise RunError(
                f"{final} is a finished run and nothing was interrupted since; run without --resume to train again"
            )
        raise RunError(f"{work}: nothing to resume (no interrupted run); run without --resume")
    saved = read_json(path)
    if (
        saved is None
        or not isinstance(saved.get("done"), list)
        or not set(saved["done"]) <= set(STAGES)
        or not isinstance(saved.get("timings"), dict)
        or not isinstance(saved.get("dataset"), str)
    ):
        raise RunError(
            f"{path} is damaged (not the state a run writes); run without --resume to start over "
            f"(the previous finished run in {final} is kept until the new one succeeds)"
        )
    if saved.get("fingerprint") != fingerprint:
        raise RunError(f"{work}: the recipe changed since this run started; run without --resume to start over")
    return saved
