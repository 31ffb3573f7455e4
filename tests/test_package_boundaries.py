"""Package boundaries, checked on every import statement (top-level or inside a function) of the source tree.

The runtime `mmrag/` is what every deployable image carries: it imports no deployable and no tooling package, and
none of the dependencies only the local stack needs (the `local` extra). Deployables import no tooling package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DEPLOYABLES = ("producers", "consumers", "index_updater", "query_service")
TOOLING = ("operator_cli", "local_stack", "bench", "tests", "deploy")
LOCAL_ONLY = ("moto", "milvus_lite", "easy_vqa", "watchdog")  # the `local` extra of pyproject.toml


def imported_modules(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (absolute names; relative imports resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(_resolve(path.relative_to(root), node))
        found[str(path.relative_to(root))] = names
    return found


def _resolve(relative_path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = list(relative_path.with_suffix("").parts)[: -node.level]
    return ".".join([*parts, *([node.module] if node.module else [])])


def violations(package: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    return sorted(
        f"{file} imports {name}"
        for file, names in imported_modules(package, root).items()
        for name in names
        if name.split(".")[0] in forbidden
    )


def test_runtime_imports_no_deployable_no_tooling_no_local_only_dependency() -> None:
    assert imported_modules("mmrag"), "the runtime package was not found"
    assert violations("mmrag", DEPLOYABLES + TOOLING + LOCAL_ONLY) == []


@pytest.mark.parametrize("package", DEPLOYABLES)
def test_deployables_import_no_tooling(package: str) -> None:
    assert violations(package, TOOLING) == []


def test_the_check_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "ok.py").write_text("import json\nfrom pkg import sub\n")
    lazy = "def f():\n    from local_stack.stack import Deployment\n    import moto.server\n    from .. import ok\n"
    (tmp_path / "pkg" / "sub" / "lazy.py").write_text(lazy)
    assert violations("pkg", TOOLING + LOCAL_ONLY, tmp_path) == [
        "pkg/sub/lazy.py imports local_stack.stack",
        "pkg/sub/lazy.py imports moto.server",
    ]
    assert imported_modules("pkg", tmp_path)["pkg/sub/lazy.py"] == {"local_stack.stack", "moto.server", "pkg"}


def module_name(path: str) -> str:
    """'query_service/ask.py' -> 'query_service.ask'; a package's __init__.py is the package."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_circles(package: str, root: Path = ROOT) -> list[set[str]]:
    """The circles (strongly connected sets of several modules) of ``package``'s imports among its own modules,
    every import counted (top-level, in a function, under TYPE_CHECKING)."""
    imports = imported_modules(package, root)
    modules = {module_name(p) for p in imports}
    graph = {
        module_name(path): {n for n in names if n in modules} - {module_name(path)} for path, names in imports.items()
    }
    return [c for c in _strongly_connected(graph) if len(c) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                circle = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    circle.add(member)
                    if member == node:
                        break
                found.append(circle)
    return found


@pytest.mark.parametrize("package", ["mmrag", *DEPLOYABLES, "operator_cli", "local_stack"])
def test_every_package_is_a_tree_of_imports(package: str) -> None:
    """A package's settings and shared result types live at its bottom and nothing imports upward: a circle means
    a module that is missing (STYLE: a package is a tree)."""
    assert import_circles(package) == []


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import C\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n")
    (pkg / "d.py").write_text("from pkg.a import A\n")
    assert import_circles("pkg", tmp_path) == [{"pkg.a", "pkg.b", "pkg.c"}]
