"""The package's layering, read from the source with ``ast``: which module may import which.

A reader can draw the house only if its floors stand on each other in one order. Every import counts —
at module level and inside functions, ``import x``, ``from x import y`` and relative imports — because a
function-level import is as much a dependency as a top-level one, only later. The order:

    errors < {hub, model} < checkpoint < data < {train, merge, downstream} < analysis < cli

A module imports from its own package or lower ones; train, merge and downstream stand side by side and
never import each other. Optional heavy packages are imported at module level only in analysis/, so that
every entry point runs on a plain ``pip install -e .``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

SRC = REPO / "src"
PACKAGE = "mmbert"

# The rank of each layer; equal ranks are siblings that must not import each other.
LAYERS: dict[str, int] = {
    "errors": 0,
    "hub": 1,
    "model": 1,
    "checkpoint": 2,
    "data": 3,
    "train": 4,
    "merge": 4,
    "downstream": 4,
    "analysis": 5,
    "cli": 6,
}
# Not in the core dependencies (pyproject.toml's extras): analysis/ alone may import them at module level.
OPTIONAL = frozenset({"matplotlib", "pandas", "wandb", "submitit", "nbformat", "nbclient"})


@dataclass(frozen=True)
class Edge:
    """One import statement's dependency of `source` on `target` (a package module, or the top-level name of
    another package)."""

    source: str
    target: str
    path: Path
    line: int
    module_level: bool  # runs when the module is imported (not inside a def, class or `if TYPE_CHECKING`)
    runs: bool  # runs at all (not under `if TYPE_CHECKING`)

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.source} -> {self.target}"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, from its __init__.py)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    """The packages Python imports before `name` itself: `a.b.c` -> `a`, `a.b`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module of a `from ... import` (relative imports counted from the importing package)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: dict[str, Path]
) -> set[str]:
    """What the statement makes `module` depend on: each package module it imports, with the packages whose
    ``__init__`` runs because of it (not those `module` itself lies in: they have started already), and the
    top-level name of any other package. A name that is no module of this package is kept as it is written,
    so that the layer check names an import of a module that does not exist."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        base = _absolute(node, module, path)
        # `from pkg import name`: the submodule pkg.name if there is one, else pkg's own body (its __init__).
        wanted = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
        ]
    own = set(_ancestors(module))
    names: set[str] = set()
    for target in wanted:
        if target.split(".")[0] != PACKAGE:
            names.add(target.split(".")[0])
            continue
        names.add(target)
        names.update(a for a in _ancestors(target) if a not in own)
    names.discard(module)
    return names


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement with whether it runs at module level (not in a def, lambda or class body) and
    whether it runs at all (not under ``if TYPE_CHECKING:``)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []

    def visit(node: ast.AST, module_level: bool, runs: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, module_level and runs, runs))
            return
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.body:
                visit(child, module_level, False)
            for child in node.orelse:
                visit(child, module_level, runs)
            return
        nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef)
        for child in ast.iter_child_nodes(node):
            visit(child, module_level and not nested, runs)

    visit(tree, True, True)
    return found


def import_edges() -> list[Edge]:
    """Every dependency of a package module, one edge per imported module and statement."""
    modules = module_files()
    edges = []
    for module, path in modules.items():
        for node, module_level, runs in _imports(ast.parse(path.read_text(), str(path))):
            for target in sorted(_imported(node, module, path, modules)):
                edges.append(Edge(module, target, path, node.lineno, module_level, runs))
    return edges


def layer_of(module: str) -> str | None:
    """The layer of a package module: its first component below the package (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def enter(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in sorted(graph):
        if root in index:
            continue
        enter(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    enter(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while component[-1:] != [node]:
                    component.append(stack.pop())
                    on_stack.discard(component[-1])
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _internal(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if e.target.split(".")[0] == PACKAGE]


def test_no_import_cycles():
    edges = [e for e in _internal(import_edges()) if e.runs]
    cycles = _cycles(edges)
    report = []
    for component in cycles:
        members = set(component)
        report.append(" <-> ".join(component))
        report.extend(f"    {e.where()}" for e in edges if e.source in members and e.target in members)
    assert not cycles, "import cycles between modules:\n" + "\n".join(report)


def test_every_module_has_a_layer():
    unassigned = sorted(m for m in module_files() if m != PACKAGE and layer_of(m) not in LAYERS)
    assert not unassigned, (
        f"modules outside every layer (give each one in LAYERS of {__file__}): {unassigned}"
    )


def test_imports_follow_the_layers():
    modules = module_files()
    bad = []
    for edge in _internal(import_edges()):
        source, target = layer_of(edge.source), layer_of(edge.target)
        if edge.target not in modules:
            bad.append(f"{edge.where()} (no such module)")
        elif (
            target is not None
            and source is not None  # the package root re-exports the public API (mmbert.encode)
            and source != target
            and (source not in LAYERS or target not in LAYERS or LAYERS[target] >= LAYERS[source])
        ):
            bad.append(edge.where())
    assert not bad, (
        "imports against the order errors < {hub, model} < checkpoint < data < {train, merge, downstream} "
        "< analysis < cli:\n" + "\n".join(bad)
    )


def test_optional_packages_are_imported_at_module_level_only_in_analysis():
    bad = [
        e.where()
        for e in import_edges()
        if e.module_level and e.target in OPTIONAL and layer_of(e.source) != "analysis"
    ]
    assert not bad, f"module-level imports of {sorted(OPTIONAL)} outside analysis/:\n" + "\n".join(bad)


def _loaded_on_import(start: str, edges: list[Edge]) -> set[str]:
    """Every module and top-level package that importing `start` loads: its module-level imports, closed."""
    module_level: dict[str, set[str]] = {}
    for edge in edges:
        if edge.module_level:
            module_level.setdefault(edge.source, set()).add(edge.target)
    loaded, todo = set(), [start, *_ancestors(start)]
    while todo:
        name = todo.pop()
        if name not in loaded:
            loaded.add(name)
            todo.extend(module_level.get(name, ()))
    return loaded


def test_entry_points_and_the_analysis_package_load_no_optional_package():
    """Every command runs on a plain ``pip install -e .``, and ``import mmbert.analysis`` needs no
    matplotlib until a plot is drawn."""
    edges = import_edges()
    commands = [m for m in module_files() if layer_of(m) == "cli"]
    assert {"mmbert.cli.train", "mmbert.cli.merge", "mmbert.cli.evaluate"} <= set(commands)
    for command in commands:
        assert not _loaded_on_import(command, edges) & OPTIONAL, command
    assert "matplotlib" not in _loaded_on_import("mmbert.analysis", edges)


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """The checks above are only as good as the walk: it must see what the layering is about."""
    source = (
        "from . import sibling\n"
        "from ..errors import ConfigError\n"
        "import mmbert.model.config as c\n"
        "from mmbert.data import load_tokenizer\n"
        "def f():\n"
        "    from mmbert.checkpoint import loading\n"
        "    import pandas\n"
        "if TYPE_CHECKING:\n"
        "    import mmbert.train\n"
    )
    names = ("mmbert", "mmbert.data", "mmbert.data.sibling", "mmbert.data.here", "mmbert.errors",
             "mmbert.model", "mmbert.model.config", "mmbert.checkpoint", "mmbert.checkpoint.loading",
             "mmbert.train")  # fmt: skip
    modules = dict.fromkeys(names, tmp_path / "here.py")
    found = {
        (target, module_level, runs)
        for node, module_level, runs in _imports(ast.parse(source))
        for target in _imported(node, "mmbert.data.here", tmp_path / "here.py", modules)
    }
    assert found == {
        ("mmbert.data.sibling", True, True),
        ("mmbert.errors", True, True),
        ("mmbert.model.config", True, True),
        ("mmbert.model", True, True),  # its __init__ runs first
        ("mmbert.data", True, True),  # a name from the package's own __init__: a dependency on it
        ("mmbert.checkpoint.loading", False, True),
        ("mmbert.checkpoint", False, True),
        ("pandas", False, True),
        ("mmbert.train", False, False),
    }
