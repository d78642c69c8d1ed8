"""The one method-name rule (facebench.benchmark.method_name) and CSV formula neutralization."""

from __future__ import annotations

import pytest

from facebench.benchmark.method_name import (
    MAX_LENGTH,
    InvalidMethodName,
    check_method_name,
    csv_safe,
    csv_unescape,
    method_name_problem,
)
from facebench.errors import FacebenchError


@pytest.mark.parametrize("name, expected", [
    ("mine", "mine"), ("  padded\t", "padded"), ("Ünïcode 面 v2.1", "Ünïcode 面 v2.1"), ("a,b", "a,b"),
    ("=HYPERLINK(\"http://x\")", "=HYPERLINK(\"http://x\")"), ("x" * MAX_LENGTH, "x" * MAX_LENGTH),
    (b"bytes ok", "bytes ok"),
])
def test_accepted_names_are_trimmed(name, expected):
    assert method_name_problem(name) is None
    assert check_method_name(name) == expected


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("   \t ", "empty"), ("x" * (MAX_LENGTH + 1), "more than"), ("a\x00b", "control"),
    ("a\nb", "control"), ("a\x1b[31mred", "control"), ("a\u202eb", "format"), ("a\ud800b", "surrogate"),
    (b"\xff\xfe", "UTF-8"), ("a\u2028b", "separator"), ("a\u00a0b", "separator"), (42, "not text"),
    ("a\x85b", "control"),
])
def test_refused_names_say_why(name, why):
    assert why in method_name_problem(name)
    with pytest.raises(InvalidMethodName, match=why) as caught:
        check_method_name(name)
    assert isinstance(caught.value, FacebenchError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("cell", ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\tx", "\rx"])
def test_formula_cells_are_neutralized_and_read_back(cell):
    safe = csv_safe(cell)
    assert safe == "'" + cell and csv_unescape(safe) == cell


def test_plain_cells_are_unchanged():
    for cell in ("mine", "a,b", 3.5, None):
        assert csv_safe(cell) == cell and csv_unescape(csv_safe(cell)) == cell
    for cell in ("'quoted", "'=x"):  # a leading quote is escaped too, so reading back is exact
        assert csv_unescape(csv_safe(cell)) == cell
