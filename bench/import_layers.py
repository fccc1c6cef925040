"""The package's import graph: how many layers it has, and whether it has a cycle (exit 1 if it does).

Run: .venv/bin/python bench/import_layers.py [--show]
Counts every import of a module of this package, at the top of a file or inside a function (not those
under `if TYPE_CHECKING:`, which never run): a layer is
a set of modules that import only modules of lower layers (layer 1 imports none of the package).
"""

import argparse
import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "chiquito_or_not"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules `path` imports (relative or absolute, anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):  # an `if TYPE_CHECKING:` block never runs: its imports are not edges
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None)
            if isinstance(child, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING":
                child.body = [ast.Pass()]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # `from . import x` may name a module
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in known else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    return {name: imports_of(p, name, known) for name, p in files.items()}


def layers(g: dict[str, set[str]]) -> tuple[list[list[str]], list[str]]:
    """Modules by layer; and the modules left in a cycle (empty when there is none)."""
    left, placed, out = dict(g), set(), []
    while left:
        ready = sorted(m for m, deps in left.items() if deps <= placed)
        if not ready:
            return out, sorted(left)
        out.append(ready)
        placed.update(ready)
        for m in ready:
            del left[m]
    return out, []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", action="store_true", help="list the modules of each layer")
    a = ap.parse_args()
    g = graph()
    ls, cycle = layers(g)
    print(f"{len(g)} modules, {len(ls)} layers, {sum(map(len, g.values()))} imports between them")
    if a.show:
        for i, mods in enumerate(ls, 1):
            print(f"  {i:>2}: {', '.join(m.removeprefix('chiquito_or_not.') for m in mods)}")
    if cycle:
        print(f"CYCLE among: {', '.join(cycle)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
