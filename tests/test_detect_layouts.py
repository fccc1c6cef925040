"""Boxed datasets as people get them: a VOC devkit, XML in a folder of its own, Ultralytics and Roboflow YOLO,
Roboflow COCO, the tutorial's TensorFlow CSV pair, CVAT for images 1.1 and Label Studio, each found by
format = "auto" with every box where it was drawn, and its own splits kept with split = "given"; what is
ambiguous or broken is one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chiquito_or_not.core.errors import SourceError
from chiquito_or_not.tasks.detect.box_formats import Box, write_voc

from .test_detect_data import LABELS, all_boxes, build, manifest, scene

SPLIT_OF = ["train", "train", "train", "train", "valid", "test"]


def items(n=6):
    """(stem, image, [label, x0, y0, x1, y1]) with both labels among the first four (train)."""
    out = []
    for i in range(n):
        box = (20 + 5 * i, 15 + 3 * i, 110 + 4 * i, 90 + 2 * i)
        out.append((f"img{i}", scene(box=box, seed=i), [LABELS[i % 2], *box]))
    return out


def save(path: Path, im) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=95)


def yolo_line(im, lab, x0, y0, x1, y1, ids=LABELS):
    w, h = im.size
    return f"{ids.index(lab)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"


def voc_devkit(root):
    kit = root / "VOC2012"
    for (stem, im, (lab, *b)), s in zip(items(), SPLIT_OF):
        save(kit / "JPEGImages" / f"{stem}.jpg", im)
        (kit / "Annotations").mkdir(parents=True, exist_ok=True)
        write_voc(kit / "Annotations" / f"{stem}.xml", f"{stem}.jpg", im.width, im.height, [Box(lab, *b)])
        (kit / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        with open(kit / "ImageSets" / "Main" / f"{ {'valid': 'val'}.get(s, s) }.txt", "a") as f:
            f.write(f"{stem}\n")


def voc_apart(root):
    """labelImg's "Change Save Dir": XML in a folder of its own, named otherwise, matched by <filename>."""
    for n, (stem, im, (lab, *b)) in enumerate(items()):
        save(root / "photos" / SPLIT_OF[n] / f"{stem}.jpg", im)
        (root / "xml").mkdir(exist_ok=True)
        write_voc(root / "xml" / f"label_{n:03d}.xml", f"{stem}.jpg", im.width, im.height, [Box(lab, *b)])


def yolo_ultralytics(root):
    """images/{train,val,test} mirrored by labels/…; names as a mapping; `path` of the maker's machine."""
    for (stem, im, (lab, *b)), s in zip(items(), SPLIT_OF):
        d = {"valid": "val"}.get(s, s)
        save(root / "images" / d / f"{stem}.jpg", im)
        (root / "labels" / d).mkdir(parents=True, exist_ok=True)
        (root / "labels" / d / f"{stem}.txt").write_text(yolo_line(im, lab, *b))
    (root / "data.yaml").write_text(
        "path: /home/maker/datasets/pets\ntrain: images/train\nval: images/val\ntest: images/test\n"
        "names:\n  0: cat\n  1: cup\n"
    )


def yolo_roboflow(root):
    """Roboflow's YOLO download: train/images + train/labels, data.yaml with `../train/images`."""
    for (stem, im, (lab, *b)), s in zip(items(), SPLIT_OF):
        save(root / s / "images" / f"{stem}.jpg", im)
        (root / s / "labels").mkdir(parents=True, exist_ok=True)
        (root / s / "labels" / f"{stem}.txt").write_text(yolo_line(im, lab, *b))
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnc: 2\nnames: ['cat', 'cup']\n"
    )
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")


