"""``facebench reproduce table2`` (facebench.baselines.ramon2019.table2): a micro run end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from facebench.baselines.ramon2019.table2 import (
    FIG6_COLUMNS,
    LOSS_ORDER,
    QUICK,
    TABLE2_COLUMNS,
    ReproduceSettings,
    find_splits,
    resolve_settings,
)
from facebench.commands.base import FacebenchGroup
from facebench.commands.reproduce import reproduce
from facebench.errors import FacebenchError, InputFileError

MICRO = ["--train", "16", "--size", "32", "--epochs", "1", "--batch", "8", "--views", "1,2"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cli():
    group = FacebenchGroup("facebench")  # the root group: one error line, exit 2
    group.add_command(reproduce)
    return group


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """One quick micro run of all five losses (16 training images of 32 px, 1 epoch, V = 1, 2)."""
    out = tmp_path_factory.mktemp("t2") / "out"
    result = CliRunner().invoke(_cli(), ["reproduce", "table2", "--quick", "--out", str(out), *MICRO])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_table2_has_the_papers_columns_and_one_row_per_loss(micro):
    out, output = micro
    table = pd.read_csv(out / "table2.csv")
    assert list(table.columns) == list(TABLE2_COLUMNS)
    assert list(table["loss"]) == [*LOSS_ORDER, "mean-shape", "projection-oracle"]  # then the reference rows
    references = table[table["loss"].isin(["mean-shape", "projection-oracle"])]
    table = table[table["loss"].isin(LOSS_ORDER)]
    for column in ("reprojection_px", "shape_mm", "translation_cm", "rotation_deg", "time_per_epoch_s",
                   "total_time_s"):
        assert (table[column] > 0).all(), column
    # reference rows: true pose (no pose error), the oracle below the mean face, no training columns
    assert (references["rotation_deg"] < 1e-3).all() and (references["translation_cm"] < 1e-6).all()
    assert references["shape_mm"].iloc[1] < references["shape_mm"].iloc[0]
    assert references["epochs"].isna().all()
    assert (table["epochs"] == 1).all() and (table["trainings"] == 1).all()  # --quick: no search
    # the multiterm rows carry the scale-compensating weights, the others none
    summary = json.loads((out / "summary.json").read_text())
    scale = summary["scale_weights"]
    rows = table.set_index("loss")
    assert rows.loc["coarse", "alpha"] == pytest.approx(scale["alpha"], rel=1e-5)
    assert rows.loc["xqt", "beta"] == pytest.approx(scale["beta"], rel=1e-5)
    assert rows.loc["xqt", "gamma"] == pytest.approx(scale["gamma"], rel=1e-5)
    assert pd.isna(rows.loc["gal", "alpha"]) and rows.loc["mrl", "views"] == 2
    # the table's shape error is the scored mean of the results folder
    scored = json.loads((out / "results" / "gal" / "summary.json").read_text())
    assert rows.loc["gal", "shape_mm"] == pytest.approx(scored["metrics"]["shape_mm"]["mean"], rel=1e-5)
    assert scored["protocol_id"].startswith("synthetic")
    # one line per stage
    for stage in ("[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]", "done in"):
        assert stage in output


def test_fig5_and_fig6_files(micro):
    out, _ = micro
    fig6 = pd.read_csv(out / "fig6.csv")
    assert list(fig6.columns) == list(FIG6_COLUMNS)
    assert list(fig6["views"]) == [1, 2]
    table = pd.read_csv(out / "table2.csv").set_index("loss")
    assert fig6.set_index("views").loc[2, "shape_mm"] == pytest.approx(table.loc["mrl", "shape_mm"])  # reused
    assert (out / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots = {p.name for p in (out / "leaderboard" / "plots").glob("*.png")}
    assert any(name.startswith("bins_shape_mm") for name in plots)
    assert any(name.startswith("bins_reprojection_px") for name in plots)
    board = pd.read_csv(out / "leaderboard" / "leaderboard.csv")
    assert sorted(board["method"]) == sorted([*(f"ramon2019-{loss}" for loss in LOSS_ORDER), "mean-shape",
                                              "projection-oracle"])
    # disjoint subjects between the generated splits
    from facebench.datasets.dataset_file import FaceDataset

    splits = find_splits(out / "data")
    subjects = {k: set(map(int, FaceDataset(p).read("subject", 0, len(FaceDataset(p))))) for k, p in splits.items()}
    assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]


def test_full_mode_searches_the_weights_on_given_data(micro, tmp_path):
    data = micro[0] / "data"
    out = tmp_path / "full"
    result = CliRunner().invoke(_cli(), ["reproduce", "table2", "--data", str(data), "--out", str(out),
                                         "--losses", "coarse,gal", "--encoder", "small", "--size", "32",
                                         "--epochs", "1", "--batch", "8", "--trials", "2", "--hpo-epochs", "1",
                                         "--views", "2"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "table2.csv").set_index("loss")
    assert table.loc["coarse", "trainings"] == 3 and table.loc["gal", "trainings"] == 1
    best = json.loads((out / "hpo" / "coarse" / "best.json").read_text())
    assert table.loc["coarse", "alpha"] == pytest.approx(best["params"]["alpha"], rel=1e-5)
    assert table.loc["coarse", "lr"] == pytest.approx(best["params"]["lr"], rel=1e-5)
    assert not (out / "data").exists()  # the given sets were used
    assert list(pd.read_csv(out / "fig6.csv")["views"]) == [2]


def test_resolve_settings_fills_quick_defaults_and_checks(tmp_path):
    s = resolve_settings(ReproduceSettings(out=tmp_path, quick=True, epochs=2))
    assert s.epochs == 2 and s.size == QUICK["size"] and s.train == QUICK["train"] and s.encoder == "small"
    with pytest.raises(FacebenchError, match="unknown loss 'foo'"):
        resolve_settings(ReproduceSettings(out=tmp_path, quick=True, losses=("gal", "foo")))
    with pytest.raises(FacebenchError, match="--views"):
        resolve_settings(ReproduceSettings(out=tmp_path, quick=True, views=(0,)))


def test_find_splits_names_the_missing_split(tmp_path):
    (tmp_path / "a_train.h5").write_bytes(b"")
    (tmp_path / "a_val.h5").write_bytes(b"")
    with pytest.raises(InputFileError, match=r"no \*_test.h5"):
        find_splits(tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--views", "1,x"], "--views expects integers"),
    (["--losses", "gal,nope"], "unknown loss 'nope'"),
    (["--data", "/nonexistent/folder"], "data folder not found"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    result = CliRunner().invoke(_cli(), ["reproduce", "table2", "--quick", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_non_empty_out_needs_overwrite(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("x")
    result = CliRunner().invoke(_cli(), ["reproduce", "table2", "--quick", "--out", str(tmp_path / "o"), *MICRO])
    assert result.exit_code == 2 and "not empty" in result.output


def test_seeds_table_has_mean_sd_verdicts_and_the_mean_face_row(micro, tmp_path):
    """--seeds 2 on the micro run's data (one loss, V = 2): per-seed folders, mean/sd columns, the
    reference rows, verdict values, and the mean-face row equal to an independent computation."""
    import numpy as np

    from facebench.datasets.dataset_file import FaceDataset
    from facebench.leaderboard.seeds import NOT_RESOLVED
    from facebench.models import load

    data, out = micro[0] / "data", tmp_path / "seeds"
    result = CliRunner().invoke(_cli(), ["reproduce", "table2", "--quick", "--data", str(data), "--out", str(out),
                                         "--losses", "mrl", "--views", "2", "--size", "32", "--epochs", "1",
                                         "--batch", "8", "--seeds", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    for seed in (3, 4):
        assert list(pd.read_csv(out / f"seed{seed}" / "table2.csv")["loss"]) == ["mrl", "mean-shape",
                                                                                "projection-oracle"]
    table = pd.read_csv(out / "table2.csv", keep_default_na=False, na_values=[""])
    assert list(table["loss"]) == ["mrl", "mean-shape", "projection-oracle"]
    for metric in ("reprojection_px", "shape_mm", "translation_cm", "rotation_deg"):
        assert f"{metric}_mean" in table.columns and f"{metric}_sd" in table.columns
    assert (table["n_seeds"] == 2).all()
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert set(verdicts["metric"]) == {"reprojection_px", "shape_mm", "translation_cm", "rotation_deg"}
    assert verdicts["verdict"].map(lambda v: v == NOT_RESOLVED or " lower than " in v).all()
    assert all(v == "" or v.startswith(("lower than ", "higher than ", f"{NOT_RESOLVED} vs "))
               for v in table["verdict"].fillna(""))
    # the oracle is the lowest shape row and resolved below the mean face (same test set in both seeds)
    rows = table.set_index("loss")
    assert rows.loc["projection-oracle", "verdict"] in ("lower than mean-shape", "lower than mrl")
    # the mean-face row: the model's mean against every test shape, computed here
    test = FaceDataset(find_splits(data)["test"])
    gt = test.read("vertices", 0, len(test)).astype(np.float64)
    expected = np.linalg.norm(gt - load("synthetic").mean[None], axis=2).mean()
    assert rows.loc["mean-shape", "shape_mm_mean"] == pytest.approx(expected, rel=1e-5)
    assert rows.loc["mean-shape", "shape_mm_sd"] == pytest.approx(0.0, abs=1e-9)  # same data in both seeds
    assert "n_seeds" in result.output and "shape_mm_sd" in result.output
