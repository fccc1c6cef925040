"""Benchmark: does the face-or-not model call people photos it never trained on `face`?

Run: .venv/bin/python bench/bench_people.py MODEL [MODEL ...]   (model.pkl / .onnx; after
`chiquito dataset recipes/face-or-not.toml`, which fetches the Scratch package used here)
The held-out set, all registry photos of real people that no recipe trains on:
  - scikit-image's astronaut (half-length) and cameraman (half-length, grey);
  - OpenCV's messi5.jpg (a footballer on a pitch);
  - half-length photos: the head and torso (top 45 %) of each real-photo person cut-out of Scratch's
    Costumes/People (the drawn ones left out by name), pasted on a Scratch scene at 40-70 % of its height;
  - group photos: three of those half-length people side by side on a scene;
  - the whole standing figures on a scene (full length: faces small).
Prints, per model, how many of each kind it calls `face`.
"""

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Scratch's Costumes/People files that are photos of real people (looked at one by one; the others are
# drawn), of the 11 people that recipes/face-or-not.toml does not train on (it pastes the other 10:
# anjuli, anna, cassy, dan, jay, mako, nathan, paul, referee, thai-dancer)
PHOTOS = [
    "amon1",
    "breakdancer1",
    "calvrett-jumping",
    "calvrett-thinking",
    "calvrett",
    "chamak1",
    "chamak2",
    "ed",
    "football-stand",
    "jodi1",
    "marissa-crouching",
    "marissa-sitting",
    "marissa",
    "nina1",
    "ribbon-dancer",
    "sam",
]
SCRATCH = ("scratch", "1.4.0.6~dfsg1-6.1", "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10")
OPENCV = ("opencv-doc", "4.6.0+dfsg-12", "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a")


def people_set(seed: int = 0) -> dict[str, list]:
    """{kind: [PIL images]} of the held-out people photos."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from chiquito_or_not.core.recipe import DebSource
    from chiquito_or_not.data.sources import fetch_source

    quiet = lambda *_: None  # noqa: E731
    base = "usr/share/scratch/Media"
    costumes = {
        f.path.stem: f.path
        for f in fetch_source(
            DebSource(*SCRATCH, include=(f"{base}/Costumes/People/*.{{gif,png}}",)), "bench", log=quiet
        )
    }
    scenes = sorted(
        f.path
        for f in fetch_source(
            DebSource(*SCRATCH, include=(f"{base}/Backgrounds/{{Indoors,Nature,Outdoors}}/*.jpg",)), "bench", log=quiet
        )
    )
    messi = fetch_source(
        DebSource(*OPENCV, include=("usr/share/doc/opencv-doc/examples/data/messi5.jpg",)), "bench", log=quiet
    )[0].path
    rng = random.Random(seed)

    def cut(name: str, share: float):
        im = Image.open(costumes[name]).convert("RGBA")
        im = im.crop(im.getbbox())
        return im.crop((0, 0, im.width, max(1, int(im.height * share))))

    def on_scene(figures: list, height: float):
        bg = Image.open(rng.choice(scenes)).convert("RGB").resize((480, 360))
        slot = 480 // len(figures)
        for k, f in enumerate(figures):
            h = int(360 * height)
            w = max(1, int(f.width * h / f.height))
            f = f.resize((w, h))
            x = k * slot + max(0, (slot - w) // 2)
            bg.paste(f, (min(x, 480 - w), 360 - h), f)
        return bg

    gray = skimage.data.camera()
    out = {
        "astronaut, cameraman, messi5": [
            Image.fromarray(skimage.data.astronaut()),
            Image.fromarray(np.stack([gray] * 3, -1)),
            Image.open(messi).convert("RGB"),
        ]
    }
    names = [n for n in PHOTOS if n in costumes]
    out["half-length"] = [on_scene([cut(n, 0.45)], rng.uniform(0.4, 0.7)) for n in names]
    out["group of three"] = [on_scene([cut(n, 0.45) for n in rng.sample(names, 3)], 0.55) for _ in range(16)]
    out["full length"] = [on_scene([cut(n, 1.0)], 0.8) for n in names]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--save", default="", help="write the held-out pictures into this folder")
    a = ap.parse_args()
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.core.task_registry import task_of_model

    sets = people_set()
    if a.save:
        d = Path(a.save)
        d.mkdir(parents=True, exist_ok=True)
        for kind, ims in sets.items():
            for i, im in enumerate(ims):
                im.save(d / f"{kind.split(',')[0].replace(' ', '_')}_{i:02d}.jpg", quality=90)
    for m in a.models:
        model = load_model(m, notice=lambda *_: None)
        task = task_of_model(model)
        cells = []
        for kind, ims in sets.items():
            labels = [task.inference.predict_image(model, im)["label"] for im in ims]
            cells.append(f"{kind}: {labels.count('face')}/{len(ims)}")
        total = sum(int(c.split(": ")[1].split("/")[0]) for c in cells)
        n = sum(len(v) for v in sets.values())
        print(f"{m}: face {total}/{n}  ({'; '.join(cells)})", flush=True)


if __name__ == "__main__":
    main()