def coco_roboflow(root):
    """Roboflow's COCO download: one _annotations.coco.json per split folder, category ids 7 and 10 (0 is
    Roboflow's supercategory), an iscrowd region and an image without annotations (a background)."""
    by_split = {}
    for (stem, im, (lab, x0, y0, x1, y1)), s in zip(items(), SPLIT_OF):
        save(root / s / f"{stem}.jpg", im)
        doc = by_split.setdefault(s, {"images": [], "annotations": [], "categories": []})
        doc["categories"] = [{"id": 0, "name": "pets"}, {"id": 7, "name": "cat"}, {"id": 10, "name": "cup"}]
        iid = len(doc["images"]) + 100
        doc["images"].append({"id": iid, "file_name": f"{stem}.jpg", "width": im.width, "height": im.height})
        bbox = [x0, y0, x1 - x0, y1 - y0]
        doc["annotations"].append(
            {"id": len(doc["annotations"]), "image_id": iid, "category_id": 7 if lab == "cat" else 10, "bbox": bbox}
        )
    crowd = by_split["train"]
    crowd["annotations"].append({"id": 99, "image_id": 100, "category_id": 7, "bbox": [1, 1, 30, 30], "iscrowd": 1})
    save(root / "train" / "empty.jpg", scene(box=(0, 0, 0, 0), seed=7))
    crowd["images"].append({"id": 200, "file_name": "empty.jpg", "width": 200, "height": 150})
    for s, doc in by_split.items():
        (root / s / "_annotations.coco.json").write_text(json.dumps(doc))


def tf_csv(root):
    """The tutorial's pair: train_labels.csv and test_labels.csv (no validation list: valid is cut from train)."""
    rows = {"train": [], "test": []}
    for (stem, im, (lab, x0, y0, x1, y1)), s in zip(items(), SPLIT_OF):
        save(root / "images" / f"{stem}.jpg", im)
        rows["test" if s == "test" else "train"].append(f"{stem}.jpg,{im.width},{im.height},{lab},{x0},{y0},{x1},{y1}")
    for s, r in rows.items():
        (root / f"{s}_labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + "\n".join(r) + "\n")


def cvat(root):
    imgs = []
    for n, ((stem, im, (lab, x0, y0, x1, y1)), s) in enumerate(zip(items(), SPLIT_OF)):
        save(root / "images" / f"{stem}.jpg", im)
        imgs.append(
            f'<image id="{n}" name="images/{stem}.jpg" width="{im.width}" height="{im.height}" subset="{s.title()}">'
            f'<box label="{lab}" occluded="0" source="manual" xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" z_order="0">'
            f'</box><polygon label="cat" points="1,1;5,5;1,5"></polygon></image>'
        )
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><name>t</name>'
        "</task></meta>" + "".join(imgs) + "</annotations>\n"
    )


def labelstudio(root):
    """Label Studio's JSON export of uploaded files (an 8-hex prefix added to each name), percentages."""
    tasks = []
    for n, (stem, im, (lab, x0, y0, x1, y1)) in enumerate(items()):
        save(root / "images" / f"{stem}.jpg", im)
        w, h = im.size
        value = {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h}
        result = {"type": "rectanglelabels", "original_width": w, "original_height": h, "value": value}
        value.update(rotation=0, rectanglelabels=[lab])
        tasks.append(
            {
                "id": n,
                "data": {"image": f"/data/upload/1/{n:08x}-{stem}.jpg"},
                "annotations": [{"was_cancelled": True, "result": []}, {"result": [result]}],
            }
        )
    (root / "project-1-at-2026.json").write_text(json.dumps(tasks))


LAYOUTS = {
    "voc": [voc_devkit, voc_apart],
    "yolo": [yolo_ultralytics, yolo_roboflow],
    "coco": [coco_roboflow],
    "csv": [tf_csv],
    "cvat": [cvat],
    "labelstudio": [labelstudio],
}
CASES = [(kind, f) for kind, fs in LAYOUTS.items() for f in fs]


def given_splits(root: Path) -> dict[str, str]:
    """source file name -> split, from split.csv and manifest.csv."""
    with open(root / "split.csv", newline="") as f:
        split_of = {r["sha256"]: r["split"] for r in csv.DictReader(f)}
    return {name: split_of[r["sha256"]] for name, r in manifest(root).items() if r["sha256"] in split_of}


