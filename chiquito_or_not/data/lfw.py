"""LFW negatives: fetch lfw.tgz from a mirror, verify it, extract it safely, pick one photo per person."""

from __future__ import annotations

import random
from pathlib import Path

from ..core.errors import SourceError

__all__ = ["LFW_MIRRORS", "LFW_SHA256", "LFW_SIZE", "lfw_root", "sample_one_per_person"]

# The original host (vis-www.cs.umass.edu) is dead; this is the mirror scikit-learn uses.
LFW_MIRRORS = ("https://ndownloader.figshare.com/files/5976018",)
LFW_SIZE = 180_566_744
LFW_SHA256 = "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"


def lfw_root(folder: Path) -> Path:
    """The folder whose sub-folders are people: `folder/lfw` when the archive's top folder is there."""
    inner = folder / "lfw"
    root = inner if inner.is_dir() else folder
    if not any(p.is_dir() for p in root.iterdir()):
        raise SourceError(f"{root}: no person folders; expected lfw/<Person_Name>/<Person_Name>_0001.jpg")
    return root


def sample_one_per_person(root: Path, count: int, seed: int) -> list[Path]:
    """`count` people chosen at random (seeded), one random photo of each; all people when count exceeds them."""
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(f"lfw-people:{seed}")
    chosen = sorted(rng.sample(people, min(count, len(people))))
    out = []
    for person in chosen:
        photos = sorted(p for p in person.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        if photos:
            out.append(random.Random(f"lfw-photo:{seed}:{person.name}").choice(photos))
    return out
