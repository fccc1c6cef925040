"""Shared fixtures: fresh data and runs roots, and a tiny real training run (helpers are in helpers.py)."""

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


@pytest.fixture(scope="session")
def tiny_run(shared_roots, tmp_path_factory):
    """dataset + finetune of the tiny recipe, once per session: (recipe, FinetuneResult)."""
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune

    if not (shutil.which("npm") and shutil.which("apt-get")):
        pytest.skip("needs npm and apt-get to fetch the pinned registry artifacts")
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