@pytest.mark.parametrize("kind,lay", CASES, ids=[f.__name__ for _, f in CASES])
def test_auto_finds_each_layout_with_every_box_where_it_was_drawn(tmp_path, roots, kind, lay):
    lay(tmp_path / "ds")
    logged = []
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset

    from .helpers import write_recipe
    from .test_detect_data import RECIPE

    r = load_recipe(
        write_recipe(tmp_path, RECIPE.format(fmt="auto", ann="", folder=tmp_path / "ds", detect="", dataset=""))
    )
    root = build_dataset(r, log=logged.append).root
    assert any(f"6 images, {kind} annotations" in line or f"7 images, {kind} annotations" in line for line in logged), (
        logged
    )
    boxes = all_boxes(root)
    for stem, _, (lab, x0, y0, x1, y1) in items():
        [(got_lab, *bbox)] = boxes[f"{stem}.jpg"]
        assert got_lab == lab
        assert bbox == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.02), (stem, bbox)
    rows = manifest(root)
    assert all(row["status"] == "kept" for name, row in rows.items() if name.endswith(".jpg")), rows
    if kind == "coco":
        assert boxes["empty.jpg"] == []  # an image without annotations is a background image
        with open(root / "box_problems.csv", newline="") as f:
            assert [p["reason"] for p in csv.DictReader(f)] == ["crowd_box"]


GIVEN = [c for c in CASES if c[0] != "labelstudio"]  # Label Studio's export names no split


@pytest.mark.parametrize("kind,lay", GIVEN, ids=[f.__name__ for _, f in GIVEN])
def test_split_given_keeps_the_layouts_own_splits(tmp_path, roots, kind, lay):
    lay(tmp_path / "ds")
    (summary, r) = build(tmp_path, roots, tmp_path / "ds", fmt="auto", dataset='split = "given"\n')
    got = given_splits(summary.root)
    want = {f"{stem}.jpg": s for (stem, _, _), s in zip(items(), SPLIT_OF)}
    if lay is tf_csv:  # no validation list: valid is cut from the given train, test stays as given
        assert got["img5.jpg"] == "test" and sorted(got.values()).count("valid") == 2
        assert all(got[n] in ("train", "valid") for n in want if n != "img5.jpg")
        assert any("valid cut from its train" in n for n in summary.notes)
    else:
        assert {n: got[n] for n in want} == want
    assert (summary.root / "leaks.csv").read_text().splitlines() == ["kind,split_a,file_a,split_b,file_b,bits"]


def test_split_given_reports_exact_and_near_duplicates_across_splits(tmp_path, roots):
    yolo_ultralytics(tmp_path / "ds")
    ds = tmp_path / "ds"
    # the same photo in train and test (a copy), and a re-encoded one in val (a near duplicate)
    (ds / "images" / "test" / "copy0.jpg").write_bytes((ds / "images" / "train" / "img0.jpg").read_bytes())
    (ds / "labels" / "test" / "copy0.txt").write_text((ds / "labels" / "train" / "img0.txt").read_text())
    from PIL import Image

    Image.open(ds / "images" / "train" / "img1.jpg").save(ds / "images" / "val" / "near1.jpg", quality=70)
    (ds / "labels" / "val" / "near1.txt").write_text((ds / "labels" / "train" / "img1.txt").read_text())
    summary, r = build(tmp_path, roots, ds, fmt="auto", dataset='split = "given"\n')
    with open(summary.root / "leaks.csv", newline="") as f:
        leaks = list(csv.DictReader(f))
    pairs = sorted((x["kind"], Path(x["file_a"]).name, Path(x["file_b"]).name) for x in leaks)
    assert ("exact", "img0.jpg", "copy0.jpg") in pairs or ("exact", "copy0.jpg", "img0.jpg") in pairs
    assert ("near", "img1.jpg", "near1.jpg") in pairs or ("near", "near1.jpg", "img1.jpg") in pairs
    assert any("1 exact and" in n and "near-duplicate" in n for n in summary.notes), summary.notes


