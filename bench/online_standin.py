"""recipes/chiquito.toml end to end against loopback stand-ins for the web: an https results page (private
CA) listing good and bad image URLs the way Google writes them, driven through the real
google-images-download and headless Chromium; an LFW archive on a dead and a live mirror. Runs
`chiquito dataset`, presses Ctrl-C in the middle of the downloads, runs it again, then once more.

Run: .venv/bin/python bench/online_standin.py [--good 90] [--people 150] [--interrupt-after 30]
Needs Debian's chromium and chromium-driver. Prints each run's output, its time and the servers' hits.
"""

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.httpserver import Server, jpeg_bytes, tls_server_context  # noqa: E402

BAD = {  # path: what it does (the test server's routes)
    "/nothing.jpg": "404",
    "/always500.jpg": "503 after retries",
    "/slow.jpg": "3 s before answering",
    "/drip.jpg": "one byte every 0.4 s (the 60 s deadline cuts it)",
    "/loop": "redirect loop",
    "/html.jpg": "HTML served as image/jpeg",
    "/big.jpg": "image then 300 KB of zeros",
    "/page.html": "text/html",
    "/truncated.jpg": "half a JPEG",
    "/pixel.png": "1x1 PNG",
}


def lfw_archive(people: int) -> bytes:
    """A small lfw.tgz: lfw/<Person>/<Person>_000N.jpg, one to three distinct photos per person."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in range(people):
            name = f"Person_{p:04d}"
            for k in range(1 + p % 3):
                data = jpeg_bytes(50_000 + p * 10 + k, size=120)
                info = tarfile.TarInfo(f"lfw/{name}/{name}_{k + 1:04d}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run(cmd, env, interrupt_after=None, journal=None) -> tuple[int, str, float, float | None]:
    t0 = time.monotonic()
    p = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stop_s = None
    if interrupt_after:
        while p.poll() is None:
            lines = journal.read_text().count("\n") if journal.is_file() else 0
            if lines >= interrupt_after:
                t_sig = time.monotonic()
                p.send_signal(signal.SIGINT)
                p.wait()
                stop_s = time.monotonic() - t_sig
                break
            time.sleep(0.05)
    out = p.communicate()[0]
    return p.returncode, out, time.monotonic() - t0, stop_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--good", type=int, default=90)
    ap.add_argument("--people", type=int, default=150)
    ap.add_argument("--interrupt-after", type=int, default=30)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chiquito-standin-"))
    ctx, ca = tls_server_context(tmp, "127.0.0.1")
    archive = lfw_archive(a.people)
    with Server(ssl_context=ctx, latency=0.05) as images, Server(ssl_context=ctx) as pages, Server() as mirror:
        good = [f"{images.base}/img/{i}.jpg" for i in range(a.good)]
        dup = [f"{images.base}/redirect-ok"]  # serves /img/7.jpg again: a duplicate
        small = f"{images.base}/img/{a.good + 1}.jpg?w=96&h=96"
        urls = good + dup + [small] + [images.base + b for b in BAD]
        written = [u.replace("=", "\\u003d").replace("&", "\\u0026") for u in urls]
        items = ",".join(f'["{u}",96,96],{{"ru":"https://example.org/p{i}"}}' for i, u in enumerate(written))
        pages.files["/search"] = (f"<html><body><script>var d=[{items}];</script></body></html>".encode(), "text/html")
        mirror.files["/lfw.tgz"] = (archive, "application/gzip")
        text = (Path(__file__).resolve().parents[1] / "recipes" / "chiquito.toml").read_text()
        text = (
            text.replace("limit = 800", f"limit = {len(urls)}")
            .replace(
                'backend = "google"',
                f'''backend = "google"
url = "{pages.base}/search"
verify = "{ca}"
chrome = "/usr/bin/chromium"''',
            )
            .replace(
                "count = 0                # 0: as many as there are clean positives",
                f'''count = 0
mirrors = ["http://127.0.0.1:9/dead/lfw.tgz", "{mirror.base}/lfw.tgz"]
size = {len(archive)}
sha256 = "{hashlib.sha256(archive).hexdigest()}"''',
            )
        )
        recipe = tmp / "chiquito.toml"
        recipe.write_text(text)
        env = {**os.environ, "CHIQUITO_DATA": str(tmp / "data"), "CHIQUITO_RUNS": str(tmp / "runs")}
        cmd = [sys.executable, "-m", "chiquito_or_not", "dataset", str(recipe)]
        journal = (
            tmp
            / "data"
            / "raw"
            / "search"
            / f"google-chiquito-de-la-calzada-{len(urls)}"
            / "images"
            / "downloads.jsonl"
        )
        print(
            f"stand-ins: {len(urls)} candidate URLs ({a.good + 2} distinct good images, 1 duplicate, "
            f"{len(BAD)} bad: {', '.join(BAD.values())}); LFW archive of {a.people} people, "
            f"{len(archive) / 2**20:.1f} MB, on a dead and a live mirror\n"
        )
        for title, kw in (
            (
                "run 1, Ctrl-C after %d downloads" % a.interrupt_after,
                dict(interrupt_after=a.interrupt_after, journal=journal),
            ),
            ("run 2, after the Ctrl-C", {}),
            ("run 3, nothing left to do", {}),
        ):
            hits0 = sum(images.hits.values()), sum(pages.hits.values()), sum(mirror.hits.values())
            rc, out, took, stop = run(cmd, env, **kw)
            hits = (
                sum(images.hits.values()) - hits0[0],
                sum(pages.hits.values()) - hits0[1],
                sum(mirror.hits.values()) - hits0[2],
            )
            print(
                f"==== {title}: exit {rc} in {took:.1f} s"
                + (f" (stopped {stop:.1f} s after Ctrl-C)" if stop else "")
                + f"; requests: images {hits[0]}, results page {hits[1]}, LFW mirror {hits[2]}"
            )
            print(out)
            if kw:  # what run 1 finished must not be requested again
                finished = {json.loads(x)["url"] for x in journal.read_text().splitlines()}
                hits_after_1 = dict(images.hits)
        again = sum(
            images.hits[u.removeprefix(images.base).split("?")[0]]
            - hits_after_1.get(u.removeprefix(images.base).split("?")[0], 0)
            for u in finished
        )
        recs = [json.loads(x) for x in journal.read_text().splitlines()]
        print(
            f"journal: {len(recs)} lines for {len(set(r['url'] for r in recs))} URLs; {len(finished)} URLs "
            f"were journaled before the Ctrl-C, and later runs requested them {again} times"
        )


if __name__ == "__main__":
    main()
