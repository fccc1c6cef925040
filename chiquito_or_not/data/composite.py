"""Composite detection images: real alpha-masked cut-outs pasted onto real full-frame photos, each with
the exact box of its pasted mask, written as JPEG + labelImg VOC XML under the data root.

Deterministic: the same cut-outs, backgrounds, parameters and seed give the same bytes. Cut-outs are
dealt into `groups` (a cut-out and its `_mirror` twin always together), and every image takes all of its
objects from one group; the XML names that group, and the split keeps a group in one split, so no
object seen in training appears in validation or test.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.boxes import areas, intersections
from ..core.errors import SourceError
from ..core.files import sha256_file
from ..core.images import DecodePolicy, decoded
from .voc import Box, write_voc

__all__ = ["Cutout", "load_cutouts", "generate_composites", "COMPOSITE_VERSION"]

COMPOSITE_VERSION = 1  # bump when the generator changes what it draws
# what a cut-out or background file may be: any still image the dataset's decoder takes, GIF included,
# at most 89 MP (PIL's own bomb limit) before it is decoded
CUTOUT_FILES = DecodePolicy(min_size=1, formats=("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"))


@dataclass
class Cutout:
    label: str
    identity: str  # the object: file stem without a `_mirror` suffix
    image: object  # RGBA, cropped to its mask
    group: int = 0


def _identity(path: Path, pattern: str = "") -> str:
    """The object a cut-out shows: its file name without a `_mirror` suffix, or the first match of
    `pattern` in it (the whole name when it does not match)."""
    name = re.sub(r"[_-]?mirror(ed)?$", "", path.stem.lower())
    m = re.search(pattern, name) if pattern else None
    return m.group(0) if m and m.group(0) else name


def load_cutouts(
    files: dict[str, list[Path]], alpha_threshold: int, min_opaque: float, log=print, identity: str = ""
) -> list[Cutout]:
    """Decode every label's PNG cut-outs; a file without real transparency (no pixel below the threshold,
    or too little above it) is not a cut-out and is skipped with a count. `identity`: see _identity."""

    out, skipped = [], 0
    for label in sorted(files):
        for p in sorted(files[label]):
            im, _ = decoded(p, CUTOUT_FILES)  # the dataset's decoder and limits: a bomb is skipped, not opened
            if im is None:
                skipped += 1
                continue
            rgba = im.convert("RGBA")
            a = np.asarray(rgba.getchannel("A"))
            mask = a >= alpha_threshold
            if mask.all() or mask.mean() < min_opaque or min(rgba.size) < 16:
                skipped += 1
                continue
            ys, xs = np.nonzero(mask)
            out.append(
                Cutout(
                    label,
                    f"{label}/{_identity(p, identity)}",
                    rgba.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)),
                )
            )
    if skipped:
        log(
            f"  composite: {skipped} file(s) skipped: not a cut-out (no transparency, under min_opaque, "
            "tiny or undecodable)"
        )
    return out


def _deal(cutouts: list[Cutout], groups: int, seed: int) -> None:
    """Assign groups: per label, objects in a seeded hash order, dealt round-robin (twins share one)."""

    def h(s: str) -> str:
        return hashlib.sha256(f"{seed}:group:{s}".encode()).hexdigest()

    for label in sorted({c.label for c in cutouts}):
        ids = sorted({c.identity for c in cutouts if c.label == label}, key=h)
        slot = {ident: k % groups for k, ident in enumerate(ids)}
        for c in cutouts:
            if c.label == label:
                c.group = slot[c.identity]


def _background(path: Path, side: int):
    from PIL import Image

    im, why = decoded(path, CUTOUT_FILES)
    if im is None:
        raise ValueError(why)
    rgb = im.convert("RGB")
    s = side / max(rgb.size)
    return rgb.resize((max(1, round(rgb.width * s)), max(1, round(rgb.height * s))), Image.Resampling.BILINEAR)


def _overlap(a, b) -> float:
    """The share of the smaller box that the two boxes have in common."""
    pair = np.asarray([a, b], dtype=np.float64)
    inter = float(intersections(pair[:1], pair[1:])[0, 0])
    return inter / float(areas(pair).min()) if inter > 0 else 0.0


def _paste(rng, bg, c, src, placed: list, limit: float | None = None):
    """Paste cut-out `c` at a random scale and place where it covers no more than `limit` (the recipe's
    max_overlap unless given) of a box in `placed` (nor they of it); its box, or None after 30 tries."""
    import numpy as np
    from PIL import Image, ImageOps

    W, H = bg.size
    for _ in range(30):
        longer = rng.uniform(*src.scale) * min(W, H)
        s = longer / max(c.image.size)
        w, h = max(4, round(c.image.width * s)), max(4, round(c.image.height * s))
        if w >= W or h >= H:
            continue
        if edge := src.edge_crop:  # a share of the object may be outside the frame
            ox, oy = int(edge * w), int(edge * h)
            x, y = rng.randrange(-ox, W - w + ox + 1), rng.randrange(-oy, H - h + oy + 1)
        else:  # the draws of composites made before edge_crop existed
            x, y = rng.randrange(0, W - w + 1), rng.randrange(0, H - h + 1)
        im = c.image.resize((w, h), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        mask = np.asarray(im.getchannel("A")) >= src.alpha_threshold
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        inside = (xs + x >= 0) & (xs + x < W) & (ys + y >= 0) & (ys + y < H)
        if inside.mean() < 1 - edge:  # more of it outside than edge_crop allows (by area)
            continue
        xs, ys = xs[inside], ys[inside]
        box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        if all(_overlap(box, b) <= (src.max_overlap if limit is None else limit) for b in placed):
            # the binary mask whose box is recorded is exactly what is pasted: no faint fringe outside it
            bg.paste(im.convert("RGB"), (x, y), Image.fromarray((mask * 255).astype(np.uint8), "L"))
            return box
    return None


def _one(i: int, src, cutouts_by_group: dict, backgrounds: list, seed: int, distractors: list = ()):
    """(image, boxes [(label, x0, y0, x1, y1)], group) for composite number i; `distractors` are pasted
    after the labelled objects, with their own random stream, only where they touch no labelled box
    (none is hidden or crowded out by one), and get no box."""
    from PIL import ImageOps

    rng = random.Random(f"{seed}:composite:{i}")
    groups = sorted(cutouts_by_group)
    g = groups[i % len(groups)]
    bg = backgrounds[rng.randrange(len(backgrounds))].copy()
    if rng.random() < 0.5:
        bg = ImageOps.mirror(bg)
    W, H = bg.size
    by_label: dict[str, list] = {}
    for c in cutouts_by_group[g]:
        by_label.setdefault(c.label, []).append(c)
    want = rng.randint(*src.per_image)
    boxes = []
    # a label first (uniformly among the group's), then one of its cut-outs: rare labels get their share
    picks = []
    for _ in range(want):
        lab = sorted(by_label)[rng.randrange(len(by_label))]
        picks.append(by_label[lab][rng.randrange(len(by_label[lab]))])
    for c in picks:
        if (box := _paste(rng, bg, c, src, [b[1:] for b in boxes])) is not None:
            boxes.append((c.label, *box))
    if distractors:  # the labelled objects are exactly where they are without distractors
        drng = random.Random(f"{seed}:distractor:{i}")
        placed = [b[1:] for b in boxes]
        for _ in range(drng.randint(*src.distractors_per_image)):
            if (box := _paste(drng, bg, distractors[drng.randrange(len(distractors))], src, placed, 0.0)) is not None:
                placed.append(box)
    return bg, boxes, f"g{g:03d}"


def _folder(src, cutout_files: dict, background_files: list[Path], out_root: Path, seed: int, distractors=()) -> Path:
    """The composites' folder, named by everything they depend on (without distractors, what it was
    before they existed)."""
    # the cut-outs and backgrounds count by their files' content; without distractors their keys are left
    # out (so the name is what it was before they existed), as are identity and edge_crop when unset
    left_out = {"objects", "backgrounds"} | (set() if distractors else {"distractors", "distractors_per_image"})
    extra = {"distractors": [sha256_file(p) for p in sorted(distractors)]} if distractors else {}
    key = json.dumps(
        extra
        | {
            "v": COMPOSITE_VERSION,
            "seed": seed,
            "src": {
                k: v
                for k, v in vars(src).items()
                if k not in left_out and not (k in ("identity", "edge_crop") and not v)
            },
            "cutouts": {lab: [sha256_file(p) for p in sorted(fs)] for lab, fs in sorted(cutout_files.items())},
            "backgrounds": [sha256_file(p) for p in sorted(background_files)],
        },
        sort_keys=True,
        default=str,
    )
    return out_root / hashlib.sha256(key.encode()).hexdigest()[:16]


def _reused(folder: Path, log) -> list | None:
    """The composites of a complete earlier run in `folder`, or None."""
    index = folder / "composites.json"
    if not index.is_file():
        return None
    rows = json.loads(index.read_text())
    if not all((folder / r["image"]).is_file() and (folder / r["xml"]).is_file() for r in rows):
        return None
    log(f"  composite: {len(rows)} images reused from {folder}")
    return [(folder / r["image"], folder / r["xml"], r["group"]) for r in rows]


def _usable_cutouts(src, cutout_files: dict, log) -> list:
    cutouts = load_cutouts(cutout_files, src.alpha_threshold, src.min_opaque, log, src.identity)
    if src.top < 1:  # e.g. a person's head and torso: a half-length picture
        for c in cutouts:
            c.image = c.image.crop((0, 0, c.image.width, max(1, round(c.image.height * src.top))))
    missing = sorted(set(src.objects) - {c.label for c in cutouts})
    if missing:
        raise SourceError(
            f"composite: no usable cut-out (PNG with transparency) for label(s) {', '.join(missing)}; "
            "check their sources' include patterns"
        )
    return cutouts


def _backgrounds(background_files: list[Path], side: int) -> list:
    backgrounds = []
    for p in sorted(background_files):
        try:
            backgrounds.append(_background(p, side))
        except (OSError, SyntaxError, ValueError):
            continue  # not an image (a thumbnail database, a sound): the backgrounds' folders hold such files
    if not backgrounds:
        raise SourceError("composite: none of the background files is a decodable image")
    return backgrounds


def generate_composites(
    src,
    cutout_files: dict[str, list[Path]],
    background_files: list[Path],
    out_root: Path,
    seed: int,
    log=print,
    distractor_files: list[Path] = (),
) -> list[tuple[Path, Path, str]]:
    """Write `src.count` composites (JPEG + VOC XML) into a folder of `out_root` named by everything they
    depend on; reuse it when complete. Returns (image, xml, group) per composite."""
    import shutil

    if not background_files:
        raise SourceError("composite: the background sources gave no files; check their include patterns")
    folder = _folder(src, cutout_files, background_files, out_root, seed, distractor_files)
    if (reused := _reused(folder, log)) is not None:
        return reused
    cutouts = _usable_cutouts(src, cutout_files, log)
    _deal(cutouts, src.groups, seed)
    by_group: dict[int, list] = {}
    for c in cutouts:
        by_group.setdefault(c.group, []).append(c)
    backgrounds = _backgrounds(background_files, src.side)
    distractors = (
        load_cutouts({"": list(distractor_files)}, src.alpha_threshold, src.min_opaque, log) if distractor_files else []
    )
    if distractor_files and not distractors:
        raise SourceError("composite: none of the distractor files is a cut-out (PNG or GIF with transparency)")
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i in range(src.count):
        im, boxes, group = _one(i, src, by_group, backgrounds, seed, distractors)
        name = f"composite-{i:05d}"
        im.save(tmp / f"{name}.jpg", "JPEG", quality=92)
        write_voc(tmp / f"{name}.xml", f"{name}.jpg", im.width, im.height, [Box(*b) for b in boxes], group)
        rows.append({"image": f"{name}.jpg", "xml": f"{name}.xml", "group": group, "boxes": len(boxes)})
    (tmp / "composites.json").write_text(json.dumps(rows) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    n_boxes = sum(r["boxes"] for r in rows)
    log(
        f"  composite: {len(rows)} images, {n_boxes} objects from {len(cutouts)} cut-outs "
        f"({len({c.identity for c in cutouts})} objects) on {len(backgrounds)} backgrounds, "
        f"{len(by_group)} groups"
        + (f", {len(distractors)} distractor cut-outs pasted without a box" if distractors else "")
        + f" -> {folder}"
    )
    return [(folder / r["image"], folder / r["xml"], r["group"]) for r in rows]
