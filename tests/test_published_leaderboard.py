"""The committed leaderboard/ equals a rebuild from its committed results (the README's command)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

BOARD = Path(__file__).resolve().parents[1] / "leaderboard"

pytestmark = pytest.mark.slow


def test_committed_board_equals_a_rebuild(tmp_path):
    from facebench.leaderboard import build_leaderboard

    if not (BOARD / "results").is_dir():
        pytest.skip("no committed results in leaderboard/results")
    shutil.copytree(BOARD / "results", tmp_path / "results")  # same layout: same relative links
    board = build_leaderboard([tmp_path / "results"], tmp_path, fresh=True)
    assert not board.warnings
    assert (tmp_path / "leaderboard.csv").read_text() == (BOARD / "leaderboard.csv").read_text()
    assert (tmp_path / "index.html").read_text() == (BOARD / "index.html").read_text()
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == \
        sorted(p.name for p in (BOARD / "plots").glob("*.png"))


def test_committed_page_fixes():
    """Zeros print as 0, tables scroll in their box, sections and plot groups are collapsible."""
    if not (BOARD / "index.html").is_file():
        pytest.skip("no committed board")
    page = re.sub(r'data-sort="[^"]*"', "", (BOARD / "index.html").read_text())  # shown text only
    assert "e-16" not in page and "e-17" not in page
    assert '<div class="scroll"><table class="board">' in page
    assert page.count('<details class="group"') >= 2 and '<details class="plots">' in page
