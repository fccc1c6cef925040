"""Benchmark: 300 images from a loopback server adding 100 ms per request, default settings vs one at a time.

Run: .venv/bin/python bench/bench_download.py [--n 300] [--latency 0.1]
Bar (web-acquisition issue): the default settings at least 8x faster than one-at-a-time downloading.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chiquito_or_not.core.http_fetch import FetchPolicy  # noqa: E402
from chiquito_or_not.data.download import download_urls  # noqa: E402
from tests.httpserver import Server  # noqa: E402


def timed(urls, policy) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        counts = download_urls(urls, Path(d), policy, progress=False)
        return time.perf_counter() - t, dict(counts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--latency", type=float, default=0.1)
    a = ap.parse_args()
    with Server(latency=a.latency) as server:
        urls = [f"{server.base}/img/{i}.jpg" for i in range(a.n)]
        base_t, base_c = timed(urls, FetchPolicy(workers=1, per_host=1))
        ours_t, ours_c = timed(urls, FetchPolicy())
    assert base_c == ours_c == {"ok": a.n}, (base_c, ours_c)
    d = FetchPolicy()
    print(f"{a.n} images, {a.latency * 1000:.0f} ms latency per request, loopback")
    print(f"one at a time           : {base_t:7.2f} s  ({a.n / base_t:6.1f} img/s)")
    print(f"default (workers {d.workers}, per host {d.per_host}): {ours_t:7.2f} s  ({a.n / ours_t:6.1f} img/s)")
    print(f"speedup                 : {base_t / ours_t:7.1f}x  (bar: >= 8x)")


if __name__ == "__main__":
    main()
