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


# --- the rule applied end to end: validate, score and the leaderboard agree -----------------------

import csv  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from facebench.benchmark.submission_writer import write_submission  # noqa: E402
from facebench.cli import main  # noqa: E402
from facebench.datasets.dataset_file import FaceDataset  # noqa: E402
from facebench.datasets.generator import GeneratorSettings, generate  # noqa: E402
from facebench.leaderboard.table import read_board  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "synth.h5"
    generate(GeneratorSettings(n=2, size=32, seed=5), path)
    return path


def _submission(dataset, path, method):
    ds = FaceDataset(dataset)
    write_submission(path, ds.ids, ds.read("vertices"), method="placeholder", q=ds.read("q"), t=ds.read("t"))
    with h5py.File(path, "r+") as f:
        f.attrs["method"] = method
    return path


@pytest.mark.parametrize("method", [" ", "\u3000", np.bytes_("a\ud800".encode("utf-8", "surrogatepass")), np.bytes_(b"caf\xe9"), "x\x1by", "ok\u200e"])
def test_validate_and_score_agree_on_bad_names(dataset, tmp_path, method):
    sub = _submission(dataset, tmp_path / "s.h5", method)
    runner = CliRunner()
    validated = runner.invoke(main, ["submission", "validate", "--dataset", str(dataset), "--submission", str(sub)])
    scored = runner.invoke(main, ["score", "--dataset", str(dataset), "--submission", str(sub),
                                  "--out", str(tmp_path / "r"), "--leaderboard", str(tmp_path / "board")])
    assert "Traceback" not in validated.output + scored.output
    assert (validated.exit_code == 0) == (scored.exit_code == 0), (validated.output, scored.output)
    assert validated.exit_code in (0, 2) and scored.exit_code in (0, 2)
    if scored.exit_code == 0:  # whitespace only: unnamed, and the board reads back
        assert read_board(tmp_path / "board" / "leaderboard.csv")["method"].tolist() == ["unnamed"]
    else:
        assert scored.output.splitlines()[0].startswith("error: invalid submission") and "bad-method-name" in \
            scored.output.splitlines()[0]


def test_hostile_names_reach_the_board_quoted_and_neutralized(dataset, tmp_path):
    names = ["=HYPERLINK(\"http://evil\",\"x\")", "=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-1", "a,b",
             "quote\"inside", "'=already"]
    runner = CliRunner()
    for k, name in enumerate(names):
        sub = _submission(dataset, tmp_path / f"s{k}.h5", name)
        result = runner.invoke(main, ["score", "--dataset", str(dataset), "--submission", str(sub),
                                      "--out", str(tmp_path / f"r{k}"), "--leaderboard", str(tmp_path / "board")])
        assert result.exit_code == 0, result.output
    path = tmp_path / "board" / "leaderboard.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert all(len(row) == len(header) for row in rows)  # quoted: "a,b" is one cell
    cells = [row[header.index("method")] for row in rows[1:]]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    assert sorted(read_board(path)["method"]) == sorted(names)  # read back exactly
    built = runner.invoke(main, ["leaderboard", "build", *(str(tmp_path / f"r{k}") for k in range(len(names))),
                                 "--out", str(tmp_path / "built")])
    assert built.exit_code == 0, built.output
    html = (tmp_path / "built" / "index.html").read_text(encoding="utf-8")
    assert "quote&quot;inside" in html and "quote\"inside" not in html


def test_method_option_follows_the_rule(dataset, tmp_path):
    sub = _submission(dataset, tmp_path / "s.h5", "fine")
    result = CliRunner().invoke(main, ["score", "--dataset", str(dataset), "--submission", str(sub),
                                       "--method", "bad\nname", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.startswith("error: --method holds a control character")
