"""The shape of the ``etl`` package: no import cycle, and modules small enough to read.

Imports are read from the source (``ast``), those inside functions included: an import moved
into a function still makes two modules depend on each other, it only hides it. Imports under
``if TYPE_CHECKING:`` are left out (annotations only, never run). An import of a package's
submodule is an edge to that submodule, not to the package's ``__init__`` (a package importing
its own submodules to re-export their names is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ETL = ROOT / "etl"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ETL.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The ``etl`` module an imported name lives in (the longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def _imports(module: str, *, type_only_too: bool = False) -> set[str]:
    """The etl modules ``module`` imports at run time (and under TYPE_CHECKING if asked)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text("utf-8"), str(path))
    for node in ast.walk(tree) if type_only_too else _runtime_nodes(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return groups


def test_etl_has_no_import_cycle() -> None:
    """No two modules of etl/ import each other, directly or around a loop."""
    assert _cycles() == []


def _is_cli(module: str) -> bool:
    return module == "etl.cli" or module.startswith("etl.cli.")


def test_no_module_imports_the_cli() -> None:
    """The CLI is the top: outside etl/cli/, only ``python -m etl`` (etl/__main__.py) imports it."""
    importers = sorted(
        m for m, targets in GRAPH.items() if not _is_cli(m) and any(map(_is_cli, targets))
    )
    assert importers == ["etl.__main__"]


def test_the_cycle_check_sees_imports_hidden_in_functions() -> None:
    """The check is not blind to the trick that hid the old auth cycle."""
    assert "etl.auth.provider" in GRAPH["etl.auth.build"]  # imported inside build_auth


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("etl.sandbox.state", {"etl.sandbox.app", "etl.sandbox.transport", "etl.sandbox.box"}),
        ("etl.sandbox.app", {"etl.sandbox.transport", "etl.sandbox.box"}),
        ("etl.sandbox.transport", {"etl.sandbox.box"}),
    ],
)
def test_the_sandbox_imports_one_way(module: str, never: set[str]) -> None:
    """box -> transport -> app -> state: no module names one above it, not even for types."""
    assert sorted(_imports(module, type_only_too=True) & never) == []


def _lines(path: Path) -> int:
    return len(path.read_text("utf-8").splitlines())


AUTH_MODULES = sorted(p for p in ETL.joinpath("auth").glob("*.py"))


@pytest.mark.parametrize("path", AUTH_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_auth_module_is_a_few_hundred_lines_at_most(path: Path) -> None:
    """etl/auth/ is one module per concern: none over 300 lines."""
    assert _lines(path) <= 300


# Migration revisions are frozen history (never edited after release, and meant to carry their
# own SQL), so the reading budget does not apply to them.
_BUDGETED = [
    p for p in MODULES.values() if p.relative_to(ETL).parts[:2] != ("migrations", "versions")
]


@pytest.mark.parametrize("path", _BUDGETED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_in_etl_exceeds_500_lines(path: Path) -> None:
    """Every etl/ module at most 500 lines; one case per module, so every offender shows."""
    assert _lines(path) <= MAX_LINES
