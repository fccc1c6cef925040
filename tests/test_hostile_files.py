"""Files the program reads back are untrusted input: journals torn while a page is open or holding a field
over csv's limit, a review journal replaced by a folder, JSON bodies nested deep or of the wrong types,
`.faces.json` caches of the wrong shape, a run folder that is a file, a client that hangs up mid-body,
a run whose losses are not numbers. Each is one line or a 4xx JSON answer, and nothing is lost."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from chiquito_or_not.core.errors import DataError, RunError
from chiquito_or_not.data.review_log import ReviewLog, last_decisions

from .helpers import write_recipe
from .httpserver import app_on_loopback

fastapi = pytest.importorskip("fastapi")

A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_a_line_torn_while_the_journal_is_open_does_not_swallow_the_next_decision(tmp_path):
    f = tmp_path / "review.csv"
    with ReviewLog(f) as log:
        log.write(A, "x.jpg", "exclude", "cat")
        with open(f, "a") as fh:  # someone else (or a crashed copy) writes half a line meanwhile
            fh.write(f"{B},y.jpg,rel")
        log.write(C, "z.jpg", "relabel", "dog")  # saved: it must not be glued onto the torn line
    last, problems = last_decisions(f)
    assert last[A].decision == "exclude" and last[C].label == "dog" and B not in last
    assert len(problems) == 1 and "line 3" in problems[0], problems


def test_a_field_over_csvs_limit_is_read_and_a_line_over_a_mebibyte_loses_only_itself(tmp_path):
    f = tmp_path / "review.csv"
    with ReviewLog(f) as log:
        log.write(A, "x.jpg", "exclude", "cat")
    with open(f, "a") as fh:
        fh.write(f"{B},{'p' * 200_000}.jpg,exclude,cat,2026-01-01\n")  # over csv's 131072 default: was _csv.Error
        fh.write(f"{C},{'q' * 2_000_000}.jpg,exclude,cat,2026-01-01\n")  # over 1 MiB: not read, named
    with ReviewLog(f) as log:
        log.write("d" * 64, "z\nw.jpg", "exclude", "cat")  # a line break in a path: one physical line still
    last, problems = last_decisions(f)
    assert set(last) == {A, B, "d" * 64} and len(problems) == 1 and "over 1 MiB" in problems[0], problems
    assert f.read_text().count("\n") == 5  # header + 4 lines: nothing rewritten


def test_a_review_journal_that_is_a_folder_is_refused_in_one_line(tmp_path):
    (tmp_path / "review.csv").mkdir()
    with pytest.raises(DataError) as e:
        last_decisions(tmp_path / "review.csv")
    assert "\n" not in str(e.value) and "review.csv" in str(e.value)


def test_faces_json_of_the_wrong_shape_is_recomputed_not_a_traceback(tmp_path):
    from chiquito_or_not.data.face_crops import _detections_ok

    assert _detections_ok([[1, 2, 30, 40, 0.9]]) and _detections_ok([])
    for bad in (
        "faces",
        {"box": [1, 2, 3, 4]},
        [[1, 2, 3, 0.9]],
        ["1234"],
        [[1, 2, 3, 4, float("nan")]],
        [[1, 2, 3, 4, True]],
    ):
        assert not _detections_ok(bad), bad


def test_a_run_whose_losses_are_not_numbers_is_a_failed_run():
    from chiquito_or_not.stages.finetune import _check_finite

    history = [
        {"stage": "frozen", "epoch": 1, "train_loss": 0.7, "valid_loss": 0.6},
        {"stage": "frozen", "epoch": 2, "train_loss": float("nan"), "valid_loss": 0.6},
    ]
    with pytest.raises(RunError, match=r"training diverged: frozen epoch 2 has train_loss = nan.*left as it was"):
        _check_finite(history, __import__("pathlib").Path("runs/x"))
    _check_finite(history[:1], __import__("pathlib").Path("runs/x"))


def test_seeds_when_the_run_folder_is_a_file_is_one_line(tmp_path):
    from .helpers import TINY_RECIPE

    runs, data = tmp_path / "runs", tmp_path / "data"
    runs.mkdir()
    (runs / "tiny").write_text("a file of mine\n")
    recipe = write_recipe(tmp_path, TINY_RECIPE.format(name="tiny", aug_cycles=1), "tiny.toml")
    env = {**__import__("os").environ, "CHIQUITO_RUNS": str(runs), "CHIQUITO_DATA": str(data)}
    r = subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "finetune", str(recipe), "--seeds", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "is a file" in r.stderr, r.stderr
    assert (runs / "tiny").read_text() == "a file of mine\n"


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(tmp_path, caplog):
    import logging

    from chiquito_or_not.stages.serve import _read_capped, _Refused

    app = fastapi.FastAPI()
    seen = []

    @app.post("/up")
    async def up(request: fastapi.Request):  # a module-level name: annotations are strings here
        try:
            data = await _read_capped(request, 1 << 20)
        except _Refused as e:
            seen.append(e.status)
            return {"error": str(e)}
        return {"n": len(data)}

    caplog.set_level(logging.WARNING)
    # uvicorn's own log handlers off: what it logs (an ASGI traceback among it) reaches caplog
    with app_on_loopback(app, log_config=None) as port:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.3)
        deadline = time.time() + 10
        while not seen and time.time() < deadline:
            time.sleep(0.05)
    err = "\n".join(r.getMessage() + (" Traceback" if r.exc_info else "") for r in caplog.records)
    assert seen == [400] and "Traceback" not in err and "ClientDisconnect" not in err, (seen, err[-2000:])
