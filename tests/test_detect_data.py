"""Detection data: the four annotation formats, every bad annotation, boxes through every geometric step of
cleaning, composites, and the split by object group. No training here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chiquito_or_not.core.images import DecodePolicy, clean_with_boxes
from chiquito_or_not.core.recipe import load_recipe
from chiquito_or_not.stages.dataset import build_dataset
from chiquito_or_not.tasks.detect.box_formats import Box, read_voc, write_voc

from .helpers import photo, write_recipe

LABELS = ["cat", "cup"]
RED = (255, 0, 0)


PHOTOS = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
]


def scene(w=200, h=150, box=(40, 30, 120, 100), seed=0) -> Image.Image:
    """A real photo as background (a different one per seed) with a pure red rectangle where `box` says
    (x0, y0, x1, y1, pixel edges)."""
    arr = np.asarray(Image.fromarray(photo(PHOTOS[seed % len(PHOTOS)])).resize((w, h))).copy()
    arr = (arr * 0.5).astype(np.uint8)  # no pure red in the background
    arr[..., 0] = np.minimum(arr[..., 0], 120)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = RED
    arr[0, 0] = (seed % 256, 0, 0)  # distinct bytes per image
    return Image.fromarray(arr)


def red_box(im: Image.Image) -> tuple[float, float, float, float]:
    a = np.asarray(im.convert("RGB")).astype(int)
    m = (a[..., 0] > 200) & (a[..., 1] < 80) & (a[..., 2] < 80)
    ys, xs = np.nonzero(m)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


RECIPE = """
task = "detect"
seed = 3
[dataset]
min_size = 32
valid = 0.34
test = 0.0
{dataset}
[detect]
labels = ["cat", "cup"]
{detect}
[[detect.sources]]
format = "{fmt}"
annotations = "{ann}"
[detect.sources.images]
kind = "folder"
path = "{folder}"
"""


def build(tmp_path, roots, folder, fmt="voc", ann="", detect="", dataset=""):
    r = load_recipe(
        write_recipe(
            tmp_path / "recipes", RECIPE.format(fmt=fmt, ann=ann, folder=folder, detect=detect, dataset=dataset)
        )
    )
    return build_dataset(r, log=lambda *_: None), r


def manifest(root: Path) -> dict[str, dict]:
    with open(root / "manifest.csv", newline="") as f:
        return {Path(row["raw_path"]).name: row for row in csv.DictReader(f)}


def all_boxes(root: Path) -> dict[str, list]:
    """source file name -> its boxes in the dataset, from every split's COCO file."""
    out = {}
    for f in root.glob("*/annotations.json"):
        doc = json.loads(f.read_text())
        names = {c["id"]: c["name"] for c in doc["categories"]}
        for im in doc["images"]:
            out[Path(im["source"]).name] = [
                [names[a["category_id"]], *a["bbox"]] for a in doc["annotations"] if a["image_id"] == im["id"]
            ]
    return out


