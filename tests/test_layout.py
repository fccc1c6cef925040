"""The package's shape: floors whose imports all point down and form no cycle, lazy imports only of what is
heavy, unique module names, every task complete, and a recipe that names an unknown task refused in one line."""

from collections import Counter
from pathlib import Path

import pytest

from chiquito_or_not.core.errors import RecipeError
from chiquito_or_not.core.recipe import load_recipe

from . import import_graph as ig


@pytest.fixture(scope="module")
def graph():
    return ig.graph()


def test_the_import_graph_has_no_cycle(graph):
    edges, _ = graph
    layers, cycle = ig.layers(edges)
    assert cycle == []
    assert len(edges) > 60 and len(layers) <= 10


def test_every_import_points_down_a_floor(graph):
    """cli → stages → tasks → {train, data} → core: no import from a lower floor to a higher one, none
    between train and data, none between two tasks."""
    edges, _ = graph
    assert set(map(ig.folder, edges)) <= set(ig.FLOORS) | {"chiquito_or_not"}
    assert ig.upward_imports(edges) == []


def test_the_checks_catch_what_they_forbid():
    """Upward, sideways and task-to-task arrows, a cycle and a lazy light import, on a made-up graph."""
    e = ig.Edge
    made_up = {
        "chiquito_or_not.core.recipe": [e("chiquito_or_not.core.recipe", "chiquito_or_not.stages.dataset", 3, True)],
        "chiquito_or_not.data.clean": [e("chiquito_or_not.data.clean", "chiquito_or_not.train.runs", 4, False)],
        "chiquito_or_not.tasks.detect.ssd": [
            e("chiquito_or_not.tasks.detect.ssd", "chiquito_or_not.tasks.classify.class_head", 5, True)
        ],
        "chiquito_or_not.stages.dataset": [e("chiquito_or_not.stages.dataset", "chiquito_or_not.core.recipe", 6, True)],
    }
    assert len(ig.upward_imports(made_up)) == 3
    loop = {"a": [e("a", "b", 1, True)], "b": [e("b", "a", 2, False)], "c": [e("c", "a", 3, True)]}
    assert ig.layers(loop)[1] == ["a", "b", "c"]  # c waits on the cycle too
    assert ig.light_lazy_imports(made_up, heavy=set()) == ["chiquito_or_not.data.clean:4 -> chiquito_or_not.train.runs"]


def test_imports_inside_functions_are_only_of_heavy_modules(graph):
    """A function-level import is for what is slow or optional (torch, fastai, a runtime, a browser): never
    for a light module of the package, and never to dodge a cycle."""
    edges, third = graph
    heavy = ig.heavy_modules(edges, third)
    assert {"chiquito_or_not.stages.finetune", "chiquito_or_not.tasks.detect.ssd"} <= heavy
    assert "chiquito_or_not.core.errors" not in heavy and "chiquito_or_not.core.recipe" not in heavy
    assert ig.light_lazy_imports(edges, heavy) == []


def test_module_basenames_are_unique():
    names = Counter(p.name for p in ig.PKG.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert [n for n, k in names.items() if k > 1] == []


def test_an_unknown_task_is_one_line(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(
        'task = "detectt"\n[classes.a]\nsources = [{kind = "folder", path = "a"}]\n'
        '[classes.b]\nsources = [{kind = "folder", path = "b"}]\n'
    )
    with pytest.raises(RecipeError, match=r"'task' = unknown task 'detectt'; choose one of classify") as e:
        load_recipe(p)
    assert "\n" not in str(e.value)
    p.write_text(p.read_text().replace('task = "detectt"\n', ""))
    assert load_recipe(p).task == "classify"  # the default


def test_every_import_inside_the_package_resolves():
    """Imports inside functions run only when their function does: check every one of them here."""
    import ast
    import importlib

    pkg_root = Path(__file__).resolve().parents[1]
    bad = []
    for p in sorted((pkg_root / "chiquito_or_not").rglob("*.py")):
        parts = p.relative_to(pkg_root).with_suffix("").parts
        package = list(parts if p.name == "__init__.py" else parts[:-1])
        if p.name == "__init__.py":
            package = list(parts[:-1])
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            try:
                mod = importlib.import_module(target)
            except ImportError as e:
                bad.append(f"{p.name}: {target} ({e})")
                continue
            for alias in node.names:
                if not hasattr(mod, alias.name) and importlib.util.find_spec(f"{target}.{alias.name}") is None:
                    bad.append(f"{p.name}: {target}.{alias.name}")
    assert bad == []


def test_every_source_kind_has_one_fetcher_and_a_missing_one_fails_at_import():
    import subprocess
    import sys

    from chiquito_or_not.core.recipe import SOURCE_KINDS
    from chiquito_or_not.data.sources import FETCHERS

    assert set(FETCHERS) == set(SOURCE_KINDS.values()) and len(FETCHERS) == 9
    script = (
        "import dataclasses\n"
        "from chiquito_or_not.core import recipe\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class ZipSource:\n    kind: str = 'zip'\n"
        "recipe.SOURCE_KINDS['zip'] = ZipSource\n"
        "import chiquito_or_not.data.sources\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "source kinds without a fetcher: ZipSource" in r.stderr


def test_every_reason_in_the_code_is_in_the_enumeration():
    """A rejection reason spelt as a bare string (not core.reasons.Reason) would bypass the enumeration."""
    import re

    from chiquito_or_not.core.reasons import Reason

    pkg = Path(__file__).resolve().parents[1] / "chiquito_or_not"
    words = {r.value for r in Reason}
    bare = []
    for p in sorted(pkg.rglob("*.py")):
        if p.name == "reasons.py":
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            for w in re.findall(r'"([a-z_]+)"', line):
                if w in words and ("reason" in line or "return" in line or "NotRegular" in line):
                    bare.append(f"{p.name}:{n}: {w}")
    assert bare == []


def test_a_model_pickled_before_the_modules_moved_still_loads():
    """A detector's model.pkl names its layers' modules (tasks/detect/net.py before this layout): loading
    maps each moved module to where it lives now."""
    import importlib.util
    import io
    import pickle

    from chiquito_or_not.core import model_loader
    from chiquito_or_not.tasks.detect import ssd

    old = b"\x80\x02cchiquito_or_not.tasks.detect.net\nTapBody\nq\x00."  # what an old file holds
    assert model_loader._PICKLE.Unpickler(io.BytesIO(old)).load() is ssd.TapBody
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(old)  # a plain unpickler no longer finds it
    assert all(importlib.util.find_spec(new) for new in model_loader.MOVED_MODULES.values())


def test_no_function_is_above_the_complexity_gate():
    from .complexity_gate import MAX_CC, over_the_gate

    assert over_the_gate() == [], f"split these into named steps (radon CC <= {MAX_CC})"
    assert over_the_gate(MAX_CC - 1), "the gate sees the package's functions"
