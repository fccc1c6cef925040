"""chiquito label: the page lists what lacks boxes, refuses foreign writers and bad boxes, keeps one page per
dataset, survives a torn journal, and a box drawn with the mouse in headless Chromium is trained on by the
next `chiquito dataset` (the user's files untouched)."""

from __future__ import annotations

import json

import pytest

from chiquito_or_not.core.errors import DataError

from .test_detect_data import all_boxes, build, manifest
from .test_detect_layouts import yolo_ultralytics


@pytest.fixture
def unlabelled(tmp_path, roots):
    """A YOLO dataset whose img3 has no label file: the dataset stage rejects it (no_annotation)."""
    ds = tmp_path / "ds"
    yolo_ultralytics(ds)
    (ds / "labels" / "train" / "img3.txt").unlink()
    summary, recipe = build(tmp_path, roots, ds, fmt="auto")
    assert manifest(summary.root)["img3.jpg"]["reason"] == "no_annotation"
    return recipe, summary.root, ds


def _app(recipe):
    from chiquito_or_not.stages.label import create_label_app, find_label_items

    return create_label_app(find_label_items(recipe, log=lambda *_: None))


def test_label_api_lists_checks_and_journals(unlabelled):
    from fastapi.testclient import TestClient

    recipe, root, ds = unlabelled
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    app_ = _app(recipe)
    try:
        c = TestClient(app_, base_url="http://127.0.0.1:8002")
        token = c.get("/").text.split('const TOKEN = "')[1].split('"')[0]
        items = c.get("/api/items").json()["items"]
        assert [it["path"].rsplit("/", 1)[-1] for it in items] == ["img3.jpg"] and items[0]["boxes"] == []
        sha, hdr = items[0]["sha256"], {"X-Label-Token": token}
        assert c.get(f"/image/{sha}").headers["content-type"] == "image/jpeg"
        assert c.get("/image/" + "0" * 64).status_code == 404
        body = {"sha256": sha, "boxes": [["cat", 40, 30, 120, 100]]}
        assert c.post("/api/boxes", json=body).status_code == 403  # another site's page has no token
        rebound = TestClient(app_, base_url="http://evil.example:8002")
        assert rebound.post("/api/boxes", json=body, headers=hdr).status_code == 400  # DNS rebinding
        for bad in (
            [["dog", 40, 30, 120, 100]],  # not a label of the recipe
            [["cat", 40, 30, 220, 100]],  # outside the 200x150 image
            [["cat", 120, 30, 40, 100]],  # x1 < x0
            [["cat", "40", 30, 120, 100]],
            "cat",
        ):
            r = c.post("/api/boxes", json={"sha256": sha, "boxes": bad}, headers=hdr)
            assert r.status_code == 400 and r.json()["error"], bad
        nan = '{"sha256": "%s", "boxes": [["cat", NaN, 30, 120, 100]]}' % sha
        assert c.post("/api/boxes", content=nan, headers=hdr | {"content-type": "application/json"}).status_code == 400
        deep = "[" * 5000 + "]" * 5000
        r = c.post("/api/boxes", content=deep, headers=hdr | {"content-type": "application/json"})
        assert r.status_code == 400
        assert not (root / "box_labels.csv").exists()
        with pytest.raises(DataError, match="is open in another label page"):
            _app(recipe)  # a second page on the same dataset
        ok = c.post("/api/boxes", json=body, headers=hdr)
        assert ok.status_code == 200 and ok.json()["boxes"] == [["cat", 40.0, 30.0, 120.0, 100.0]]
    finally:
        app_.state.journal.close()
    # a torn line (a crash mid-write) is skipped with a message; the saved box still applies
    with open(root / "box_labels.csv", "a") as f:
        f.write(f'{sha},"half a li')
    logged = []
    from chiquito_or_not.stages.dataset import build_dataset

    build_dataset(recipe, log=logged.append)
    assert any("box_labels.csv: skipped line 3" in line for line in logged), logged
    assert all_boxes(root)["img3.jpg"] == [["cat", 40.0, 30.0, 80.0, 70.0]]
    assert {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before  # the user's files as they were


def test_a_box_drawn_with_the_mouse_is_trained_on(chromium, unlabelled, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from chiquito_or_not.stages.dataset import build_dataset

    from .httpserver import app_in_chromium

    recipe, root, _ = unlabelled
    app_ = _app(recipe)
    try:
        with app_in_chromium(app_, tmp_path / "profile", "1100,800") as (browser, url):
            browser.get(f"{url}/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: "1 of 1: img3.jpg" in b.find_element(By.ID, "status").text)
            canvas = browser.find_element(By.ID, "canvas")
            wait.until(lambda b: b.execute_script("return img.complete && canvas.width > 10"))
            scale = browser.execute_script("return scale")
            w, h = canvas.size["width"], canvas.size["height"]

            def to(x, y):  # image pixels -> offset from the canvas's centre
                return round(x * scale - w / 2), round(y * scale - h / 2)

            canvas.send_keys("2")  # label 2: cup
            chain = ActionChains(browser)
            chain.move_to_element_with_offset(canvas, *to(30, 20)).click_and_hold()
            chain.move_to_element_with_offset(canvas, *to(90, 60)).move_to_element_with_offset(canvas, *to(130, 110))
            chain.release().perform()
            # a second box, then undo it
            chain = ActionChains(browser)
            chain.move_to_element_with_offset(canvas, *to(150, 10)).click_and_hold()
            chain.move_to_element_with_offset(canvas, *to(190, 40)).release().perform()
            canvas.send_keys("z")
            assert browser.execute_script("return boxes.length") == 1
            canvas.send_keys(Keys.ENTER)
            wait.until(lambda b: "saved 1 box(es) for img3.jpg" in b.find_element(By.ID, "status").text)
            browser.save_screenshot(str(tmp_path / "label.png"))
    finally:
        app_.state.journal.close()
    line = (root / "box_labels.csv").read_text().splitlines()[-1]
    [[lab, x0, y0, x1, y1]] = json.loads(line.split(',"', 1)[1].rsplit('",', 1)[0].replace('""', '"'))
    assert lab == "cup" and max(abs(a - b) for a, b in zip((x0, y0, x1, y1), (30, 20, 130, 110))) <= 2
    summary = build_dataset(recipe, log=lambda *_: None)
    [(got, *bbox)] = all_boxes(summary.root)["img3.jpg"]
    assert got == "cup" and bbox == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.02)
    assert manifest(summary.root)["img3.jpg"]["status"] == "kept"
    assert any("1  image(s) with boxes from box_labels.csv" in n for n in summary.notes)
