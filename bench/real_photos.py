"""Benchmark: a detector trained on composites, scored on real photographs no recipe trains on.

Run: .venv/bin/python bench/real_photos.py [RUN] [--out DIR] [--resamples 1000]
RUN defaults to runs/objects (`chiquito finetune recipes/objects.toml`). The photographs (12: dogs,
horses, a giraffe and a zebra, an eagle, a squirrel, a baboon, a cat, fruit, and a beach with kites and
people and no labelled object) come from pinned registry packages (Debian `darknet` and `opencv-doc`,
scikit-image); their boxes were drawn by hand here and live in bench/real_photos.json. The script
builds datasets/real-photos/ (images + a COCO annotations.json, the layout `chiquito evaluate --data`
reads), runs the run's model.pkl on it (a pickle: loading it runs code; use runs you made), and prints
mAP@0.5 and AP@0.5 per class with 95 % bootstrap intervals over images, then per label how many true
boxes were found at the recipe's score threshold, how many missed, and the false alarms. Figures and a
picture of every photo with its boxes go to DIR (default RUN/real-photos/).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "bench" / "real_photos.json"


def fetch_photos(dest: Path, log=print) -> tuple[list[Path], list[list]]:
    """Copy the photographs named in real_photos.json into `dest` and write its annotations.json."""
    from PIL import Image

    from chiquito_or_not.core.recipe import DebSource, PythonSource
    from chiquito_or_not.data.sources import fetch_source

    spec = json.loads(SPEC.read_text())
    files = {}
    for name, s in spec["sources"].items():
        wanted = sorted({im["file"] for im in spec["images"] if im["source"] == name})
        if s["kind"] == "deb":
            src = DebSource(
                s["package"], s["version"], s["sha256"], include=tuple(f"{s['folder']}/{f}" for f in wanted)
            )
            for raw in fetch_source(src, f"real photos: {name}", log=log):
                files[(name, raw.path.name)] = raw.path
        else:
            for raw in fetch_source(PythonSource(images=tuple(wanted)), f"real photos: {name}", log=log):
                files[(name, raw.path.stem)] = raw.path
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    labels = spec["labels"]
    doc = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)]}
    paths, truth = [], []
    for i, im in enumerate(spec["images"], start=1):
        src = files.get((im["source"], im["file"]))
        if src is None:
            raise SystemExit(f"{SPEC}: {im['source']} has no {im['file']}")
        out = tmp / (Path(im["file"]).stem + src.suffix)
        shutil.copyfile(src, out)
        with Image.open(out) as pic:
            w, h = pic.size
        doc["images"].append({"id": i, "file_name": out.name, "width": w, "height": h})
        for lab, x0, y0, x1, y1 in im["boxes"]:
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise SystemExit(f"{SPEC}: {im['file']}: box {[x0, y0, x1, y1]} is not inside {w}x{h}")
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": i,
                    "category_id": labels.index(lab) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        paths.append(dest / out.name)
        truth.append([list(b) for b in im["boxes"]])
    (tmp / "annotations.json").write_text(json.dumps(doc, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return paths, truth


def bootstrap(dets, truth, labels, resamples: int, seed: int = 0) -> dict:
    """95 % percentile intervals of mAP@0.5 and each label's AP@0.5, resampling images with replacement."""
    from chiquito_or_not.tasks.detect.box_metrics import coco_map

    rng = np.random.default_rng(seed)
    n, vals = len(dets), {"map_50": [], **{lab: [] for lab in labels}}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        m = coco_map([dets[i] for i in idx], [truth[i] for i in idx], labels)
        vals["map_50"].append(m["map_50"])
        for lab in labels:
            v = m["ap50_per_class"].get(lab)
            if v is not None:
                vals[lab].append(v)
    return {
        k: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
        for k, v in vals.items()
        if v
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="runs/objects", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--resamples", type=int, default=1000)
    a = ap.parse_args()

    from PIL import Image

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.core.paths import Roots
    from chiquito_or_not.tasks.detect.box_inference import draw_boxes, predict_paths
    from chiquito_or_not.tasks.detect.box_metrics import coco_map, detection_confusion

    out = a.out or a.run / "real-photos"
    out.mkdir(parents=True, exist_ok=True)
    paths, truth = fetch_photos(Roots.from_env().dataset("real-photos"), log=lambda *_: None)
    model = load_model(a.run / "model.pkl", notice=print)  # a pickle: only runs you made
    spec = model.spec
    labels, thr = spec["labels"], spec["score_threshold"]
    if any(t[0] not in labels for ts in truth for t in ts):
        raise SystemExit(f"{a.run}: the model's labels {labels} do not include the photos' labels")
    preds = predict_paths(model, paths, threshold=spec["post"]["score_thresh"])
    dets = [p.boxes for p in preds]
    m = coco_map(dets, truth, labels)
    ci = bootstrap(dets, truth, labels, a.resamples)
    cm = detection_confusion(dets, truth, labels, thr)
    k = len(labels)
    n_boxes = sum(len(t) for t in truth)
    print(f"{a.run}: {len(paths)} real photos, {n_boxes} hand-drawn boxes")
    print(
        f"  mAP@0.5 {m['map_50']:.3f} (95% CI {ci['map_50'][0]:.3f}-{ci['map_50'][1]:.3f}, "
        f"{a.resamples} image resamples)"
    )
    for j, lab in enumerate(labels):
        ap50 = m["ap50_per_class"].get(lab)
        if ap50 is None or not cm[j].sum():
            continue
        found = int(cm[j, j])
        wrong = {labels[c]: int(cm[j, c]) for c in range(k) if c != j and cm[j, c]}
        print(
            f"  {lab}: AP@0.5 {ap50:.3f} (95% CI {ci[lab][0]:.3f}-{ci[lab][1]:.3f}); at score >= {thr:g}: "
            f"{found} of {int(cm[j].sum())} found, {int(cm[j, k])} missed"
            + (f", called {', '.join(f'{v} {n}' for n, v in wrong.items())}" if wrong else "")
        )
    fa = {labels[c]: int(cm[k, c]) for c in range(k) if cm[k, c]}
    print(f"  false alarms at score >= {thr:g}: {int(cm[k].sum())}" + (f" ({fa})" if fa else ""))
    res = {
        "run": str(a.run),
        "images": len(paths),
        "boxes": n_boxes,
        "metrics": m,
        "ci95": ci,
        "confusion": cm.tolist(),
        "rows": labels + ["false alarm"],
        "cols": labels + ["missed"],
        "score_threshold": thr,
        "detections": {p.name: d for p, d in zip(paths, dets)},
    }
    (out / "real_photos.json").write_text(json.dumps(res, indent=1) + "\n")
    tiles = []
    for p, d, t in zip(paths, dets, truth):
        with Image.open(p) as im:
            pic = draw_boxes(im.convert("RGB"), [x for x in d if x["score"] >= thr], labels, truth=t)
        pic.thumbnail((320, 320))
        tiles.append(pic)
    cols = 4
    sheet = Image.new("RGB", (cols * 320, -(-len(tiles) // cols) * 320), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * 320, (i // cols) * 320))
    sheet.save(out / "real_photos.png")
    print(f"  wrote {out / 'real_photos.json'} and {out / 'real_photos.png'}")


if __name__ == "__main__":
    main()
