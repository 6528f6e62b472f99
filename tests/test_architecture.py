"""docs/architecture.md stays true: the paths it names exist, and its layers are the imports'.

Imports are read from the source with ``ast``, those inside functions too. Imports under
``if TYPE_CHECKING:`` (annotations only, never run) are checked apart: the page lists the few
that point up.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ETL = ROOT / "etl"
DOC = ROOT / "docs/architecture.md"
TEXT = DOC.read_text("utf-8")
NAMED = sorted(set(re.findall(r"`((?:etl|tests|docs|integrations)/[^`\s]*)`", TEXT)))


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module(p): p for p in sorted(ETL.rglob("*.py"))}


def _layers() -> dict[str, int]:
    """Each module of etl/ and the layer the page puts it in (a package: all its modules)."""
    section = TEXT.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layer_of: dict[str, int] = {}
    twice = TWICE
    for number, paths in re.findall(r"^(\d)\. [^:]+:((?:.|\n(?!\d\. |\n))*)", section, re.M):
        for named in re.findall(r"`(etl/[^`]*)`", paths):
            target = ROOT / named
            files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
            for file in files:
                if _module(file) in layer_of:
                    twice.append(_module(file))
                layer_of[_module(file)] = int(number)
    return layer_of


TWICE: list[str] = []
LAYER_OF = _layers()


def _nodes(tree: ast.AST, *, type_only: bool) -> list[ast.AST]:
    """The run-time nodes of ``tree``, or (``type_only``) those under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    pending: list[tuple[ast.AST, bool]] = [(tree, False)]
    while pending:
        node, typing_only = pending.pop()
        if typing_only == type_only:
            found.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending += [(child, True) for child in node.body]
            pending += [(child, typing_only) for child in node.orelse]
            continue
        pending += [(child, typing_only) for child in ast.iter_child_nodes(node)]
    return found


def _imports(module: str, *, type_only: bool = False) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text("utf-8"), str(path))
    for node in _nodes(tree, type_only=type_only):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for name in names:
            parts = name.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts and ".".join(parts) != module:
                found.add(".".join(parts))
    return found


@pytest.mark.parametrize("named", NAMED)
def test_every_path_the_page_names_exists(named: str) -> None:
    """A path in docs/architecture.md is a file or folder of the repository."""
    assert (ROOT / named).exists(), f"docs/architecture.md names {named}, which does not exist"


def test_every_module_of_etl_has_a_layer() -> None:
    """A new module of etl/ is placed on the page before its first commit."""
    assert sorted(set(MODULES) - set(LAYER_OF)) == []


def test_no_module_is_in_two_layers() -> None:
    """Each module (or its package) is listed in one layer only."""
    assert TWICE == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_one_of_a_higher_layer(module: str) -> None:
    """Imports point down (or across one layer), as the page says."""
    higher = sorted(t for t in _imports(module) if LAYER_OF[t] > LAYER_OF[module])
    assert higher == []


def test_the_only_type_only_imports_that_point_up_are_the_ones_the_page_names() -> None:
    """Annotations may name a higher layer's type; the page lists each such import."""
    upward = sorted(
        f"`{MODULES[m].relative_to(ROOT)}` names `{MODULES[t].relative_to(ROOT)}`"
        for m in MODULES
        for t in _imports(m, type_only=True)
        if LAYER_OF[t] > LAYER_OF[m]
    )
    assert [line for line in upward if line not in TEXT] == []


def test_nothing_outside_the_cli_imports_it_but_python_m_etl() -> None:
    """etl/cli/ is the top: only etl/__main__.py imports it."""
    importers = sorted(
        m
        for m in MODULES
        if not m.startswith("etl.cli")
        and any(t == "etl.cli" or t.startswith("etl.cli.") for t in _imports(m))
    )
    assert importers == ["etl.__main__"]
