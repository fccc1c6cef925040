"""Benchmark: does `chiquito review` find planted box errors in a detection dataset?

Run: .venv/bin/python bench/bench_box_review.py [RECIPE] [--share 0.05] [--seed 0] [--folds 5]
Takes a detection recipe's built dataset (default recipes/objects.toml, built first if needed: exact
boxes of pasted cut-outs), writes every image of its splits with its boxes as one COCO file, and plants
three kinds of error, each in its own images (seeded, a `share` of the images per kind): a box deleted
(an overlooked object), a box's label changed to another (a swap), a box moved by half its width and
height (badly placed). That noisy set is built with `chiquito dataset` into a temporary data root and
ranked exactly as `chiquito review` ranks it. Printed: per kind, precision and recall at k = the number
planted of that kind (the k images with the lowest score of that kind), and of cleanlab's flagged set;
overall, precision and recall of the lowest-quality images at k = all planted.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KIND_OF_PLANT = {"deleted": "overlooked", "swapped": "swap", "shifted": "badloc"}


def plant(boxes: list[list], labels: list[str], w: int, h: int, kind: str, rng: random.Random) -> list[list] | None:
    """The boxes with one error of `kind`, or None when this image cannot take it."""
    if not boxes:
        return None
    out = [list(b) for b in boxes]
    j = rng.randrange(len(out))
    if kind == "deleted":
        del out[j]
    elif kind == "swapped":
        out[j][0] = rng.choice([lab for lab in labels if lab != out[j][0]])
    else:
        x0, y0, x1, y1 = out[j][1:]
        dx, dy = 0.5 * (x1 - x0), 0.5 * (y1 - y0)
        dx = dx if x1 + dx <= w else -dx
        dy = dy if y1 + dy <= h else -dy
        if not (0 <= x0 + dx and x1 + dx <= w and 0 <= y0 + dy and y1 + dy <= h):
            return None
        out[j][1:] = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes/objects.toml"))
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    a = ap.parse_args()

    from PIL import Image

    from chiquito_or_not.core.paths import Roots
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.core.task_registry import get_task
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.tasks.detect.box_review import KINDS, suspects
    from chiquito_or_not.tasks.detect.box_splits import read_split

    recipe = load_recipe(a.recipe)
    src = Roots.from_env().dataset(recipe.name)
    if not (src / "split.csv").is_file():
        build_dataset(recipe, log=print)
    labels = list(recipe.detect.labels)
    images = []
    for split in ("train", "valid", "test"):
        if (src / split).is_dir():
            ps, bs, _ = read_split(src / split, labels)
            images += list(zip(ps, bs))
    rng = random.Random(a.seed)
    order = list(range(len(images)))
    rng.shuffle(order)
    n_kind = max(1, round(a.share * len(images)))
    planted: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="box-review-bench-"))
    try:
        (tmp / "images").mkdir()
        doc = {"images": [], "annotations": [], "categories": [{"id": i + 7, "name": n} for i, n in enumerate(labels)]}
        queue = {k: n_kind for k in KIND_OF_PLANT}
        for n, i in enumerate(order):
            path, boxes = images[i]
            with Image.open(path) as im:
                w, h = im.size
            for kind in KIND_OF_PLANT:
                if queue[kind] and (new := plant(boxes, labels, w, h, kind, rng)) is not None:
                    queue[kind] -= 1
                    planted[path.name] = kind
                    boxes = new
                    break
            shutil.copyfile(path, tmp / "images" / path.name)
            doc["images"].append({"id": n + 1, "file_name": path.name, "width": w, "height": h})
            for lab, x0, y0, x1, y1 in boxes:
                doc["annotations"].append(
                    {
                        "id": len(doc["annotations"]) + 1,
                        "image_id": n + 1,
                        "category_id": labels.index(lab) + 7,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
        (tmp / "images" / "instances.json").write_text(json.dumps(doc))
        text = tomllib.loads(Path(a.recipe).read_text())
        f = text.get("finetune", {})
        lines = [
            'task = "detect"',
            f"seed = {recipe.seed}",
            "[dataset]",
            f"min_size = {recipe.dataset.min_size}",
            "[finetune]",
            f'backbone = "{recipe.finetune.backbone}"',
            f"size = {recipe.finetune.size}",
            f"bs = {recipe.finetune.bs}",
            "[finetune.frozen]",
            f"lr = {f.get('frozen', {}).get('lr', 1e-2)!r}".replace("'", '"'),
            "[detect]",
            f"labels = {json.dumps(labels)}",
            "[[detect.sources]]",
            'format = "coco"',
            "[detect.sources.images]",
            'kind = "folder"',
            f'path = "{tmp / "images"}"',
        ]
        noisy = tmp / "noisy.toml"
        noisy.write_text("\n".join(lines) + "\n")
        os.environ["CHIQUITO_DATA"] = str(tmp / "data")
        nr = load_recipe(noisy)
        build_dataset(nr, log=lambda *_: None)
        t = time.time()
        res = suspects(get_task("detect"), nr, Roots.from_env().dataset(nr.name), folds=a.folds, log=print)
        took = time.time() - t
        items = res.items
        name = {it["sha256"]: Path(it["path"]).name for it in items}  # the file as given (planted names)
        kind_of = {it["sha256"]: planted.get(name[it["sha256"]], "") for it in items}
        n_planted = sum(1 for v in kind_of.values() if v)
        print(
            f"{len(items)} images, {sum(len(it['boxes']) for it in items)} boxes; planted {n_planted} errors "
            f"({', '.join(f'{k} {sum(1 for v in kind_of.values() if v == k)}' for k in KIND_OF_PLANT)}); "
            f"ranked in {took:.0f} s, {res.folds} folds"
        )
        for plant_kind, kind in KIND_OF_PLANT.items():
            truth = {s for s, v in kind_of.items() if v == plant_kind}
            if not truth:
                continue
            k = len(truth)
            top = sorted(items, key=lambda it: (it["kinds"][kind], it["rank"]))[:k]
            hits = sum(1 for it in top if it["sha256"] in truth)
            flagged = [it for it in items if it["issue"] and it["likely"] == kind]
            fh = sum(1 for it in flagged if it["sha256"] in truth)
            any_flag = sum(1 for it in items if it["issue"] and it["sha256"] in truth)
            print(
                f"  {plant_kind:<8} ({kind} score): precision@{k} {hits / k:.2f}, recall@{k} {hits / k:.2f}; "
                f"flagged as {kind}: {len(flagged)} ({fh} planted {plant_kind}); flagged at all: {any_flag}/{k}"
            )
        every = {s for s, v in kind_of.items() if v}
        top = items[:n_planted]
        hits = sum(1 for it in top if it["sha256"] in every)
        flagged = [it for it in items if it["issue"]]
        fh = sum(1 for it in flagged if it["sha256"] in every)
        print(
            f"  overall (review order): precision@{n_planted} {hits / n_planted:.2f}, recall@{n_planted} "
            f"{hits / n_planted:.2f}; cleanlab flagged {len(flagged)}: precision {fh / max(1, len(flagged)):.2f}, "
            f"recall {fh / n_planted:.2f}"
        )
        assert set(KINDS) == set(KIND_OF_PLANT.values())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
