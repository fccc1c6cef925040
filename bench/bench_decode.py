"""Decode and resize cost: images stored at split time no larger than `dataset.max_side` vs the originals.

Run: .venv/bin/python bench/bench_decode.py [RECIPE] [--reps 3]   (after `chiquito dataset RECIPE`)
Times what every epoch pays per image before the model sees it (open, decode, RGB, fastai's Resize
to the recipe's size) over the kept training images: their original files vs the stored copies.
"""

import argparse
import csv
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes/face-or-not.toml"))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from fastai.vision.all import PILImage, Resize

    from chiquito_or_not.core.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    root = ROOT / "datasets" / recipe.name
    rows = [r for r in csv.DictReader(open(root / "manifest.csv")) if r["status"] == "kept"]
    pairs = [
        (ROOT / r["raw_path"], root / "train" / r["clean_path"])
        for r in rows
        if (root / "train" / r["clean_path"]).is_file()
    ]
    resize = Resize(recipe.finetune.size)

    def load(paths):
        t = time.perf_counter()
        for p in paths:
            resize(PILImage.create(p).convert("RGB"), split_idx=1)
        return time.perf_counter() - t

    raw = min(load([a for a, _ in pairs]) for _ in range(args.reps))
    stored = min(load([b for _, b in pairs]) for _ in range(args.reps))
    px_raw = sum(PILImage.create(a).size[0] * PILImage.create(a).size[1] for a, _ in pairs) / len(pairs)
    px_st = sum(PILImage.create(b).size[0] * PILImage.create(b).size[1] for _, b in pairs) / len(pairs)
    print(f"{len(pairs)} training images of {recipe.name}, resized to {recipe.finetune.size}px, best of {args.reps}")
    print(
        f"  originals        {raw:6.2f}s per epoch  {1000 * raw / len(pairs):6.2f} ms/image  "
        f"{px_raw / 1e6:5.2f} MP on average"
    )
    print(
        f"  stored (max_side {recipe.dataset.max_side}) {stored:6.2f}s per epoch  "
        f"{1000 * stored / len(pairs):6.2f} ms/image  {px_st / 1e6:5.2f} MP on average"
    )
    print(f"gain: {raw / stored:.2f}x less decode and resize time per epoch")


if __name__ == "__main__":
    main()
