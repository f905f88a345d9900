"""The package keeps its shape: no import from a lower layer into a higher one, no import cycles.

The layer order is read from ``docs/architecture.md`` (its numbered list under "Layers"),
so the document and the code cannot drift apart. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vcmr"
DOC = ROOT / "docs" / "architecture.md"


def read_layers(text: str) -> Dict[str, int]:
    """``{top-level name: layer number}`` from the numbered list after the ``## Layers`` heading."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: Dict[str, int] = {}
    for line in section.splitlines():
        m = re.match(r"^(\d+)\.\s+(.*)$", line.strip())
        if m:
            for name in re.findall(r"`([a-z_]+)`", m.group(2).split("—")[0]):
                layers[name] = int(m.group(1))
    return layers


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, modules: Set[str]) -> Set[str]:
    """Every ``vcmr`` module ``path`` imports.

    ``from vcmr.a import b`` counts as importing ``vcmr.a.b`` when that is a module (a
    submodule import) and ``vcmr.a`` otherwise (a name defined in it).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: Set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "vcmr")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "vcmr":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return out


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """``{module: modules of the package it imports}``, restricted to modules that exist."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        graph[mod] = {m for m in imports_of(path, mod, set(files)) if m in files and m != mod}
    return graph


def layer_of(module: str, layers: Dict[str, int]) -> Tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "vcmr"
    if top not in layers:
        raise KeyError(f"{module}: package '{top}' is not in the layer list of {DOC.name}")
    return top, layers[top]


def upward_imports(graph: Dict[str, Set[str]], layers: Dict[str, int]) -> List[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        top, level = layer_of(mod, layers)
        for dep in sorted(deps):
            dtop, dlevel = layer_of(dep, layers)
            if dlevel > level:
                bad.append(f"{mod} (layer {level}, {top}) imports {dep} (layer {dlevel}, {dtop})")
    return bad


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def layers() -> Dict[str, int]:
    got = read_layers(DOC.read_text(encoding="utf-8"))
    assert got, f"{DOC} has no numbered layer list under '## Layers'"
    return got


def test_every_package_has_a_layer(layers):
    tops = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    tops |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert tops - set(layers) == set(), f"add these to the layer list of {DOC}"


def test_no_import_goes_up_a_layer(layers):
    assert upward_imports(import_graph(PACKAGE), layers) == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_checker_catches_an_upward_import_and_a_cycle(tmp_path, layers):
    pkg = tmp_path / "vcmr"
    for sub in ("models", "trainers"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from vcmr.trainers.b import g\n")
    (pkg / "trainers" / "b.py").write_text("from vcmr.models import a\n")
    graph = import_graph(pkg)
    assert graph["vcmr.models.a"] == {"vcmr.trainers.b"}
    assert upward_imports(graph, layers) == [
        f"vcmr.models.a (layer {layers['models']}, models) imports vcmr.trainers.b (layer {layers['trainers']}, trainers)"
    ]
    assert cycles(graph) == [["vcmr.models.a", "vcmr.trainers.b"]]
