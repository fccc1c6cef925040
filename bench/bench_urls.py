"""Benchmark: a URL list (`kind = "urls"`) downloaded by each engine from a loopback server that adds 100 ms
to every request, in URLs per second; the one-at-a-time download is the baseline.

Run: .venv/bin/python bench/bench_urls.py [--n 2000] [--latency 0.1] [--bad 0.1]
Every side fetches the same list (a share --bad of it answers 404) into a fresh folder and must report the
same outcome for every URL; img2dataset's time includes starting its processes. All URLs are on one host,
so the own engine's per-host limit (12 by default) caps it; the row with per_host = threads shows the
downloader without that politeness.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from chiquito_or_not.core.http_fetch import FetchPolicy
    from chiquito_or_not.core.recipe import UrlListSource
    from chiquito_or_not.data.url_list import download_img2dataset, download_own
    from tests.httpserver import Server, blocks_jpeg

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--bad", type=float, default=0.1)
    a = ap.parse_args()
    d = UrlListSource(path="")
    quiet = lambda *_: None  # noqa: E731

    def own(urls, folder, per_host):
        policy = FetchPolicy(workers=d.threads, per_host=per_host, read_timeout=d.timeout, retries=d.retries)
        return download_own(urls, folder, policy, quiet, False)

    def i2d(urls, folder, processes, threads):
        return download_img2dataset(
            urls, folder, distributor="multiprocessing", processes=processes, threads=threads,
            timeout=d.timeout, retries=d.retries, log=quiet,
        )  # fmt: skip

    def own_one(urls, folder):
        return download_own(urls, folder, FetchPolicy(workers=1, per_host=1, retries=d.retries), quiet, False)

    sides = [  # (name, how many of the URLs, run)
        ("one at a time (own, 1 thread)", min(a.n, 300), own_one),
        (f"own, defaults (threads {d.threads}, per_host {d.per_host})", a.n, lambda u, f: own(u, f, d.per_host)),
        (f"own, per_host {d.threads}", a.n, lambda u, f: own(u, f, d.threads)),
        (f"img2dataset, defaults ({d.processes} processes x {d.threads} threads)", a.n,
         lambda u, f: i2d(u, f, d.processes, d.threads)),
    ]  # fmt: skip

    with Server(latency=a.latency) as server:
        every = round(1 / a.bad) if a.bad else 0  # every k-th URL answers 404: any prefix has the same share
        urls = []
        for i in range(a.n):
            if every and i % every == every - 1:
                urls.append(f"{server.base}/missing/{i}.jpg")
            else:
                server.files[f"/img/{i}.jpg"] = (blocks_jpeg(i), "image/jpeg")
                urls.append(f"{server.base}/img/{i}.jpg")
        n_bad = sum("/missing/" in u for u in urls)
        print(f"{a.n} URLs ({n_bad} answer 404), {a.latency * 1000:.0f} ms latency per request, loopback, one host")
        reference, base = None, None
        for name, n, run in sides:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                got = run(urls[:n], Path(tmp))
                dt = time.perf_counter() - t
            outcome = {o.url: (o.file is not None, o.reason) for o in got}
            assert sum(ok for ok, _ in outcome.values()) == sum("/img/" in u for u in urls[:n]), name
            if n == a.n:  # every full side reports the same outcome for every URL
                reference = reference or outcome
                assert outcome == reference, f"{name}: outcomes differ from the first full side"
            rate = n / dt
            base = base or rate
            print(f"{name:58s}: {n:5d} URLs in {dt:6.2f} s = {rate:7.1f} URLs/s  ({rate / base:5.1f}x)")


if __name__ == "__main__":  # img2dataset starts its processes by spawning: they import this file again
    main()