def test_auto_names_what_it_saw_when_it_cannot_choose(tmp_path, roots):
    voc_devkit(tmp_path / "ds")
    coco_roboflow(tmp_path / "ds" / "more")
    with pytest.raises(SourceError, match=r'format = "auto" saw several layouts: coco \(3 files.*voc \(6 files'):
        build(tmp_path, roots, tmp_path / "ds", fmt="auto")
    (tmp_path / "bare").mkdir()
    save(tmp_path / "bare" / "a.jpg", scene())
    with pytest.raises(SourceError, match="no box annotations among the source's 1 files"):
        build(tmp_path, roots, tmp_path / "bare", fmt="auto")
    # a layout named that the files are not in: one line saying what they are
    with pytest.raises(SourceError, match="format = 'voc' but none of the 7 images.*the source holds coco"):
        build(tmp_path, roots, tmp_path / "ds" / "more", fmt="voc")


@pytest.mark.parametrize(
    "yaml_text,match",
    [
        ("train: ../../elsewhere/images\nval: images/val\nnames: [cat, cup]\n", "points outside the dataset folder"),
        ("train: images/train\nval: images/nowhere\nnames: [cat, cup]\n", "'images/nowhere': no such folder"),
        ("train: images/train\nval: images/val\nnames: 7\n", "'names' must be a list of names or a mapping"),
        ("train: [images/train\nnames: [cat]\n", "not a readable YAML file"),
    ],
)
def test_a_bad_data_yaml_is_one_line(tmp_path, roots, yaml_text, match):
    yolo_ultralytics(tmp_path / "ds")
    (tmp_path / "ds" / "data.yaml").write_text(yaml_text)
    with pytest.raises(SourceError, match=match):
        build(tmp_path, roots, tmp_path / "ds", fmt="yolo")


def test_label_ids_out_of_range_and_a_file_in_the_wrong_layout_get_reasons(tmp_path, roots):
    yolo_ultralytics(tmp_path / "ds")
    (tmp_path / "ds" / "labels" / "train" / "img2.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    summary, r = build(tmp_path, roots, tmp_path / "ds", fmt="auto", detect='bad_boxes = "drop_box"\n')
    with open(summary.root / "box_problems.csv", newline="") as f:
        [p] = list(csv.DictReader(f))
    assert p["reason"] == "unknown_label" and "class id 5" in p["detail"]
    labelstudio(tmp_path / "ls")
    with pytest.raises(SourceError, match="not a COCO file"):
        build(tmp_path, roots, tmp_path / "ls", fmt="coco", ann="project-1-at-2026.json")


def test_an_unknown_xml_encoding_and_a_string_bbox_are_reasons_not_stops(tmp_path, roots):
    voc_devkit(tmp_path / "voc")
    xml = tmp_path / "voc" / "VOC2012" / "Annotations" / "img1.xml"
    xml.write_bytes(
        xml.read_bytes().replace(b"<annotation>", b'<?xml version="1.0" encoding="klingon"?>\n<annotation>', 1)
    )
    summary, _ = build(tmp_path, roots, tmp_path / "voc", fmt="auto")
    row = manifest(summary.root)["img1.jpg"]
    assert row["status"] == "rejected" and row["reason"] == "bad_annotation" and "klingon" in row["detail"], row
    assert summary.kept == 5  # the others are in the dataset
    coco_roboflow(tmp_path / "coco")
    doc_path = tmp_path / "coco" / "train" / "_annotations.coco.json"
    doc = json.loads(doc_path.read_text())
    doc["annotations"][1]["bbox"] = "2222"  # iterated, this would be the box (2, 2, 4, 4)
    doc_path.write_text(json.dumps(doc))
    summary, _ = build(tmp_path, roots, tmp_path / "coco", fmt="auto")
    row = manifest(summary.root)["img1.jpg"]  # annotation 1 is img1's
    assert row["status"] == "rejected" and row["reason"] == "bad_annotation", row
    assert "'2222'" in row["detail"] and "is not [x, y, width, height]" in row["detail"], row
    assert all(b[1:] != [2, 2, 2, 2] for boxes in all_boxes(summary.root).values() for b in boxes)
