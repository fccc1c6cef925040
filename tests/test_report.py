"""runs/NAME/report.html and README.md: written by finetune from the run's own files; a real headless Chromium
opens the page of a classifier's and of a detector's run at a phone's width, with every section there, no
console error and no request leaving the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SECTIONS = ("recipe", "data", "training", "results", "exports", "environment")


def _open_in_chromium(page: Path, profile: Path) -> tuple[dict, list, list]:
    """(section id → its text, console errors, URLs the page asked for) from headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from .httpserver import chrome_options

    opts = chrome_options(profile)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        # a phone's viewport (a headless window is at least 500 px wide)
        phone = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
        browser.get(page.resolve().as_uri())
        text = {s: browser.execute_script(f"return document.getElementById('{s}')?.innerText || ''") for s in SECTIONS}
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        asked = []
        for e in browser.get_log("performance"):
            msg = json.loads(e["message"])["message"]
            # what our page asked for (the browser's own start page, chrome://, is not the page's)
            if (
                msg["method"] == "Network.requestWillBeSent"
                and msg["params"].get("documentURL") == page.resolve().as_uri()
            ):
                asked.append(msg["params"]["request"]["url"])
        width, viewport = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
    finally:
        browser.quit()
    assert viewport <= 400 and width <= viewport, f"the page is {width} px wide in a {viewport} px phone viewport"
    return text, errors, asked


def _check_page(run: Path, tmp_path: Path, must: tuple[str, ...]) -> None:
    page = run / "report.html"
    html = page.read_text()
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html.split("<pre>")[0]
    text, errors, asked = _open_in_chromium(page, tmp_path / "profile")
    assert errors == [], errors
    assert all(u.startswith(("file://", "data:")) for u in asked) and asked, asked  # nothing left the file
    assert all(text[s].strip() for s in SECTIONS), {s: t[:80] for s, t in text.items()}
    for m in must:
        assert m in "\n".join(text.values()), m


@pytest.mark.browser
@pytest.mark.slow
def test_the_tiny_runs_page_opens_offline_on_a_phone(tiny_run, chromium, tmp_path):
    recipe, result = tiny_run
    run = Path(result.run)
    metrics = json.loads((run / "metrics.json").read_text())
    card = (run / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: fastai\npipeline_tag: image-classification")
    assert "## Metrics" in card and metrics["valid"]["accuracy_ci95"] and "a pickle" in card
    kept = metrics["kept"]
    _check_page(
        run,
        tmp_path,
        must=(
            f"Kept: stage {kept['stage']}, epoch {kept['epoch']}",
            "LR finder:",
            "The worst predictions, under your own file names",
            "face",
            "not_face",
        ),
    )


@pytest.mark.browser
@pytest.mark.slow
def test_a_detectors_page_from_chiquito_train(chromium, roots, tmp_path):
    from typer.testing import CliRunner

    from chiquito_or_not.cli import app

    from .test_train import _voc_folder

    folder = _voc_folder(tmp_path / "boxes", n=12, given=True)
    res = CliRunner().invoke(
        app, ["train", str(folder), "finetune.size=128", "finetune.bs=4", "epochs=3", "finetune.lr_find_iters=12"]
    )
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "boxes"
    assert "pipeline_tag: object-detection" in (run / "README.md").read_text()
    _check_page(run, tmp_path, must=("map_50", "object size", "export.json", "cat", "dog"))
