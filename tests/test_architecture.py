"""The import graph of ``src/convscope``: no cycle, lazy or not (only ``if TYPE_CHECKING:`` blocks are left out),
and every import points down the layers of docs/DESIGN.md."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "convscope"

# Lowest first; a module may import its own layer and the ones below. The first matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "registry", "checks", "console", "config", "run"),
    ("data", "models", "metrics", "distributed", "adapt"),
    ("engine",),
    ("tasks",),
    ("explain",),
    ("report",),
    ("segment", "serve", "detect"),
    ("api", "recipe_keys"),
    ("bench",),
    ("cli", "__main__", ""),  # "" is the package itself (convscope/__init__.py)
]


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """Every convscope module ``module`` imports, at the top or inside functions, outside TYPE_CHECKING blocks."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()

    def resolve(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(resolve(a.name) for a in child.names if a.name.split(".")[0] == "convscope")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package[: len(package) - (child.level - 1)]
                    base = ".".join([*up, base] if base else up)
                if base.split(".")[0] == "convscope":
                    for alias in child.names:
                        name = f"{base}.{alias.name}"
                        found.add(resolve(name) if name in modules else resolve(base))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def layer_of(module: str) -> int:
    inner = module.removeprefix("convscope").removeprefix(".")
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if inner == prefix or (prefix and inner.startswith(prefix + ".")):
                return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/DESIGN.md)")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from convscope.api import LoadedRun\n"
        "def f():\n    from convscope.bench import runs\n    from convscope import api\n"
    )
    modules = {"convscope", "convscope.api", "convscope.bench", "convscope.bench.runs"}
    assert imports_of("convscope.m", source, modules) == {"convscope.bench.runs", "convscope.api"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_import_points_down_the_layers():
    graph = import_graph()
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []
