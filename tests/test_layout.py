"""The package's shape: no import cycle, shared layers that never reach into one task, every task
complete, and a recipe that names an unknown task refused in one line."""

import importlib.util
import inspect
from pathlib import Path

import pytest

from chiquito_or_not.core.errors import RecipeError
from chiquito_or_not.core.recipe import load_recipe
from chiquito_or_not.core.task_registry import TASKS, Task, get_task

BENCH = Path(__file__).resolve().parents[1] / "bench" / "import_layers.py"
SHARED = ("core", "data", "train", "deploy", "cli")


def _import_layers():
    spec = importlib.util.spec_from_file_location("import_layers", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_import_graph_has_no_cycle_and_few_layers():
    il = _import_layers()
    layers, cycle = il.layers(il.graph())
    assert cycle == []
    assert len(layers) <= 8  # 12 before the layout issue


def test_shared_modules_never_import_a_task():
    g = _import_layers().graph()
    shared = [m for m in g if m.removeprefix("chiquito_or_not.").split(".")[0] in SHARED]
    assert len(shared) > 25
    reach = {m: sorted(d for d in g[m] if d.startswith("chiquito_or_not.core.task_registry.")) for m in shared}
    assert {
        m: d for m, d in reach.items() if d
    } == {}  # they ask chiquito_or_not.core.task_registry for the recipe's task


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_has_every_part(name):
    task = get_task(name)
    assert task.name == name
    members = [n for n, v in vars(Task).items() if inspect.isfunction(v) and not n.startswith("_")]
    members += list(Task.__annotations__)
    assert len(members) > 15
    missing = [m for m in members if not hasattr(task, m)]
    assert missing == []
    assert set(task.rank) <= set(task.scores) and task.history_metrics


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

    assert set(FETCHERS) == set(SOURCE_KINDS.values()) and len(FETCHERS) == 8
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
