"""The downloader against a real loopback server that misbehaves on purpose."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from chiquito_or_not.core.http_fetch import FetchPolicy
from chiquito_or_not.data.download import OUTCOMES_FILE, download_urls, read_outcomes

from .helpers import subprocess_env
from .httpserver import Server

FAST = FetchPolicy(
    workers=8,
    per_host=8,
    read_timeout=0.5,
    connect_timeout=1,
    retries=2,
    backoff=0.05,
    max_bytes=100_000,
    max_redirects=3,
)


@pytest.fixture
def server():
    with Server() as s:
        yield s


@pytest.mark.parametrize(
    "path, status, reason",
    [
        ("/img/1.jpg", "ok", ""),
        ("/redirect-ok", "ok", ""),
        ("/nothing.jpg", "failed", "http_404"),
        ("/flaky.jpg", "ok", ""),  # 500, 500, then the image
        ("/busy.jpg", "ok", ""),  # 429 with Retry-After: 1
        ("/always500.jpg", "failed", "http_503"),
        ("/slow.jpg", "failed", "timeout"),
        ("/loop", "failed", "too_many_redirects"),
        ("/to-ftp", "failed", "bad_scheme"),
        ("/big.jpg", "failed", "too_large"),
        ("/html.jpg", "failed", "not_an_image"),
        ("/page.html", "failed", "not_image_content_type"),
        ("/truncated.jpg", "failed", "truncated_or_corrupt"),
        ("/pixel.png", "failed", "too_small"),
    ],
)
def test_each_case_ends_with_its_reason(server, tmp_path, path, status, reason):
    url = server.base + path
    t = time.time()
    counts = download_urls([url], tmp_path, FAST, progress=False)
    rec = read_outcomes(tmp_path / OUTCOMES_FILE)[url]
    assert (rec["status"], rec["reason"]) == (status, reason), rec
    assert counts[reason or status] == 1
    files = [p for p in tmp_path.iterdir() if p.name != OUTCOMES_FILE]
    assert len(files) == (1 if status == "ok" else 0), files  # nothing half-written, no temp files
    if status == "ok":
        assert files[0].name == rec["file"] and rec["sha256"].startswith(files[0].stem)
    if path == "/busy.jpg":
        assert time.time() - t >= 1.0 and server.hits[path] == 2  # it waited as Retry-After asked
    if path == "/flaky.jpg":
        assert server.hits[path] == 3 and rec["attempts"] == 3
    if path == "/always500.jpg":
        assert server.hits[path] == FAST.retries + 1


def test_duplicates_are_written_once_and_rerun_fetches_nothing(server, tmp_path):
    urls = [f"{server.base}/img/{i}.jpg" for i in range(10)] + [server.base + "/redirect-ok"]
    counts = download_urls(urls, tmp_path, FAST, progress=False)
    assert counts["ok"] == 10 and counts["duplicate"] == 1  # /redirect-ok serves img 7 again
    assert len(list(tmp_path.glob("*.jpg"))) == 10
    hits = sum(server.hits.values())
    again = download_urls(urls, tmp_path, FAST, progress=False)
    assert sum(server.hits.values()) == hits and again == counts


def test_a_file_written_but_not_recorded_before_a_kill_counts_as_ok(server, tmp_path):
    url = f"{server.base}/img/3.jpg"
    download_urls([url], tmp_path, FAST, progress=False)
    (tmp_path / OUTCOMES_FILE).write_text("")  # killed after the file was written, before its line
    counts = download_urls([url, server.base + "/img/4.jpg"], tmp_path, FAST, progress=False)
    assert counts == {"ok": 2}
    assert {r["status"] for r in read_outcomes(tmp_path / OUTCOMES_FILE).values()} == {"ok"}


def test_only_http_urls_are_followed(tmp_path):
    counts = download_urls(["file:///etc/passwd", "ftp://127.0.0.1/a.jpg"], tmp_path, FAST, progress=False)
    assert counts == {"bad_scheme": 2}


def _download_in_a_process(urls, tmp_path, workers: int):
    """download_urls in a child process, returned once it has journaled 15 outcomes."""
    (tmp_path / "urls.json").write_text(json.dumps(urls))
    script = (
        "import json, sys\nfrom pathlib import Path\n"
        "from chiquito_or_not.core.http_fetch import FetchPolicy\n"
        "from chiquito_or_not.data.download import download_urls\n"
        "urls = json.loads(Path(sys.argv[1]).read_text())\n"
        f"download_urls(urls, Path(sys.argv[2]), FetchPolicy(workers={workers}, per_host={workers}), "
        "progress=False)\n"
    )
    dest = tmp_path / "out"
    # a shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # the child gets the terminal's default, whatever started pytest
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "urls.json"), str(dest)],
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    journal = dest / OUTCOMES_FILE
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.is_file() and journal.read_text().count("\n") >= 15):
        time.sleep(0.02)
    return proc, dest, journal


def test_interrupted_run_resumes_without_downloading_twice(tmp_path):
    with Server(latency=0.05) as server:
        urls = [f"{server.base}/img/{i}.jpg" for i in range(60)]
        proc, dest, journal = _download_in_a_process(urls, tmp_path, workers=2)
        os.kill(proc.pid, signal.SIGKILL)  # the hardest interruption: no cleanup at all
        proc.wait()
        before = read_outcomes(journal)
        assert 15 <= len(before) < 60
        # generous timeouts: on a loaded machine FAST's 0.5 s read timeout would retry, and a retry is a hit
        patient = FetchPolicy(workers=8, per_host=8, read_timeout=20, connect_timeout=10, backoff=0.05)
        counts = download_urls(urls, dest, patient, progress=False)
        assert counts["ok"] == 60
        for url in before:  # what was finished before the kill was not fetched again
            assert server.hits[url.removeprefix(server.base)] == 1
        assert all(server.hits[u.removeprefix(server.base)] <= 2 for u in urls)
        assert len(list(dest.glob("*.jpg"))) == 60 and not list(dest.glob(".*"))
        assert len(read_outcomes(journal)) == 60


def test_a_stalled_url_stalls_neither_the_others_nor_the_journal(tmp_path):
    import threading

    with Server() as server:
        urls = [server.base + "/drip.jpg"] + [f"{server.base}/img/{i}.jpg" for i in range(12)]
        policy = FetchPolicy(workers=4, per_host=4, read_timeout=5, deadline=5, retries=0)
        lines = []
        t = threading.Thread(
            target=download_urls,
            args=(urls, tmp_path, policy),
            kwargs={"progress": False, "log": lines.append, "every": 0.5},
        )
        t0 = time.monotonic()
        t.start()
        journal = tmp_path / OUTCOMES_FILE
        while time.monotonic() - t0 < 60 and len(read_outcomes(journal)) < 12:  # a wait, not a bound
            time.sleep(0.05)
        seen = read_outcomes(journal)
        assert len(seen) == 12 and urls[0] not in seen, seen  # all journaled while the drip still runs
        assert t.is_alive()
        t.join(10)
        assert read_outcomes(journal)[urls[0]]["reason"] == "deadline"  # cut at the overall deadline
        # a log (no terminal) still hears how it goes while nothing finishes
        assert sum("downloaded 12/13" in x and "waiting on 1" in x for x in lines) >= 3, lines


def test_ctrl_c_stops_at_once_and_the_rerun_fetches_only_what_is_missing(tmp_path):
    with Server(latency=0.2) as server:
        urls = [server.base + "/drip.jpg"] + [f"{server.base}/img/{i}.jpg" for i in range(80)]  # the drip in flight
        proc, dest, journal = _download_in_a_process(urls, tmp_path, workers=6)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        before = read_outcomes(journal)
        # the drip (400 s, or its 60 s deadline) was cut, not waited for: the journal says it was interrupted
        assert before.get(urls[0], {}).get("reason", "interrupted") == "interrupted", before.get(urls[0])
        assert 15 <= len(before) < 81
        # every image that arrived is journaled: none is fetched again because the Ctrl-C came first
        on_disk = {p.name for p in dest.iterdir() if p.suffix == ".jpg"}
        assert on_disk == {r["file"] for r in before.values() if r.get("status") == "ok"}, on_disk
        hits_before = sum(server.hits.values())
        patient = FetchPolicy(workers=8, per_host=8, read_timeout=20, connect_timeout=10, deadline=2)
        counts = download_urls(urls, dest, patient, progress=False)
        assert counts["ok"] == 80 and counts["deadline"] == 1
        assert sum(server.hits.values()) - hits_before == 81 - len(before)  # only what was missing
        for url in before:
            assert server.hits[url.removeprefix(server.base)] == 1


def test_transient_failures_wait_for_retry_failed(server, tmp_path):
    urls = [server.base + "/always500.jpg", server.base + "/nothing.jpg", server.base + "/img/2.jpg"]
    download_urls(urls, tmp_path, FAST, progress=False)
    hits = dict(server.hits)
    again = download_urls(urls, tmp_path, FAST, progress=False)
    assert dict(server.hits) == hits and sum(again.new.values()) == 0  # a plain re-run asks nothing
    retried = download_urls(urls, tmp_path, FAST, progress=False, retry_failed=True)
    assert server.hits["/always500.jpg"] == hits["/always500.jpg"] + FAST.retries + 1  # the 503 again
    assert server.hits["/nothing.jpg"] == hits["/nothing.jpg"]  # a 404 is not transient: not asked again
    assert retried.new == {"http_503": 1} and retried.had == {"http_404": 1, "ok": 1}


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_a_failure_the_user_fixes_is_fetched_again_once_the_settings_change(server, tmp_path):
    from dataclasses import replace

    from .httpserver import Proxy, tls_server_context

    urls = [server.base + f"/img/{i}.jpg" for i in range(5)]
    down = replace(FAST, proxy=f"http://127.0.0.1:{_dead_port()}", retries=0)
    first = download_urls(urls, tmp_path / "a", down, progress=False)
    assert first["ok"] == 0 and set(first) <= {"proxy_error", "connection_error"}, first
    again = download_urls(urls, tmp_path / "a", down, progress=False)
    assert sum(again.new.values()) == 0  # the same settings: nothing asked again without --retry-failed
    logged = []
    with Proxy() as proxy:  # the proxy is fixed (here: another address): its failures are fetched again
        fixed = download_urls(urls, tmp_path / "a", replace(FAST, proxy=proxy.url), log=logged.append, progress=False)
        assert fixed.new == {"ok": 5} and len(proxy.requests) == 5, fixed
    assert any("5 that failed under other proxy/verify settings" in m for m in logged), logged
    # a certificate the default store does not trust, then the right CA file: fetched again by itself
    ctx, ca_file = tls_server_context(tmp_path, "127.0.0.1")
    with Server(ssl_context=ctx) as tls:
        urls = [tls.base + f"/img/{i}.jpg" for i in range(3)]
        bad = download_urls(urls, tmp_path / "b", replace(FAST, retries=0), progress=False)
        assert bad == {"tls_error": 3}, bad
        hits = dict(tls.hits)
        assert sum(download_urls(urls, tmp_path / "b", replace(FAST, retries=0), progress=False).new.values()) == 0
        assert dict(tls.hits) == hits
        good = download_urls(urls, tmp_path / "b", replace(FAST, verify=str(ca_file)), progress=False)
        assert good.new == {"ok": 3}, good
    # --retry-failed retries a proxy failure under the same settings too
    retried = (
        download_urls([server.base + "/img/9.jpg"], tmp_path / "c", down, progress=False),
        download_urls([server.base + "/img/9.jpg"], tmp_path / "c", down, progress=False, retry_failed=True),
    )
    assert sum(retried[1].new.values()) == 1
