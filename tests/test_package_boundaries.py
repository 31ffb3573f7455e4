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
TOOLING = ("operator_cli", "local_stack", "bench", "tests")
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