def images_with_boxes(folder: Path, n=6) -> list[tuple[str, Image.Image, list]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        box = (20 + 5 * i, 15 + 3 * i, 110 + 4 * i, 90 + 2 * i)
        im = scene(box=box, seed=i)
        name = f"img{i}.jpg"
        im.save(folder / name, quality=95)
        out.append((name, im, [LABELS[i % 2], *box]))
    return out


@pytest.mark.parametrize("fmt", ["voc", "csv", "coco", "yolo"])
def test_each_annotation_format_gives_the_same_boxes(tmp_path, roots, fmt):
    folder = tmp_path / "imgs"
    items = images_with_boxes(folder)
    ann = ""
    if fmt == "voc":
        for name, im, (lab, *b) in items:
            write_voc(folder / name.replace(".jpg", ".xml"), name, im.width, im.height, [Box(lab, *b)])
    elif fmt == "yolo":
        for name, im, (lab, x0, y0, x1, y1) in items:
            w, h = im.size
            (folder / name.replace(".jpg", ".txt")).write_text(
                f"{LABELS.index(lab)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"
            )
    elif fmt == "csv":
        ann = "labels.csv"
        rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"] + [
            f"{name},{im.width},{im.height},{lab},{x0},{y0},{x1},{y1}" for name, im, (lab, x0, y0, x1, y1) in items
        ]
        (folder / ann).write_text("\n".join(rows) + "\n")
    else:
        ann = "coco.json"
        doc = {
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "cup"}],
            "images": [
                {"id": i, "file_name": name, "width": im.width, "height": im.height}
                for i, (name, im, _) in enumerate(items)
            ],
            "annotations": [
                {"id": i, "image_id": i, "category_id": 7 if lab == "cat" else 9, "bbox": [x0, y0, x1 - x0, y1 - y0]}
                for i, (_, _, (lab, x0, y0, x1, y1)) in enumerate(items)
            ],
        }
        (folder / ann).write_text(json.dumps(doc))
    s, _ = build(tmp_path, roots, folder, fmt, ann)
    assert s.kept == 6 and not s.rejected
    got = all_boxes(s.root)
    for name, _, (lab, x0, y0, x1, y1) in items:
        ((glab, gx, gy, gw, gh),) = got[name]
        assert glab == lab
        assert np.allclose([gx, gy, gx + gw, gy + gh], [x0, y0, x1, y1], atol=0.01), (fmt, name)
    assert (s.root / "train" / "annotations.json").is_file() and (s.root / "valid" / "annotations.json").is_file()


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>&lol3;</filename></annotation>"""


@pytest.mark.parametrize("policy", ["drop_image", "drop_box"])
def test_bad_annotations_get_reasons_not_tracebacks(tmp_path, roots, policy):
    folder = tmp_path / "imgs"
    items = images_with_boxes(folder, n=12)
    (name0, im0, b0), (name1, im1, b1), (name2, im2, b2) = items[:3]
    w, h = im0.size

    def voc(name, boxes, size=(w, h)):
        write_voc(folder / name.replace(".jpg", ".xml"), name, *size, [Box(*b) for b in boxes])

    for name, _, b in items[6:]:
        voc(name, [b])
    voc(name0, [b0, ["cat", -30, 10, 50, 60]])  # far outside: rejected (or the box dropped)
    voc(name1, [[b1[0], -1.5, 10, 60, 70]])  # within the 2 px tolerance: clipped to 0
    voc(name2, [b2, ["cup", 50, 50, 50, 80]])  # zero width
    voc(items[3][0], [["dog", 10, 10, 60, 60]])  # a label not in the recipe
    (folder / items[4][0].replace(".jpg", ".xml")).write_bytes(BOMB)
    voc(items[5][0], [items[5][2]], size=(w + 40, h))  # the size disagrees with the image
    (folder / "lonely.xml").write_bytes(write_voc(None, "lonely.jpg", w, h, [Box("cat", 1, 1, 9, 9)]))
    Image.fromarray(photo("coffee")).resize((120, 90)).save(folder / "no_annotation.jpg")
    s, _ = build(tmp_path, roots, folder, detect=f'bad_boxes = "{policy}"')
    m = manifest(s.root)
    assert m["img4.jpg"]["reason"] == "unsafe_annotation" and m["img4.jpg"]["status"] == "rejected"
    assert m["img5.jpg"]["reason"] == "size_mismatch"
    assert m["lonely.xml"]["reason"] == "annotation_without_image"
    assert m["no_annotation.jpg"]["reason"] == "no_annotation"
    assert m["img1.jpg"]["status"] == "kept" and all_boxes(s.root)["img1.jpg"][0][1] == 0  # clipped
    with open(s.root / "box_problems.csv", newline="") as f:
        problems = {(Path(r["file"]).name, r["reason"]) for r in csv.DictReader(f)}
    assert {("img0.jpg", "box_outside_image"), ("img2.jpg", "empty_box"), ("img3.jpg", "unknown_label")} <= problems
    if policy == "drop_image":
        assert [m[f"img{i}.jpg"]["reason"] for i in (0, 2, 3)] == ["box_outside_image", "empty_box", "unknown_label"]
        assert s.rejected["box_outside_image"] == 1
    else:  # the good box stays; an image left with no box is a background image
        assert m["img0.jpg"]["status"] == "kept" and len(all_boxes(s.root)["img0.jpg"]) == 1
        assert m["img3.jpg"]["status"] == "kept" and all_boxes(s.root)["img3.jpg"] == []
    assert any(n.startswith("bad box ") and n.split()[3] == "empty_box" and n.split()[2] == "1" for n in s.notes)


def test_images_without_boxes_are_background_or_rejected(tmp_path, roots):
    folder = tmp_path / "imgs"
    items = images_with_boxes(folder, n=8)
    for name, im, b in items:
        boxes = [Box(*b)] if name != "img7.jpg" else []
        write_voc(folder / name.replace(".jpg", ".xml"), name, im.width, im.height, boxes)
    s, _ = build(tmp_path, roots, folder)
    assert manifest(s.root)["img7.jpg"]["status"] == "kept" and all_boxes(s.root)["img7.jpg"] == []
    s, _ = build(tmp_path, roots, folder, detect="background_images = false")
    assert manifest(s.root)["img7.jpg"]["reason"] == "no_boxes"


def test_voc_reader_refuses_entities_and_reads_labelimg(tmp_path):
    p = tmp_path / "a.xml"
    p.write_bytes(BOMB)
    assert read_voc(p).problem[0] == "unsafe_annotation"
    p.write_bytes(
        b"<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>x</xmax>"
        b"<ymax>4</ymax></bndbox></object></annotation>"
    )
    assert read_voc(p).problem[0] == "bad_annotation"
    p.write_bytes(
        b"<annotation><size><width>10</width><height>8</height></size><object><name>cat</name><bndbox>"
        b"<xmin>1</xmin><ymin>2</ymin><xmax>3.5</xmax><ymax>4</ymax></bndbox></object></annotation>"
    )
    a = read_voc(p)
    assert (a.width, a.height, a.boxes[0].label, a.boxes[0].x1) == (10, 8, "cat", 3.5)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("crop,max_side", [(1.0, 0), (0.8, 0), (1.0, 100), (0.7, 90)])
def test_boxes_move_with_the_pixels(tmp_path, orientation, crop, max_side):
    """A red rectangle on a real photo, stored with an EXIF orientation: after cleaning (orientation, centre
    crop, max_side), the moved box is where the red pixels are."""
    stored = scene(w=240, h=160, box=(60, 40, 150, 120))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(buf, "PNG", exif=exif.tobytes())
    spec = DecodePolicy(min_size=16, center_crop=crop, max_side=max_side)
    reason, _, im, boxes = clean_with_boxes(buf.getvalue(), spec, [[60, 40, 150, 120]])
    assert reason == ""
    assert np.allclose(boxes[0], red_box(im), atol=1.01), (orientation, crop, max_side, boxes[0], red_box(im))
    if orientation in (5, 6, 7, 8) and crop == 1.0 and not max_side:
        assert im.size == (160, 240)


def cutouts(folder: Path) -> None:
    """Real photo cut-outs with an alpha mask (an ellipse): cats from chelsea, cups from coffee."""
    from PIL import ImageDraw

    for label, name, n in (("cat", "chelsea", 6), ("cup", "coffee", 6)):
        arr = photo(name)
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = 120 + 10 * i
            y, x = (13 * i) % (arr.shape[0] - s), (29 * i) % (arr.shape[1] - s)
            im = Image.fromarray(arr[y : y + s, x : x + s]).convert("RGBA")
            mask = Image.new("L", im.size, 0)
            ImageDraw.Draw(mask).ellipse([4, 10 + i, s - 5, s - 8], fill=255)
            im.putalpha(mask)
            im.save(folder / label / f"{name}{i}.png")


COMPOSITE = """
task = "detect"
seed = 5
[dataset]
min_size = 32
valid = 8
test = 8
[detect]
labels = ["cat", "cup"]
[[detect.sources]]
format = "voc"
[detect.sources.images]
kind = "composite"
count = 40
side = 160
groups = 6
[[detect.sources.images.objects.cat.sources]]
kind = "folder"
path = "{cut}/cat"
[[detect.sources.images.objects.cup.sources]]
kind = "folder"
path = "{cut}/cup"
[[detect.sources.images.backgrounds]]
kind = "python"
images = ["brick", "grass", "gravel"]
"""


def test_composites_are_exact_deterministic_and_split_by_object(tmp_path, roots):
    cutouts(tmp_path / "cut")
    r = load_recipe(write_recipe(tmp_path / "recipes", COMPOSITE.format(cut=tmp_path / "cut")))
    s = build_dataset(r, log=lambda *_: None)
    folder = next((tmp_path / "data" / "raw" / "composite").iterdir())
    xmls = sorted(folder.glob("*.xml"))
    assert len(xmls) == 40 and s.kept == 40
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    # each box is the pasted object: inside it the image differs from the background; the XML names a group
    ann = read_voc(xmls[0])
    assert ann.group and 1 <= len(ann.boxes) <= 4
    # the same seed again, from nothing: the same bytes
    import shutil

    shutil.rmtree(tmp_path / "data")
    build_dataset(r, log=lambda *_: None)
    again = next((tmp_path / "data" / "raw" / "composite").iterdir())
    assert {p.name: p.read_bytes() for p in again.iterdir()} == first
    # no group (and so no cut-out) in two splits
    with open(s.root / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    split_of_group = {}
    for row in rows:
        assert split_of_group.setdefault(row["group"], row["split"]) == row["split"]
    assert {row["split"] for row in rows} == {"train", "valid", "test"}


def test_distractors_are_pasted_without_a_box_and_leave_plain_composites_as_they_were(tmp_path, roots):
    from chiquito_or_not.core.errors import RecipeError

    cutouts(tmp_path / "cut")
    cats_only = COMPOSITE.replace('labels = ["cat", "cup"]', 'labels = ["cat"]').replace(
        '[[detect.sources.images.objects.cup.sources]]\nkind = "folder"\npath = "{cut}/cup"\n', ""
    )
    plain = load_recipe(write_recipe(tmp_path / "recipes", cats_only.format(cut=tmp_path / "cut"), "plain.toml"))
    build_dataset(plain, log=lambda *_: None)
    (before,) = (tmp_path / "data" / "raw" / "composite").iterdir()
    with_cups = cats_only.replace("groups = 6\n", "groups = 6\ndistractors_per_image = [1, 2]\n") + (
        '[[detect.sources.images.distractors]]\nkind = "folder"\npath = "{cut}/cup"\n'
    )
    r = load_recipe(write_recipe(tmp_path / "recipes", with_cups.format(cut=tmp_path / "cut"), "cups.toml"))
    logged = []
    build_dataset(r, log=logged.append)
    assert any("6 distractor cut-outs pasted without a box" in m for m in logged), logged
    (after,) = {p for p in (tmp_path / "data" / "raw" / "composite").iterdir()} - {before}
    changed = 0
    for xml in sorted(after.glob("*.xml")):
        # a distractor never gets a box, and the labelled objects are exactly where they were without them
        assert read_voc(xml).boxes == read_voc(before / xml.name).boxes
        a = np.asarray(Image.open(xml.with_suffix(".jpg")).convert("L"), float)
        b = np.asarray(Image.open(before / xml.with_suffix(".jpg").name).convert("L"), float)
        changed += a.shape != b.shape or np.abs(a - b).mean() > 2
    assert changed >= 24  # the cups are in most pictures (40 composites; 28 here: some find no free place)
    # the plain recipe's composites are where and what they were: the same folder, reused
    build_dataset(plain, log=logged.append)
    assert any(f"reused from {before}" in m for m in logged)
    bad = with_cups.replace("distractors_per_image = [1, 2]", "distractors_per_image = [3, 1]")
    with pytest.raises(RecipeError, match="distractors_per_image' = \\[3, 1\\]: give \\[low, high\\]"):
        load_recipe(write_recipe(tmp_path / "recipes", bad.format(cut=tmp_path / "cut"), "bad.toml"))


PEOPLE = """
seed = 7
[dataset]
min_size = 32
valid = 2
balance = "weights"
[[classes.person.sources]]
kind = "composite"
count = 32
side = 160
per_image = [1, 2]
groups = 4
identity = "{identity}"
[[classes.person.sources.objects.person.sources]]
kind = "folder"
path = "{cut}"
[[classes.person.sources.backgrounds]]
kind = "python"
images = ["brick", "grass", "gravel"]
[[classes.scene.sources]]
kind = "python"
images = ["brick", "grass", "gravel", "moon", "coffee", "rocket"]
"""


def test_a_composite_class_keeps_each_object_and_its_poses_in_one_split(tmp_path, roots):
    """Classification composites: `identity` makes a person's poses one object (one group), and the split
    keeps a group in one split, so nobody seen in training is in validation."""
    from chiquito_or_not.core.errors import RecipeError
    from chiquito_or_not.data.composite import _deal, load_cutouts

    cutouts(tmp_path / "cut")
    poses = tmp_path / "people"
    poses.mkdir()
    for k, (who, pose) in enumerate((w, p) for w in ("ann", "bob", "eve", "tom") for p in (1, 2, 3)):
        src = tmp_path / "cut" / ("cat" if k % 2 else "cup") / f"{'chelsea' if k % 2 else 'coffee'}{k % 6}.png"
        (poses / f"{who}-{pose}.png").write_bytes(src.read_bytes())
    files = {"person": sorted(poses.glob("*.png"))}
    for pattern, objects in (("^[a-z]+", 4), ("", 12)):
        cs = load_cutouts(files, 128, 0.2, lambda *_: None, pattern)
        _deal(cs, 4, 7)
        assert len({c.identity for c in cs}) == objects
        if pattern:  # every person in exactly one group, one person per group
            assert {c.identity: c.group for c in cs} == {c.identity.split("-")[0]: c.group for c in cs}
            assert sorted(c.group for c in cs) == [g for g in range(4) for _ in range(3)]

    r = load_recipe(write_recipe(tmp_path / "recipes", PEOPLE.format(identity="^[a-z]+", cut=poses)))
    s = build_dataset(r, log=lambda *_: None)
    with open(s.root / "manifest.csv", newline="") as f:
        group_of = {row["sha256"]: row["group"] for row in csv.DictReader(f) if row["status"] == "kept"}
    with open(s.root / "split.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["label"] == "person"]
    assert len(rows) == 32
    splits_of_group: dict[str, set] = {}
    for row in rows:
        splits_of_group.setdefault(group_of[row["sha256"]], set()).add(row["split"])
    assert len(splits_of_group) == 4 and all(len(v) == 1 for v in splits_of_group.values())
    assert sorted(next(iter(v)) for v in splits_of_group.values()) == ["train", "train", "train", "valid"]
    with pytest.raises(RecipeError, match="'identity' = '\\(' is not a regular expression"):
        load_recipe(write_recipe(tmp_path / "recipes", PEOPLE.format(identity="(", cut=poses), "bad.toml"))


def test_a_detect_recipe_is_validated(tmp_path):
    from chiquito_or_not.core.errors import RecipeError

    base = RECIPE.format(fmt="csv", ann="", folder=tmp_path, detect="", dataset="")
    load_recipe(write_recipe(tmp_path, base))  # a csv source's file may be found among its files
    with pytest.raises(RecipeError, match="'pascal' is not allowed; use 'auto' or 'voc' or 'yolo'"):
        load_recipe(write_recipe(tmp_path, base.replace('format = "csv"', 'format = "pascal"')))
    with pytest.raises(RecipeError, match="detect.labels' is empty"):
        load_recipe(write_recipe(tmp_path, base.replace('labels = ["cat", "cup"]', "labels = []")))
    inner = "not a source kind; choose one of folder, npm, deb, archive, python, image_search, lfw$"
    with pytest.raises(RecipeError, match=inner):  # a composite's own sources cannot be composites
        load_recipe(
            write_recipe(tmp_path, COMPOSITE.format(cut=tmp_path).replace('kind = "python"', 'kind = "composite"'))
        )


def test_box_coding_and_matching_agree_with_torchvision():
    """The SSD box coding and anchor matching are written in plain tensor ops (the decoding is traced into
    the ONNX and LiteRT graphs); they give exactly what torchvision's SSD uses: BoxCoder with weights
    (10, 10, 5, 5) and SSDMatcher at IoU 0.5."""
    import torch
    from torchvision.models.detection._utils import BoxCoder, SSDMatcher
    from torchvision.ops import box_iou

    from chiquito_or_not.tasks.detect.ssd import BOX_WEIGHTS, _encode, _match, decode_boxes

    g = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(3000, 2, generator=g) * 280, torch.rand(3000, 2, generator=g) * 100 + 8
    anchors = torch.cat([xy, xy + wh], 1)
    gxy, gwh = torch.rand(40, 2, generator=g) * 250, torch.rand(40, 2, generator=g) * 60 + 10
    gt = torch.cat([gxy, gxy + gwh], 1)
    coder = BoxCoder(weights=BOX_WEIGHTS)
    assert torch.equal(_encode(gt, anchors[:40]), coder.encode_single(gt, anchors[:40]))
    deltas = torch.randn(1, 3000, 4, generator=g)
    assert torch.allclose(decode_boxes(deltas, anchors, 320)[0], coder.decode_single(deltas[0], anchors).clamp(0, 320))
    for k in (1, 5, 40):
        ours, theirs = _match(gt[:k], anchors), SSDMatcher(0.5)(box_iou(gt[:k], anchors))
        assert torch.equal(ours, theirs) and (ours >= 0).sum() >= k  # every box has an anchor
    assert (_match(gt[:0], anchors) == -1).all()


def test_without_the_detect_extra_a_detection_recipe_is_one_line_before_any_work(tmp_path, roots, monkeypatch):
    """`pip install chiquito-or-not` has no detection libraries: the dataset stage says which extra to
    install before it fetches or writes anything."""
    import importlib.util

    from chiquito_or_not.core.errors import ChiquitoError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else real(name, *a))
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            'task = "detect"\n[detect]\nlabels = ["cat"]\n[[detect.sources]]\nformat = "voc"\n'
            f'[detect.sources.images]\nkind = "folder"\npath = "{tmp_path / "nowhere"}"\n',
        )
    )
    with pytest.raises(ChiquitoError, match=r"pip install 'chiquito-or-not\[detect\]'") as e:
        build_dataset(recipe, log=lambda *_: None)
    assert "\n" not in str(e.value) and not (roots / "data").exists()


def test_detection_confusion_and_ap_by_size_count_what_they_say():
    from chiquito_or_not.tasks.detect.box_metrics import coco_map, detection_confusion

    truth = [
        [["cat", 0, 0, 20, 20], ["cup", 50, 50, 150, 150]],  # a small cat (400 px²), a large cup
        [["cat", 10, 10, 60, 60]],  # a medium cat (2500 px²), found as a cup
        [["cup", 0, 0, 40, 40]],  # missed
    ]
    dets = [
        [
            {"label": "cat", "box": [0, 0, 20, 20], "score": 0.9},
            {"label": "cup", "box": [50, 50, 150, 150], "score": 0.8},
        ],
        [
            {"label": "cup", "box": [12, 10, 60, 62], "score": 0.7},
            {"label": "cat", "box": [100, 100, 140, 140], "score": 0.6},
        ],
        [{"label": "cup", "box": [0, 0, 40, 40], "score": 0.1}],  # below the threshold
    ]
    cm = detection_confusion(dets, truth, ["cat", "cup"], threshold=0.3)
    # rows: true cat, true cup, false alarm; columns: detected cat, detected cup, missed
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 0]]
    m = coco_map([[d for d in ds if d["score"] >= 0.3] for ds in dets], truth, ["cat", "cup"])
    assert m["boxes_by_size"] == {"small": 1, "medium": 2, "large": 1}
    assert m["ap_by_size"]["small"] == 1.0 and m["ap_by_size"]["large"] == 1.0
    assert m["ap_by_size"]["medium"] < 0.5  # the medium cat was called a cup; the medium cup missed


def test_edge_crop_lets_objects_leave_the_frame_with_the_box_of_what_is_left(tmp_path, roots):
    cutouts(tmp_path / "cut")

    def edges(text: str, name: str) -> tuple[int, int]:
        build_dataset(
            load_recipe(write_recipe(tmp_path / "recipes", text.format(cut=tmp_path / "cut"), name)),
            log=lambda *_: None,
        )
        folder = max((tmp_path / "data" / "raw" / "composite").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        at_edge = total = 0
        for xml in folder.glob("*.xml"):
            ann = read_voc(xml)
            for b in ann.boxes:
                assert 0 <= b.x0 < b.x1 <= ann.width and 0 <= b.y0 < b.y1 <= ann.height
                total += 1
                at_edge += b.x0 == 0 or b.y0 == 0 or b.x1 == ann.width or b.y1 == ann.height
        return at_edge, total

    whole, n0 = edges(COMPOSITE, "whole.toml")
    cut, n1 = edges(COMPOSITE.replace("groups = 6\n", "groups = 6\nedge_crop = 0.4\n"), "cut.toml")
    assert n1 >= 0.8 * n0 and cut >= whole + 10, (whole, n0, cut, n1)  # cut at the frame, and about as many
