"""Shared fixtures: fresh data and runs roots, the registry clients, a browser, and a tiny real training run
(helpers are in helpers.py).

The test tiers follow from the fixtures a test uses, not from markers set by hand: a test that uses
`tiny_run` trains and fetches pinned registry artifacts (slow, registry), one that uses `registry` fetches
them (registry), one that uses `chromium` drives a real browser (browser). `make test-fast` leaves those
out, and CI runs it in a network namespace with only loopback, so a test that reaches out without one of
these fixtures fails there.
"""

from __future__ import annotations

import shutil

import pytest

from .helpers import TINY_RECIPE, write_recipe


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A fresh data root and runs root for one test."""
    monkeypatch.setenv("CHIQUITO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CHIQUITO_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="session")
def shared_roots(tmp_path_factory):
    """Data and runs roots shared by the slow tests, so registry artifacts are fetched once."""
    base = tmp_path_factory.mktemp("shared")
    return base / "data", base / "runs"


# fixture → the markers of every test that uses it (directly or through another fixture)
FIXTURE_MARKS = {
    "tiny_run": ("slow", "registry"),
    "registry": ("registry",),
    "chromium": ("browser",),
    "no_scroll_waits": ("browser",),  # google-images-download drives Chromium
}


def pytest_collection_modifyitems(config, items):
    """Mark each test by the fixtures it uses (FIXTURE_MARKS), so its tier cannot be forgotten."""
    for item in items:
        for fixture, marks in FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                for mark in marks:
                    item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def registry():
    """npm and apt-get, with which pinned npm and Debian artifacts are fetched (skips without them)."""
    missing = [tool for tool in ("npm", "apt-get") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} to fetch the pinned registry artifacts")


@pytest.fixture
def chromium():
    """Debian's chromium and chromium-driver (skips without them): app_in_chromium(app, profile, window)."""
    if not (shutil.which("chromedriver") and shutil.which("chromium")):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from .httpserver import app_in_chromium

    return app_in_chromium


@pytest.fixture(scope="session")
def tiny_run(registry, shared_roots, tmp_path_factory):
    """dataset + finetune of the tiny recipe, once per session: (recipe, FinetuneResult)."""
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune

    data, runs = shared_roots
    mp = pytest.MonkeyPatch()
    mp.setenv("CHIQUITO_DATA", str(data))
    mp.setenv("CHIQUITO_RUNS", str(runs))
    try:
        path = write_recipe(
            tmp_path_factory.mktemp("recipes"), TINY_RECIPE.format(name="tiny", aug_cycles=1), "tiny.toml"
        )
        recipe = load_recipe(path)
        build_dataset(recipe, log=lambda *_: None)
        result = finetune(recipe, log=lambda *_: None)
        yield recipe, result
    finally:
        mp.undo()


@pytest.fixture
def env_roots(shared_roots, monkeypatch):
    """Point a test at the shared roots (for tests that use tiny_run's outputs)."""
    data, runs = shared_roots
    monkeypatch.setenv("CHIQUITO_DATA", str(data))
    monkeypatch.setenv("CHIQUITO_RUNS", str(runs))
    return data, runs


@pytest.fixture
def no_scroll_waits(monkeypatch):
    """google-images-download waits about 15 s per results page (3 s after loading, 0.3 s per scroll key)
    for Google's lazy loading; the loopback pages are static. Its `time` module is swapped for one whose
    sleep returns at once, for this library only: the browser, its scrolling and parsing stay real."""
    import time

    gid = pytest.importorskip(
        "google_images_download.google_images_download",
        reason="needs the web extra: pip install 'chiquito-or-not[web]'",
    )

    class NoSleep:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(_seconds):
            return None

    monkeypatch.setattr(gid, "time", NoSleep())


@pytest.fixture
def terminal_ctrl_c():
    """SIGINT raises KeyboardInterrupt, as at a terminal, even when pytest was started as a shell's
    background job (which starts with SIGINT ignored, so Python never raises it); restored after."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
