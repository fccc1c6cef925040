"""Load benchmark: 500 requests, 16 at a time, against the real `chiquito serve` on 127.0.0.1.

Run: .venv/bin/python bench/bench_serve.py [MODEL.pkl] [--n 500] [--concurrency 16]
Bar (web-app issue): zero errors, zero 5xx, and the server's memory flat (RSS before and after).
"""

import argparse
import io
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def rss_kb(pid: int) -> dict:
    """VmRSS (now) and VmHWM (peak) of a process, in kB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":")
            out[k] = int(v.split()[0])
    return out


def payloads(n: int) -> list[bytes]:
    import skimage.data

    arr = skimage.data.coffee()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, 150), rng.integers(0, 350)
        buf = io.BytesIO()
        Image.fromarray(arr[y : y + 250, x : x + 250]).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(ROOT / "runs/face-or-not/model.pkl"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("chiquito")
    proc = subprocess.Popen([str(exe), "serve", a.model, "--port", str(port)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        bodies = payloads(32)
        requests.post(base + "/api/predict", files={"file": ("w.jpg", bodies[0], "image/jpeg")})  # warm-up
        before = rss_kb(proc.pid)

        def one(i):
            t = time.perf_counter()
            try:
                r = requests.post(
                    base + "/api/predict", files={"file": (f"{i}.jpg", bodies[i % 32], "image/jpeg")}, timeout=120
                )
                return time.perf_counter() - t, r.status_code
            except requests.RequestException:
                return time.perf_counter() - t, 0

        t0, results, rounds = time.perf_counter(), [], []
        with ThreadPoolExecutor(a.concurrency) as pool:
            for r in range(3):  # RSS after each third: a plateau is the allocator's high-water, growth a leak
                results += pool.map(one, range(r * a.n // 3, (r + 1) * a.n // 3))
                rounds.append(rss_kb(proc.pid)["VmRSS"])
        wall = time.perf_counter() - t0
        after = rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    lat = sorted(x for x, _ in results)
    codes = [c for _, c in results]
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(f"{a.n} requests, {a.concurrency} at a time, model {a.model}")
    print(f"throughput   : {a.n / wall:.1f} req/s ({wall:.1f} s)")
    print(f"latency      : p50 {p(0.5):.0f} ms, p95 {p(0.95):.0f} ms, mean {statistics.mean(lat) * 1000:.0f} ms")
    print(
        f"errors       : {sum(c != 200 for c in codes)} non-200, {sum(c >= 500 for c in codes)} 5xx, "
        f"{codes.count(0)} connection errors"
    )
    print(
        f"server RSS   : before {before['VmRSS'] / 1024:.0f} MB, after {after['VmRSS'] / 1024:.0f} MB "
        f"(peak {after['VmHWM'] / 1024:.0f} MB; peak before the load {before['VmHWM'] / 1024:.0f} MB)"
    )
    print(f"RSS by third : {', '.join(f'{x / 1024:.0f} MB' for x in rounds)}")


if __name__ == "__main__":
    main()
