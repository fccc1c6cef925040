"""`kind = "urls"`: a list of a few hundred URLs of every good and bad kind, served on 127.0.0.1, through
`chiquito dataset` with the project's own downloader and with img2dataset; every URL ends as a manifest.csv
row with its reason (the same from both engines but where their HTTP clients differ), the same images are
kept and split the same way, and a rerun fetches nothing again."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time

import pytest

from chiquito_or_not.core.errors import SourceError
from chiquito_or_not.data.url_list import img2dataset_reason, read_url_list

from .helpers import subprocess_env, write_recipe
from .httpserver import Server, blocks_jpeg, jpeg_bytes, png_bytes

N_GOOD = 240
# path on the server -> the reason both engines give in manifest.csv ("" = kept)
BAD = {
    "/nothing.jpg": "http_404",
    "/always500.jpg": "http_503",
    "/html.jpg": "not_an_image",  # an HTML consent page served as image/jpeg
    "/truncated.jpg": "truncated_or_corrupt",
    "/pixel.png": "too_small",
    "/loop": "too_many_redirects",
    "/stuck.jpg": "timeout",  # answers after 10 s; the recipe waits 3
}
# the two engines' HTTP clients see these differently: (own, img2dataset)
DIFFERENT = {
    "/page.html": ("not_image_content_type", "not_an_image"),  # img2dataset keeps the body; cleaning refuses it
    "/to-ftp": ("bad_scheme", "connection_error"),  # img2dataset's urllib follows a redirect to ftp://
}
REFUSED = {  # refused by the URL guard before either engine connects
    "ftp://127.0.0.1/x.jpg": "bad_scheme",
    "file:///etc/passwd": "bad_scheme",
    "http://user:pw@127.0.0.1/a.jpg": "bad_url",
    "http://127.0.0.1:99999/a.jpg": "bad_url",
}


class ListServer(Server):
    """The misbehaving server, with the good images made up front (served at once under any load) and a
    URL that answers far past the recipe's timeout."""

    def __init__(self):
        super().__init__()
        for i in range(N_GOOD):
            self.files[f"/img/{i}.jpg"] = (blocks_jpeg(i), "image/jpeg")
        self.files["/copy.jpg"] = (blocks_jpeg(3), "image/jpeg")  # the same bytes as /img/3.jpg
        self.files["/pixel.png"] = (png_bytes(1, 1), "image/png")

    def route(self, h, path, n):
        if path == "/stuck.jpg":
            time.sleep(10)
            return h.send_body(200, jpeg_bytes(999), "image/jpeg")
        return super().route(h, path, n)


# img2dataset starts its processes by spawning, so it runs in a script of its own with a __main__ guard
I2D_SCRIPT = """import json, sys
from pathlib import Path
from chiquito_or_not.data.url_list import download_img2dataset
if __name__ == "__main__":
    urls, settings = json.loads(sys.argv[1]), json.loads(sys.argv[3])
    res = download_img2dataset(urls, Path(sys.argv[2]), log=lambda *_: None, **settings)
    print(json.dumps([[o.url, bool(o.file and o.file.is_file()), o.reason] for o in res]))
"""


def _i2d_command(urls: list[str], folder, **settings) -> list[str]:
    """A command running download_img2dataset(urls, folder, **settings) that prints [url, fetched, reason]s."""
    settings = {"distributor": "multiprocessing", "processes": 1, "threads": 2, "retries": 0} | settings
    return [sys.executable, "-c", I2D_SCRIPT, json.dumps(urls), str(folder), json.dumps(settings)]


@pytest.fixture(scope="module")
def server():
    with ListServer() as s:
        yield s


