"""The tests read as a specification (issue 16): each states one behaviour, none asserts twice.

Every test has a docstring or a name that states one behaviour: a name joining two with
``_and_`` or ``_then_`` needs a docstring to say what the test is about. Compound asserts
(``assert a and b``) are ruff's PT018, enforced over tests/ by pyproject.toml (checked here so
that an ignore cannot switch it off unnoticed).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = sorted((ROOT / "tests").glob("test_*.py"))
JOINERS = ("_and_", "_then_")
MIN_WORDS = 3  # after "test_": "test_retries" names a topic, not a behaviour


def _tests(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module's test functions and the test methods of its Test* classes."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from (
                n
                for n in node.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                and n.name.startswith("test")
            )
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node


def _states_one_behaviour(name: str) -> bool:
    words = name.removeprefix("test").strip("_")
    padded = f"_{words}_"
    return len(words.split("_")) >= MIN_WORDS and not any(j in padded for j in JOINERS)


def unstated(source: str) -> list[str]:
    """The tests in ``source`` with neither a docstring nor a name stating one behaviour."""
    tree = ast.parse(source)
    return [
        f"{node.name} (line {node.lineno})"
        for node in _tests(tree)
        if not ast.get_docstring(node) and not _states_one_behaviour(node.name)
    ]


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_every_test_has_a_docstring_or_a_name_stating_one_behaviour(path: Path) -> None:
    """A test without a docstring is named for one behaviour, in at least three words."""
    assert unstated(path.read_text("utf-8")) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def test_a_late_token_is_refreshed(): pass", []),
        ('def test_x_and_y(): """One behaviour, said here."""', []),
        ("def test_it_stores_and_then_it_counts(): pass", ["test_it_stores_and_then_it_counts"]),
        ("def test_it_stores_then_counts(): pass", ["test_it_stores_then_counts"]),
        ("def test_retries(): pass", ["test_retries"]),
        ("class TestRun:\n    async def test_ok(self): pass", ["test_ok"]),
        ("def helper_and_more(): pass", []),
    ],
)
def test_the_name_check_flags_exactly_the_tests_without_one_behaviour(
    source: str, expected: list[str]
) -> None:
    """Joined, one- or two-word names without a docstring are flagged; helpers are not tests."""
    assert expected == [entry.split(" ")[0] for entry in unstated(source)]


def test_compound_asserts_are_left_to_ruff_pt018_over_every_test() -> None:
    """Ruff selects PT (so PT018, ``assert a and b``) and no per-file ignore under tests/ drops it."""
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["ruff"]["lint"]
    assert "PT" in ruff["select"]
    assert [r for r in ruff["ignore"] if "PT018".startswith(r)] == []
    dropped = {
        pattern: rules
        for pattern, rules in ruff.get("per-file-ignores", {}).items()
        if pattern.startswith("tests/") and any("PT018".startswith(r) for r in rules)
    }
    assert dropped == {}
