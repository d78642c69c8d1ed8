"""Import layering of the facebench package: no import circles, no upward imports.

Every module of the package is parsed with :mod:`ast` (nothing is imported); each ``import`` and
``from ... import`` statement counts, at module level or inside a function, class or
``if TYPE_CHECKING:`` block, with relative imports resolved. ``from package import name`` counts
as an import of ``package.name`` when that is a module, else of ``package``. Not counted: the
parent packages' ``__init__`` that Python runs before a submodule (a package ``__init__`` that
imports its own submodules is the usual layout, not a circle), and names given to
``importlib.import_module`` at run time (the model registry of :mod:`facebench.models`).

Two rules are checked on the resulting module graph:

(a) no strongly connected component holds more than one module (no import circle, however
    indirect);
(b) a module imports only modules of its own layer or lower ones (:data:`LAYERS`, lowest
    first); every module of the package belongs to exactly one layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "facebench"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, lowest first: a module belongs to the layer naming it or its nearest enclosing
#: package (``facebench`` itself names only the root ``__init__``, which holds ``__version__``).
LAYERS: list[tuple[str, ...]] = [
    # 0: foundations: errors, files, hashing, conventions, geometry, landmark sets, mesh files
    ("facebench", "facebench.errors", "facebench.atomic", "facebench.hashing", "facebench.device", "facebench.threads",
     "facebench.cache", "facebench.download", "facebench.conventions", "facebench.lazy_torch", "facebench.geometry",
     "facebench.landmarks", "facebench.safe_hdf5", "facebench.mesh", "facebench.meshio_vrml", "facebench.meshio"),
    # 1: face models and rendering
    ("facebench.models", "facebench.render"),
    # 2: dataset files, generators and real-data preparation
    ("facebench.datasets",),
    # 3: the benchmark: submissions, validation, alignment, metrics, scoring
    ("facebench.benchmark",),
    # 4: baselines and the leaderboard
    ("facebench.baselines", "facebench.leaderboard"),
    # 5: the scoring service (HTTP API, job queue, workers)
    ("facebench.serve",),
    # 6: the command line and the demo
    ("facebench.commands", "facebench.cli", "facebench.demo", "facebench.__main__"),
]


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    """Dotted name of a source file of the package (``__init__.py``: the package itself)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name → source file."""
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute name of a (possibly relative) import target seen in ``module``."""
    if not level:
        return target or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def imports_of(module: str, source: str, modules: set[str], is_package: bool = False) -> set[str]:
    """The package modules that ``source`` (the text of ``module``) imports, anywhere in it."""
    found: set[str] = set()

    def add(name: str) -> None:
        # the deepest package module the name denotes (``facebench.meshio.read_mesh`` → meshio)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module → the package modules it imports (module-level and function-level imports)."""
    files = package_modules(root, package)
    names = set(files)
    return {name: imports_of(name, path.read_text(encoding="utf-8"), names, path.name == "__init__.py")
            for name, path in files.items()}


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components sorted, each sorted by name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each an import circle)."""
    return [c for c in strongly_connected_components(graph) if len(c) > 1]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer naming ``module`` or its nearest enclosing package below the root
    (the root name ``facebench`` stands for its ``__init__`` only); None when no layer does."""
    parts = module.split(".")
    candidates = [".".join(parts[:n]) for n in range(len(parts), 1, -1)] or [module]
    for name in candidates:
        for level, members in enumerate(layers):
            if name in members:
                return level
    return None


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """``"a (layer i) imports b (layer j)"`` for every import from a lower layer to a higher one."""
    found = []
    for module in sorted(graph):
        mine = layer_of(module, layers)
        for target in sorted(graph[module]):
            theirs = layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    return found


# ---------------------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    unassigned = sorted(m for m in graph if layer_of(m) is None)
    assert not unassigned, f"modules in no layer of LAYERS (add them): {', '.join(unassigned)}"


def test_layers_name_existing_modules(graph):
    stale = sorted(name for members in LAYERS for name in members
                   if name not in graph and not any(m.startswith(name + ".") for m in graph))
    assert not stale, f"LAYERS names modules that do not exist: {', '.join(stale)}"


def test_layers_are_disjoint():
    names = [name for members in LAYERS for name in members]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"names in more than one layer: {', '.join(twice)}"


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import circles (strongly connected components):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_upward_imports(graph):
    upward = upward_imports(graph)
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_root_init_holds_only_the_version():
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    statements = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert len(statements) == 1 and isinstance(statements[0], ast.Assign), "facebench/__init__.py holds only __version__"
    assert [t.id for t in statements[0].targets] == ["__version__"]


# ---------------------------------------------------------------------------------------- the checker itself
def test_checker_finds_a_synthetic_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}, "p.e": {"p.e"}}
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert import_cycles({"p.a": {"p.b"}, "p.b": set()}) == []


def test_checker_finds_an_upward_import():
    layers = [("facebench", "facebench.low"), ("facebench.high",)]
    graph = {"facebench.low": {"facebench.high.x"}, "facebench.high.x": {"facebench.low"}}
    assert upward_imports(graph, layers) == ["facebench.low (layer 0) imports facebench.high.x (layer 1)"]


def test_checker_reads_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub.b import g\n    return g\n")
    (package / "sub" / "b.py").write_text("from ..a import f\nfrom .. import c\n")
    (package / "c.py").write_text("import pkg.sub.b as b\n")
    graph = import_graph(package, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.c": {"pkg.sub.b"},
                     "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a", "pkg.c"}}
    assert import_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
