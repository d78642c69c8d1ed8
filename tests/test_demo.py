"""The README's main job, small: every stage runs and the leaderboard ranks as expected."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from facebench.cli import main


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--n", "6", "--size", "48"])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard" / "leaderboard.csv")
    assert set(board["protocol"]) == {"synthetic", "synthetic-scan"}
    assert set(board["method"]) == {"mean-shape", "projection-oracle", "noisy-oracle", "landmark-fit"}
    assert (board["completion"] == 1.0).all()
    synthetic = board[board["protocol"] == "synthetic"].set_index("method")
    # the noisy oracle (1 mm per coordinate) beats landmark fitting, which beats the mean shape
    assert synthetic.loc["projection-oracle", "shape_mm_mean"] < 1e-3  # in-span world: the floor is 0
    assert synthetic.loc["noisy-oracle", "shape_mm_mean"] < synthetic.loc["landmark-fit", "shape_mm_mean"]
    assert synthetic.loc["landmark-fit", "shape_mm_mean"] < synthetic.loc["mean-shape", "shape_mm_mean"]
    assert abs(synthetic.loc["noisy-oracle", "rotation_deg_mean"] - 2.0) < 1e-6
    html = (out / "leaderboard" / "index.html").read_text()
    assert "landmark-fit" in html and "plots/" in html
    assert len(list((out / "leaderboard" / "plots").glob("*.png"))) >= 10