def _lists(folder, base) -> tuple[dict[str, str], dict]:
    """The URLs in two lists (a .txt for class a, a .csv for class b) and what each engine says of each."""
    urls_a = [f"{base}/img/{i}.jpg" for i in range(N_GOOD // 2)] + [base + p for p in [*BAD, *DIFFERENT]]
    urls_a += [*REFUSED, f"{base}/copy.jpg", "http://127.0.0.1:1/closed.jpg"]
    urls_b = [f"{base}/img/{i}.jpg" for i in range(N_GOOD // 2, N_GOOD)]
    (folder / "a.txt").write_text("# class a\n" + "\n".join(urls_a) + "\n\n")
    with open(folder / "b.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image_url", "caption"])
        w.writerows([i, u, f"photo, number {i}"] for i, u in enumerate(urls_b))
    expected = {u: ("", "") for u in urls_a + urls_b}
    expected |= {base + p: (r, r) for p, r in BAD.items()}
    expected |= {base + p: r for p, r in DIFFERENT.items()}
    expected |= {u: (r, r) for u, r in REFUSED.items()}
    expected[f"{base}/copy.jpg"] = ("exact_duplicate", "exact_duplicate")
    expected["http://127.0.0.1:1/closed.jpg"] = ("connection_error", "connection_error")
    return expected, {"a": len(urls_a), "b": len(urls_b)}


RECIPE = """
name = "urls"
seed = 3

[dataset]
min_size = 32
valid = 0.25
balance = "none"

[[classes.a.sources]]
kind = "urls"
path = "{folder}/a.txt"
engine = "{engine}"
timeout = 3
retries = 0

[[classes.b.sources]]
kind = "urls"
path = "{folder}/b.csv"
column = "image_url"
engine = "{engine}"
threads = 16
"""


def _dataset(recipe, data) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "chiquito_or_not", "dataset", str(recipe)]
    env = subprocess_env(CHIQUITO_DATA=str(data), NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)


def _manifest(data) -> dict[str, dict]:
    with open(data / "urls" / "manifest.csv", newline="") as fh:
        return {row["source"].removeprefix("url:"): row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def both(server, tmp_path_factory):
    """Each engine's dataset from the same lists: (expected reasons, counts, {engine: (data root, run)})."""
    folder = tmp_path_factory.mktemp("lists")
    expected, counts = _lists(folder, server.base)
    out = {}
    for engine in ("own", "img2dataset"):
        data = folder / f"data-{engine}"
        recipe = write_recipe(folder, RECIPE.format(folder=folder, engine=engine), f"{engine}.toml")
        before = sum(server.hits.values())
        r = _dataset(recipe, data)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        out[engine] = (data, recipe, r, sum(server.hits.values()) - before)
    return expected, counts, out


@pytest.mark.parametrize("engine", ["own", "img2dataset"])
def test_every_url_is_a_manifest_row_with_its_reason(both, engine):
    expected, counts, runs = both
    data, _, r, _ = runs[engine]
    rows = _manifest(data)
    assert len(rows) == sum(counts.values()) == len(expected) > 250
    col = 0 if engine == "own" else 1
    got = {u: row["reason"] for u, row in rows.items()}
    assert got == {u: e[col] for u, e in expected.items()}
    for u, row in rows.items():
        assert row["status"] == ("kept" if not expected[u][col] else "rejected"), (u, row)
        if expected[u][col] not in ("", "exact_duplicate"):
            assert row["detail"] and "\n" not in row["detail"], row
    kept = [row for row in rows.values() if row["status"] == "kept"]
    assert len(kept) == N_GOOD
    assert {row["label"] for row in kept if "/img/" in row["source"]} == {"a", "b"}
    assert f"{len(kept)} kept" in r.stdout
    if engine == "own":  # the stall, the 503 and the closed port may pass: the summary says how to retry them
        assert "download 3 failed for reasons that may pass" in r.stdout and "--retry-failed" in r.stdout


def test_both_engines_keep_the_same_images_and_split_them_the_same_way(both):
    _, _, runs = both
    own, i2d = (runs[e][0] / "urls" for e in ("own", "img2dataset"))
    kept = {
        e: {(row["label"], row["sha256"]) for row in _manifest(d.parent).values() if row["status"] == "kept"}
        for e, d in (("own", own), ("img2dataset", i2d))
    }
    assert kept["own"] == kept["img2dataset"] and len(kept["own"]) == N_GOOD
    assert (own / "split.csv").read_bytes() == (i2d / "split.csv").read_bytes()


@pytest.mark.parametrize("engine", ["own", "img2dataset"])
def test_a_rerun_fetches_nothing_again(both, server, engine):
    _, _, runs = both
    data, recipe, _, first_hits = runs[engine]
    assert first_hits >= N_GOOD  # every good image was fetched once, the first time
    split = (data / "urls" / "split.csv").read_bytes()
    before = sum(server.hits.values())
    r = _dataset(recipe, data)
    assert r.returncode == 0, r.stderr[-3000:]
    # the own engine journals every outcome: no request at all. img2dataset resumes by finished shard: no
    # URL of a finished shard is asked for again (the refused URLs never reach it)
    assert sum(server.hits.values()) == before
    assert (data / "urls" / "split.csv").read_bytes() == split


def test_img2dataset_error_messages_map_to_the_projects_reasons():
    cases = {
        "HTTP Error 404: Not Found": "http_404",
        "HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.": (
            "too_many_redirects"
        ),
        "<urlopen error timed out>": "timeout",
        "timed out": "timeout",
        "<urlopen error [Errno 111] Connection refused>": "connection_error",
        "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed>": "tls_error",
        "something else entirely": "download_failed",
    }
    assert {m: img2dataset_reason(m) for m in cases} == cases


def test_lists_in_every_format_read_the_same_urls(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    urls = [f"http://example.com/{i}.jpg" for i in range(5)]
    (tmp_path / "l.txt").write_text("# comment\n" + "\n".join(urls + urls[:2]) + "\n\n")
    (tmp_path / "l.csv").write_text("\ufeffurl,x\n" + "\n".join(f'{u},"a, b"' for u in urls) + "\n")  # Excel's BOM
    (tmp_path / "l.tsv").write_text("x\tlink\n" + "\n".join(f"1\t{u}" for u in urls) + "\n")
    pq.write_table(pa.table({"url": urls + [None]}), tmp_path / "l.parquet")
    assert read_url_list(tmp_path / "l.txt", "url", "w") == urls  # comments, blanks and repeats dropped
    assert read_url_list(tmp_path / "l.csv", "url", "w") == urls
    assert read_url_list(tmp_path / "l.tsv", "link", "w") == urls
    assert read_url_list(tmp_path / "l.parquet", "url", "w") == urls


@pytest.mark.parametrize(
    "name, body, column, words",
    [
        ("l.json", "[]", "url", "not a URL list"),
        ("missing.txt", None, "url", "does not exist"),
        ("l.csv", "id,link\n1,http://x/a.jpg\n", "url", "no column 'url' (its header: id, link)"),
        ("l.txt", "# nothing\n\n", "url", "lists no URL"),
        ("l.parquet", "not parquet", "url", "not a readable parquet file"),
        ("l.csv", "url\n" + "x" * 1_100_000 + "\n", "url", "after line 1: not a readable list (field larger than"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_fix(tmp_path, name, body, column, words):
    if body is not None:
        (tmp_path / name).write_text(body)
    with pytest.raises(SourceError, match=re.escape(words)) as e:
        read_url_list(tmp_path / name, column, "r.toml: classes.a.sources[0]")
    assert "\n" not in str(e.value)


def test_a_bad_list_stops_the_command_in_one_line_before_any_download(tmp_path, server):
    recipe = write_recipe(tmp_path, RECIPE.format(folder=tmp_path, engine="own"))
    (tmp_path / "a.txt").write_text(f"{server.base}/img/1.jpg\n")
    (tmp_path / "b.csv").write_text("id,url\n1,http://x/a.jpg\n")  # no image_url column
    before = sum(server.hits.values())
    r = _dataset(recipe, tmp_path / "data")
    assert r.returncode == 2
    assert "no column 'image_url'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sum(server.hits.values()) - before <= 1  # class a's one URL at most; nothing of class b
    assert not (tmp_path / "data" / "urls").exists()  # no dataset written


@pytest.mark.slow
def test_img2dataset_through_its_ray_distributor_gives_the_same_outcomes(server, tmp_path):
    """img2dataset's Ray distributor (a local Ray instance here; RAY_ADDRESS names a cluster)."""
    pytest.importorskip("ray", reason="needs the ray extra")
    urls = [f"{server.base}/img/{i}.jpg" for i in range(12)] + [server.base + "/nothing.jpg", "ftp://h/x.jpg"]
    env = subprocess_env(NO_ALBUMENTATIONS_UPDATE="1", RAY_AUTH_MODE="disabled")
    cmd = _i2d_command(urls, tmp_path / "out", distributor="ray", processes=2, threads=4, timeout=5)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [g[0] for g in got] == urls
    assert all(g[1] and g[2] == "" for g in got[:12])
    assert got[12][1:] == [False, "http_404"] and got[13][1:] == [False, "bad_scheme"]


def test_a_detection_recipe_with_a_url_list_is_refused_in_one_line(roots):
    """Content-named downloads cannot be named by an annotation file: the recipe says what to do instead."""
    from chiquito_or_not.core.errors import ChiquitoError
    from chiquito_or_not.core.recipe import load_recipe

    (roots / "l.txt").write_text("http://127.0.0.1:1/a.jpg\n")
    text = (
        'name = "boxes"\ntask = "detect"\n[detect]\nlabels = ["cat"]\n[[detect.sources]]\nformat = "voc"\n'
        f'[detect.sources.images]\nkind = "urls"\npath = "{roots / "l.txt"}"\n'
    )
    with pytest.raises(ChiquitoError, match="a URL list has no boxes") as e:
        load_recipe(write_recipe(roots, text))  # refused as the recipe is read, before any stage starts
    assert "\n" not in str(e.value) and "chiquito label" in str(e.value)
    assert not (roots / "data").exists()


def test_img2dataset_failing_is_one_line_naming_the_cause(tmp_path):
    """img2dataset stopping (here its output folder is a file) is one line, not its traceback."""
    (tmp_path / "img2dataset").write_text("a file where its folder goes")
    cmd = _i2d_command(["http://127.0.0.1:1/a.jpg"], tmp_path, timeout=2)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("chiquito_or_not.core.errors.SourceError: img2dataset stopped: [Errno 20] Not a directory")
    assert "run `chiquito dataset` again" in last


def test_img2dataset_killed_mid_list_resumes_by_finished_shard(tmp_path):
    """A real kill (SIGKILL to img2dataset's whole process group) after its first shards are finished: the
    rerun asks for none of their URLs again, and every URL ends with its outcome."""
    import os
    import signal

    with ListServer() as slow:
        slow.latency = 0.15
        urls = [f"{slow.base}/img/{i}.jpg" for i in range(60)]
        cmd = _i2d_command(urls, tmp_path / "out", timeout=10, shard_size=10)
        env = subprocess_env(NO_ALBUMENTATIONS_UPDATE="1")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        stats = tmp_path / "out" / "img2dataset"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(stats.glob("*_stats.json"))) < 2 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "img2dataset finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = sorted(int(p.name.split("_")[0]) for p in stats.glob("*_stats.json"))
        assert 2 <= len(finished) < 6
        first_hits = dict(slow.hits)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
        assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [g[0] for g in got] == urls and all(g[1] and g[2] == "" for g in got)
    for shard in finished:  # the URLs of a finished shard were requested once, by the killed run
        for u in urls[shard * 10 : shard * 10 + 10]:
            path = u.removeprefix(slow.base)
            assert first_hits.get(path) == slow.hits[path] == 1, (u, first_hits.get(path), slow.hits[path])
