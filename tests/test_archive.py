"""Archive sources (the flowers recipe's kind), from a folder-per-class archive served on 127.0.0.1."""

import hashlib
import io
import tarfile

import pytest

from chiquito_or_not.core.errors import SourceError
from chiquito_or_not.core.recipe import ArchiveSource, load_recipe
from chiquito_or_not.data.sources import fetch_source
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import write_recipe
from .httpserver import Server, jpeg_bytes

CLASSES = ("daisy", "roses", "tulips")


def flowers_tgz(n: int = 10) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for c, name in enumerate(CLASSES):
            for i in range(n):
                data = jpeg_bytes(7000 + 100 * c + i)
                info = tarfile.TarInfo(f"flower_photos/{name}/{i:04d}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("flower_photos/LICENSE.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"cc"))
    return buf.getvalue()


def test_archive_download_extract_and_split(roots, tmp_path):
    body = flowers_tgz()
    sha = hashlib.sha256(body).hexdigest()
    with Server() as s:
        s.files["/flower_photos.tgz"] = (body, "application/gzip")
        text = "[dataset]\nmin_size = 32\nvalid = 2\ntest = 2\nnear_duplicate_distance = 0\ngroup_distance = 0\n"
        for name in CLASSES:
            text += (
                f'[[classes.{name}.sources]]\nkind = "archive"\nurls = ["{s.base}/gone.tgz", '
                f'"{s.base}/flower_photos.tgz"]\nsize = {len(body)}\nsha256 = "{sha}"\n'
                f'include = ["flower_photos/{name}/*.jpg"]\n'
            )
        summary = build_dataset(load_recipe(write_recipe(tmp_path, text)), log=lambda *_: None)
        assert s.hits["/flower_photos.tgz"] == 1  # downloaded once for the three classes
        assert summary.counts["test"] == {c: 2 for c in CLASSES}
        assert summary.counts["valid"] == {c: 2 for c in CLASSES} and summary.kept == 30

        with pytest.raises(
            SourceError,
            match="no mirror gave a good .*use a folder source on its extracted files, or add a mirror to 'urls'",
        ):
            fetch_source(ArchiveSource(urls=(s.base + "/flower_photos.tgz",), sha256="f" * 64), "t")


def test_a_dead_mirror_is_named_and_the_next_is_tried_through_the_proxy(roots, tmp_path):
    from .httpserver import Proxy

    body = flowers_tgz(2)
    sha = hashlib.sha256(body).hexdigest()
    with Server() as s, Proxy() as proxy:
        s.files["/flower_photos.tgz"] = (body, "application/gzip")
        src = ArchiveSource(
            urls=(s.base + "/gone.tgz", s.base + "/flower_photos.tgz"),
            sha256=sha,
            size=len(body),
            include=("flower_photos/daisy/*.jpg",),
            proxy=proxy.url,
        )
        logged = []
        files = fetch_source(src, "classes.daisy.sources[0]", log=logged.append)
        assert len(files) == 2
        # both mirrors were asked through the proxy, and the switch was said
        assert proxy.requests == [s.base + "/gone.tgz", s.base + "/flower_photos.tgz"], proxy.requests
        said = [m for m in logged if "trying mirror 2 of 2" in m]
        assert len(said) == 1 and "HTTP 404" in said[0] and "/flower_photos.tgz" in said[0], logged
