"""docs/reliability.md names real tests, and its fault-case tables cover cases 1 to 52.

The page says, for each fault case, which test proves it, as
``tests/file.py::test_name`` (or ``tests/file.py::Class`` for a state
machine's test class). These tests read the page and the test modules' source
(nothing is imported or run), so a test renamed or removed without the page
being updated fails here instead of leaving the page quietly wrong.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE = REPO_ROOT / "docs" / "reliability.md"
#: The fault cases the page's tables list, in order.
CASES = range(1, 53)

_REFERENCE = re.compile(r"`(?P<path>tests/[\w/]+\.py)::(?P<name>\w+(?:::\w+)*)`")
_CASE_ROW = re.compile(r"^\|\s*(?P<number>\d+)\s*\|(?P<rest>.*)\|\s*$")


def page_text() -> str:
    return PAGE.read_text(encoding="utf-8")


def references(text: str) -> list[tuple[str, str]]:
    """Every ``tests/...py::name`` the text names, in order, as (path, name)."""
    return [(match["path"], match["name"]) for match in _REFERENCE.finditer(text)]


@functools.cache
def _module(path: str) -> ast.Module:
    return ast.parse((REPO_ROOT / path).read_text(encoding="utf-8"), filename=path)


def _top_level_names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Functions, classes and assigned names defined directly in ``body``."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return names


def defines(path: str, name: str) -> bool:
    """True when the test module at ``path`` defines ``name`` (``Class::method`` allowed)."""
    if not (REPO_ROOT / path).is_file():
        return False
    scope: list[ast.stmt] = _module(path).body
    found: ast.AST | None = None
    for part in name.split("::"):
        found = _top_level_names(scope).get(part)
        if found is None:
            return False
        scope = found.body if isinstance(found, ast.ClassDef) else []
    return True


def case_rows(text: str) -> dict[int, str]:
    """The fault-case table rows, by case number (the rest of the row as text)."""
    rows: dict[int, str] = {}
    for line in text.splitlines():
        match = _CASE_ROW.match(line)
        if match:
            number = int(match["number"])
            assert number not in rows, f"case {number} has two rows in {PAGE.name}"
            rows[number] = match["rest"]
    return rows


def test_the_page_names_tests() -> None:
    """The page is read as expected: it names many tests, in the form the check parses."""
    assert len(references(page_text())) >= len(CASES)


@pytest.mark.parametrize(
    ("path", "name"),
    sorted(set(references(page_text()))),
    ids=lambda value: str(value),
)
def test_every_test_the_page_names_exists(path: str, name: str) -> None:
    """A reference to a missing file or function means the page no longer tells the truth."""
    assert defines(path, name), f"docs/reliability.md names {path}::{name}, which does not exist"


def test_every_fault_case_has_a_row_with_a_test() -> None:
    """Cases 1 to 52 each have one row, in order, and each row names at least one test."""
    rows = case_rows(page_text())
    assert list(rows) == list(CASES)
    untested = [number for number, rest in rows.items() if not references(rest)]
    assert untested == [], f"fault cases without a named test: {untested}"


def test_the_check_itself_tells_real_names_from_missing_ones() -> None:
    """The checker finds a function, a class and a method, and refuses what is not there."""
    here = "tests/test_docs_reliability.py"
    assert defines(here, "test_the_check_itself_tells_real_names_from_missing_ones")
    assert defines("tests/test_journal_stateful.py", "TestEditedResumableBatches")
    assert defines(
        "tests/test_journal_stateful.py", "EditedResumableBatches::no_journal_row_is_lost"
    )
    assert not defines(here, "test_that_was_never_written")
    assert not defines("tests/test_no_such_file.py", "test_anything")
    assert references("see `tests/test_x.py::test_y` and `tests/a/b.py::C::d`") == [
        ("tests/test_x.py", "test_y"),
        ("tests/a/b.py", "C::d"),
    ]
