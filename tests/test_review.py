"""chiquito review: the ranking finds planted mistakes; review.csv is one writer, append-only and
survives crashes; `dataset` applies it by content hash (exclude, relabel, after a rename, idempotent,
--no-review); the page in real headless Chromium keeps decisions across a reload."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app
from chiquito_or_not.core.errors import DataError
from chiquito_or_not.core.recipe import load_recipe
from chiquito_or_not.data.review_log import ReviewLog, last_decisions, read_decisions
from chiquito_or_not.stages.dataset import build_dataset

from .helpers import save_crops, write_recipe

RECIPE = """
name = "rev"
seed = 3

[dataset]
min_size = 48
valid = 0.25

[finetune]
backbone = "efficientnet_lite0"
size = 64
bs = 8

[[classes.cat.sources]]
kind = "folder"
path = "{cat}"

[[classes.coffee.sources]]
kind = "folder"
path = "{coffee}"
"""


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _split(root: Path) -> dict[str, tuple[str, str]]:
    with open(root / "split.csv", newline="") as fh:
        return {r["sha256"]: (r["split"], r["label"]) for r in csv.DictReader(fh)}


def _manifest(root: Path) -> dict[str, dict]:
    with open(root / "manifest.csv", newline="") as fh:
        return {r["sha256"]: r for r in csv.DictReader(fh)}


@pytest.fixture
def planted(tmp_path, roots):
    """Two classes of real photo crops (the cat, a cup of coffee), 3 coffee crops filed as cat."""
    cat, coffee = tmp_path / "src" / "cat", tmp_path / "src" / "coffee"
    save_crops(cat, "chelsea", 22, size=80, seed=1)
    save_crops(coffee, "coffee", 22, size=80, seed=2)
    wrong = save_crops(tmp_path / "src" / "tmp", "coffee", 3, size=80, seed=9)
    for p in wrong:
        shutil.move(p, cat / f"wrong_{p.name}")
    recipe = load_recipe(write_recipe(tmp_path / "recipes", RECIPE.format(cat=cat, coffee=coffee), "rev.toml"))
    build_dataset(recipe, log=lambda *_: None)
    return recipe, {_sha(cat / f"wrong_{p.name}") for p in wrong}, tmp_path / "data" / "rev"


def test_ranking_finds_the_planted_mistakes(planted):
    from chiquito_or_not.stages.review import find_suspects

    recipe, wrong, root = planted
    in_splits = set(_split(root)) & wrong
    assert len(in_splits) == 3  # none removed as a duplicate: the test is about ranking
    res = find_suspects(recipe.path, log=lambda *_: None)
    top = res.suspects.items[:3]
    assert {it["sha256"] for it in top} == wrong
    assert all(it["label"] == "cat" and it["suggested"] == "coffee" and "label issue" in it["why"] for it in top)
    assert all(it["quality"] < 0.5 for it in top) and res.suspects.items[5]["quality"] > 0.5
    assert res.suspects.issues >= 3 and len(res.suspects.items) == len(_split(root))


def test_review_list_json_and_refusals(planted, tmp_path):
    import json

    recipe, wrong, root = planted
    out = CliRunner().invoke(app, ["review", str(recipe.path), "--list", "4"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 4 and all("cat -> coffee?" in line for line in lines[:3])
    js = CliRunner().invoke(app, ["review", str(recipe.path), "--list", "3", "--json"])
    doc = json.loads(js.stdout)
    assert {it["sha256"] for it in doc["items"]} == wrong and doc["classes"] == ["cat", "coffee"]
    # a detection recipe is reviewed too (tests/test_review_boxes.py); without its dataset: one line
    det = write_recipe(
        tmp_path / "r2",
        'task = "detect"\n[detect]\nlabels = ["a"]\n[[detect.sources]]\n'
        'format = "voc"\n[detect.sources.images]\nkind = "folder"\npath = "x"\n',
        "det.toml",
    )
    bad = CliRunner().invoke(app, ["review", str(det), "--list", "3"])
    assert bad.exit_code == 2 and "no split.csv; run `chiquito dataset" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(app, ["review", str(tmp_path / "nope"), "--list", "3"])
    assert missing.exit_code == 2 and "neither a recipe file nor a run folder" in missing.output


def test_review_csv_one_writer_and_crash_safe(tmp_path):
    f = tmp_path / "review.csv"
    a, b = "a" * 64, "b" * 64
    with ReviewLog(f) as log:
        log.write(a, "x.jpg", "exclude", "cat")
        with pytest.raises(DataError, match="open in another review"):
            ReviewLog(f).open()
    with open(f, "a") as fh:  # a crash in the middle of a line
        fh.write(f"{b},y.jpg,rel")
    with ReviewLog(f) as log:  # the half line stays, the next decision starts on its own line
        log.write(b, "y.jpg", "relabel", "coffee")
        log.write(a, "x.jpg", "keep", "cat")  # keep undoes the exclude
    last, problems = last_decisions(f)
    assert last[a].decision == "keep" and last[b].label == "coffee" and len(problems) == 1
    applied, _ = read_decisions(f)
    assert set(applied) == {b}
    assert f.read_text().count("\n") == 5  # header, 4 lines (one of them the half line): append-only
    other = tmp_path / "notes.csv"
    other.write_text("hello,world\n")
    with pytest.raises(DataError, match="not a review file"):
        ReviewLog(other).open()
    assert other.read_text() == "hello,world\n"


def test_dataset_applies_review_by_content(planted, tmp_path):
    recipe, wrong, root = planted
    src = tmp_path / "src"
    raw_before = {p: _sha(p) for p in src.rglob("*.jpg")}
    before = _split(root)
    ex, rl = sorted(wrong)[:2]
    with ReviewLog(root / "review.csv") as log:
        log.write(ex, "whatever.jpg", "exclude", "cat")
        log.write(rl, "whatever2.jpg", "relabel", "coffee")
    out = CliRunner().invoke(app, ["dataset", str(recipe.path)])
    assert out.exit_code == 0, out.output
    assert "review.csv: 1 excluded, 1 relabelled" in out.output
    after = _split(root)
    assert ex not in after and after[rl] == (before[rl][0], "coffee")
    assert {k: v for k, v in after.items() if k != rl} == {k: v for k, v in before.items() if k not in (ex, rl)}
    man = _manifest(root)
    assert man[ex]["reason"] == "excluded_in_review" and man[ex]["status"] == "rejected"
    assert man[rl]["label"] == "coffee" and "was 'cat'" in man[rl]["detail"]
    split, _ = after[rl]
    assert len(list((root / split / "coffee").glob(f"{rl[:16]}*"))) == 1
    assert not list((root / split / "cat").glob(f"{rl[:16]}*"))
    assert not any(p.name.startswith(ex[:16]) for s in ("train", "valid") for p in (root / s).glob("*/*.jpg"))

    # idempotent: the same decisions again change nothing
    again = CliRunner().invoke(app, ["dataset", str(recipe.path)])
    assert "(0 files added, 0 removed)" in again.output and _split(root) == after

    # the raw file renamed: the decision follows its content
    victim = next(p for p in src.rglob("*.jpg") if _sha(p) == ex)
    victim.rename(victim.with_name("renamed.jpg"))
    build_dataset(recipe, log=lambda *_: None)
    assert _split(root) == after

    # --no-review: the sources' labels, the same split as before the review
    plain = CliRunner().invoke(app, ["dataset", str(recipe.path), "--no-review"])
    assert plain.exit_code == 0 and "review.csv" not in plain.output and _split(root) == before
    assert {p.name for p in src.rglob("*.jpg")} == {p.name for p in raw_before} - {victim.name} | {"renamed.jpg"}
    assert sorted(_sha(p) for p in src.rglob("*.jpg")) == sorted(raw_before.values())  # nothing modified


def test_review_api_refuses_foreign_pages(planted):
    from fastapi.testclient import TestClient

    from chiquito_or_not.stages.review import create_review_app, find_suspects

    recipe, wrong, root = planted
    app_ = create_review_app(find_suspects(recipe.path, log=lambda *_: None), show=10)
    try:
        c = TestClient(app_, base_url="http://127.0.0.1:8001")
        page = c.get("/")
        token = page.text.split('const TOKEN = "')[1].split('"')[0]
        assert "script-src 'nonce-" in page.headers["content-security-policy"]
        sha = c.get("/api/suspects").json()["items"][0]["sha256"]
        assert c.get(f"/image/{sha}").headers["content-type"] == "image/jpeg"
        assert c.get("/image/" + "0" * 64).status_code == 404
        assert c.get("/image/..%2f..%2frecipe.json").status_code == 404
        body = {"sha256": sha, "decision": "exclude"}
        assert c.post("/api/decision", json=body).status_code == 403  # no token: another site's form
        assert c.post("/api/decision", json=body, headers={"X-Review-Token": "guess"}).status_code == 403
        assert (
            c.post(
                "/api/decision", json={**body, "decision": "relabel", "label": "dog"}, headers={"X-Review-Token": token}
            ).status_code
            == 400
        )
        rebound = TestClient(app_, base_url="http://evil.example:8001")  # DNS rebinding
        assert rebound.post("/api/decision", json=body, headers={"X-Review-Token": token}).status_code == 400
        assert not (root / "review.csv").is_file() or len(read_decisions(root / "review.csv")[0]) == 0
        ok = c.post("/api/decision", json=body, headers={"X-Review-Token": token})
        assert ok.status_code == 200 and read_decisions(root / "review.csv")[0][sha].decision == "exclude"
    finally:
        app_.state.log.close()


def test_the_review_api_answers_deep_or_mistyped_json_with_4xx_json(planted):
    import json

    from fastapi.testclient import TestClient

    from chiquito_or_not.stages.review import create_review_app, find_suspects

    recipe, wrong, root = planted
    app_ = create_review_app(find_suspects(recipe.path, log=lambda *_: None), show=10)
    try:
        c = TestClient(app_, base_url="http://127.0.0.1:8001")
        token = c.get("/").text.split('const TOKEN = "')[1].split('"')[0]
        sha = c.get("/api/suspects").json()["items"][0]["sha256"]
        h = {"X-Review-Token": token, "content-type": "application/json"}
        bodies = [
            "[" * 4096 + "]" * 4096,  # nested 4096 deep
            json.dumps({"sha256": [sha], "decision": "exclude"}),
            json.dumps({"sha256": {"x": sha}, "decision": "exclude"}),
            json.dumps({"sha256": sha, "decision": ["exclude"]}),
            json.dumps({"sha256": sha, "decision": "relabel", "label": 3}),
            json.dumps([1, 2]),
            "not json",
        ]
        for body in bodies:
            r = c.post("/api/decision", content=body, headers=h)
            assert 400 <= r.status_code < 500 and "error" in r.json(), (body[:40], r.status_code, r.text[:200])
        assert not (root / "review.csv").is_file() or len(read_decisions(root / "review.csv")[0]) == 0
        # the journal replaced by a folder while the page is open: a JSON answer that says NOT saved
        app_.state.log.close()
        (root / "review.csv").unlink(missing_ok=True)
        (root / "review.csv").mkdir()
        app_.state.log.open()
        r = c.post("/api/decision", content=json.dumps({"sha256": sha, "decision": "exclude"}), headers=h)
        assert r.status_code >= 400 and "NOT saved" in r.json()["error"], r.text
    finally:
        app_.state.log.close()
        if (root / "review.csv").is_dir():
            (root / "review.csv").rmdir()


def test_review_page_in_chromium(chromium, planted, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from chiquito_or_not.stages.review import create_review_app, find_suspects

    from .httpserver import app_in_chromium

    recipe, wrong, root = planted
    app_ = create_review_app(find_suspects(recipe.path, log=lambda *_: None), show=12)
    try:
        with app_in_chromium(app_, tmp_path / "profile", "1000,900") as (browser, url):
            browser.get(f"{url}/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: "worst first" in b.find_element(By.ID, "status").text)
            cards = browser.find_elements(By.CSS_SELECTOR, ".card")
            assert len(cards) == 12
            first, second = cards[0].get_attribute("data-sha"), cards[1].get_attribute("data-sha")
            cards[0].find_element(By.CSS_SELECTOR, ".relabel-btn").click()  # click: → coffee
            wait.until(lambda b: "saved" in b.find_element(By.ID, "status").text)
            cards[1].click()
            cards[1].send_keys("x")  # keyboard: exclude
            wait.until(lambda b: "exclude" in b.find_element(By.ID, "status").text)
            browser.save_screenshot(str(tmp_path / "review.png"))
            browser.refresh()
            wait.until(lambda b: "worst first" in b.find_element(By.ID, "status").text)
            state = {
                c.get_attribute("data-sha"): c.find_element(By.CSS_SELECTOR, ".state").text
                for c in browser.find_elements(By.CSS_SELECTOR, ".card")
            }
            assert state[first] == "relabelled → coffee" and state[second] == "excluded"
            assert sum(1 for v in state.values() if v) == 2
    finally:
        app_.state.log.close()
    saved, _ = read_decisions(root / "review.csv")
    assert saved[first].decision == "relabel" and saved[first].label == "coffee"
    assert saved[second].decision == "exclude"
    assert (tmp_path / "review.png").stat().st_size > 5000


@pytest.mark.slow
def test_review_of_a_run_ranks_by_its_losses_too(tiny_run, env_roots):
    from chiquito_or_not.stages.review import find_suspects

    recipe, result = tiny_run
    notices = []
    res = find_suspects(result.run, log=notices.append)
    assert any("pickle" in str(n) for n in notices)  # model.pkl is loaded: the user is told it runs code
    losses = [it["loss"] for it in res.suspects.items]
    assert all(v is not None and v >= 0 for v in losses)
    tops = [it for it in res.suspects.items if "top loss" in it["why"]]
    assert tops and min(it["loss"] for it in tops) >= max(it["loss"] for it in res.suspects.items if it not in tops)
    assert (
        res.run == result.run
        and len(res.suspects.items) == sum(1 for _ in open(env_roots[0] / recipe.name / "split.csv")) - 1
    )
