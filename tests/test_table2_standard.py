"""``facebench reproduce table2 --standard`` (facebench.baselines.ramon2019.standard): a miniature of the
standard mode end to end, its resume after interruptions, the refusal of changed settings, and
``--workers 2`` giving the same numbers as one worker; the plateau rule and MRL's scale across V."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from facebench.baselines.ramon2019 import training
from facebench.baselines.ramon2019.standard import ROWS, StandardSettings, reproduce_standard
from facebench.baselines.ramon2019.training import plateaued
from facebench.commands.base import FacebenchGroup
from facebench.commands.reproduce import reproduce
from facebench.errors import InputFileError

#: 14 training samples (28 rows with mirrors) of 32 px, 2 epochs, a 2-trial search of 1 epoch, V = 1, 2.
MINI = {"seeds": 1, "train": 14, "size": 32, "batch": 8, "max_epochs": 2, "window": 1, "min_epochs": 1,
        "trials": 2, "search_epochs": 1, "images_per_subject": 2, "views": (1, 2)}
REFS = ["mean-shape", "projection-oracle"]
NUMBERS = ["reprojection_px_mean", "shape_mm_mean", "translation_cm_mean", "rotation_deg_mean", "epochs_mean"]


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("std") / "out"
    lines: list[str] = []
    result = reproduce_standard(StandardSettings(out=out, **MINI), on_stage=lines.append)
    return out, result, lines


def _seeded_copy(mini_out, out):
    """A new run folder holding only the miniature's settings and generated data (reused by key)."""
    out.mkdir()
    shutil.copy(mini_out / "settings.json", out / "settings.json")
    shutil.copytree(mini_out / "seed0" / "data", out / "seed0" / "data")


def test_table_rows_weights_and_reference_values(mini):
    out, result, lines = mini
    table = pd.read_csv(out / "table2.csv", keep_default_na=False, na_values=[""])
    assert list(table["loss"]) == [*ROWS, *REFS]
    assert list(table["weighting"].fillna("")) == [w for _, w in ROWS.values()] + ["", ""]
    for column in NUMBERS[:4]:
        assert table[column].notna().all() and (table[column] >= 0).all(), column
    rows = table.set_index("loss")
    assert (rows.loc[list(ROWS), "epochs_mean"] <= 2).all()
    assert (rows.loc[list(ROWS), "shape_mm_ci_low"] <= rows.loc[list(ROWS), "shape_mm_mean"]).all()
    assert (rows.loc[list(ROWS), "shape_mm_mean"] <= rows.loc[list(ROWS), "shape_mm_ci_high"]).all()
    # a searched row costs its search's trials; the others one training
    assert rows.loc["coarse-search", "trainings_mean"] == 3 and rows.loc["gal", "trainings_mean"] == 1
    seed_rows = pd.read_csv(out / "seed0" / "table2.csv").set_index("loss")
    assert seed_rows.loc["coarse-unit", "alpha"] == 1 and seed_rows.loc["xqt-unit", "gamma"] == 1
    from facebench.baselines.ramon2019.losses import ramon2019_scale_weights
    from facebench.baselines.ramon2019.table2 import find_splits

    splits = find_splits(out / "seed0" / "data")
    scale = ramon2019_scale_weights(splits["train"])
    assert seed_rows.loc["coarse-scale", "alpha"] == pytest.approx(scale["alpha"], rel=1e-5)
    assert seed_rows.loc["xqt-scale", "beta"] == pytest.approx(scale["beta"], rel=1e-5)
    searched = json.loads((out / "seed0" / "search" / "xqt" / "result.json").read_text())["params"]
    assert seed_rows.loc["xqt-search", "lr"] == pytest.approx(searched["lr"], rel=1e-5)
    assert seed_rows.loc["xqt-search", "gamma"] == pytest.approx(searched["gamma"], rel=1e-5)
    # reference rows: the true pose, the oracle below the mean face, the mean face computed here
    assert (rows.loc[REFS, "rotation_deg_mean"] < 1e-3).all() and (rows.loc[REFS, "translation_cm_mean"] < 1e-6).all()
    assert rows.loc["projection-oracle", "shape_mm_mean"] < rows.loc["mean-shape", "shape_mm_mean"]
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.models import load

    test = FaceDataset(splits["test"])
    gt = test.read("vertices", 0, len(test)).astype(np.float64)
    expected = np.linalg.norm(gt - load("synthetic").mean[None], axis=2).mean()
    assert rows.loc["mean-shape", "shape_mm_mean"] == pytest.approx(expected, rel=1e-5)
    # the paper's setting: neutral faces, the ramon2019 world and camera, mirrored rows, disjoint subjects
    attrs = json.loads(test.attrs["settings"]) if isinstance(test.attrs.get("settings"), str) else None
    sets = {k: FaceDataset(p) for k, p in splits.items()}
    subjects = {k: set(map(int, d.read("subject", 0, len(d)))) for k, d in sets.items()}
    assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]
    mirror = sets["train"].read("mirror_of", 0, len(sets["train"]))
    assert (mirror[1::2] == np.arange(0, len(mirror), 2)).all()
    assert attrs is None or attrs.get("expression_dims") == 0
    assert any(line.startswith("done in") for line in lines)


def test_fig5_fig6_and_curves(mini):
    out, result, _ = mini
    table = pd.read_csv(out / "table2.csv").set_index("loss")
    fig6 = pd.read_csv(out / "fig6.csv").set_index("views")
    assert list(fig6.index) == [1, 2]
    assert fig6.loc[2, "shape_mm_mean"] == pytest.approx(table.loc["mrl", "shape_mm_mean"])  # V = 2 is the row
    fig5 = pd.read_csv(out / "fig5.csv")
    from facebench.baselines.ramon2019.table2 import find_splits
    from facebench.datasets.dataset_file import FaceDataset

    n_test = len(FaceDataset(find_splits(out / "seed0" / "data")["test"]))
    sums = fig5.groupby(["loss", "metric"])["samples"].sum()
    assert set(sums) == {n_test} and len(sums) == 2 * len(table)  # every test image in one bin, every row
    assert (fig5["ci_low"] <= fig5["mean"] + 1e-12).all() and (fig5["mean"] <= fig5["ci_high"] + 1e-12).all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["run"]) == {*ROWS, "mrl-v1"}
    assert (curves.groupby("run")["epoch"].max() == table.loc["gal", "epochs_mean"]).all()  # 2-epoch cap
    for name in ("fig5.png", "fig6.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_runs_resume_to_the_same_table(mini, tmp_path, monkeypatch):
    """Interrupt once between two search trials and once after the first epoch of a training; each
    rerun continues (data generated once, finished jobs kept) and the final table is the
    uninterrupted one."""
    mini_out, mini_result, _ = mini
    out = tmp_path / "resumed"
    _seeded_copy(mini_out, out)
    data_stamp = (out / "seed0" / "data" / "result.json").stat().st_mtime_ns
    write_log = training.write_log

    def interrupt_at(marker: str):
        def patched(history, path, columns):
            write_log(history, path, columns)
            if marker in str(path) and len(history) == 1:
                raise KeyboardInterrupt
        return patched

    settings = StandardSettings(out=out, **MINI)
    monkeypatch.setattr(training, "write_log", interrupt_at("trial_001"))
    with pytest.raises(KeyboardInterrupt):
        reproduce_standard(settings)
    assert (out / "seed0" / "search" / "coarse" / "trial_000" / "result.json").is_file()
    monkeypatch.setattr(training, "write_log", interrupt_at("runs/gal/"))
    with pytest.raises(KeyboardInterrupt):
        reproduce_standard(settings)
    gal = out / "seed0" / "runs" / "gal"
    assert (gal / "model.pt").is_file() and not (gal / "result.json").exists()  # unfinished: 1 of 2 epochs
    monkeypatch.setattr(training, "write_log", write_log)
    lines: list[str] = []
    result = reproduce_standard(settings, on_stage=lines.append)
    assert any(line.startswith("resuming:") for line in lines)
    assert (out / "seed0" / "data" / "result.json").stat().st_mtime_ns == data_stamp
    pd.testing.assert_frame_equal(result.table2[["loss", *NUMBERS]], mini_result.table2[["loss", *NUMBERS]])
    assert json.loads((gal / "config.json").read_text())["first_epoch"] == 1  # resumed, not restarted
    again = reproduce_standard(settings)  # nothing left to do
    assert again.ran == 0


def test_changed_settings_on_a_folder_are_refused(mini, tmp_path):
    out = tmp_path / "changed"
    _seeded_copy(mini[0], out)
    group = FacebenchGroup("facebench")
    group.add_command(reproduce)
    args = ["reproduce", "table2", "--standard", "--out", str(out), "--seeds", "1", "--train", "14", "--size", "32",
            "--batch", "8", "--epochs", "3", "--trials", "2", "--hpo-epochs", "1", "--views", "1,2"]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 2, result.output
    assert "other settings" in result.output and "max_epochs 2 -> 3" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(InputFileError, match="not a standard-mode run"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x").write_text("x")
        reproduce_standard(StandardSettings(out=tmp_path / "other", **MINI))


def test_two_workers_give_the_same_numbers(mini, tmp_path):
    out = tmp_path / "two"
    _seeded_copy(mini[0], out)
    result = reproduce_standard(StandardSettings(out=out, workers=2, **MINI))
    pd.testing.assert_frame_equal(result.table2[["loss", *NUMBERS]], mini[1].table2[["loss", *NUMBERS]])


def test_plateau_rule_by_hand():
    assert not plateaued([5.0, 4.0, 3.0], None)
    assert not plateaued([5.0, 4.0, 3.9], 2)  # fewer than 2 windows
    # windows of 2: mean(3.0, 2.9) = 2.95 vs mean(5, 4) = 4.5 -> improving
    assert not plateaued([5.0, 4.0, 3.0, 2.9], 2, 0.01)
    # mean(2.96, 2.95) = 2.955 vs mean(3.0, 2.9) = 2.95: rose -> plateau
    assert plateaued([5.0, 4.0, 3.0, 2.9, 2.96, 2.95], 2, 0.01)
    # 1 % lower than before is not enough with delta 2 %, enough with delta 0.5 %
    values = [3.0, 3.0, 2.97, 2.97]
    assert plateaued(values, 2, 0.02) and not plateaued(values, 2, 0.005)
    assert not plateaued(values, 2, 0.02, min_epochs=5)
    assert plateaued([3.0, float("nan")], 1)


def test_mrl_scale_does_not_grow_with_the_number_of_views():
    """MRL averages over its V views, so a view counted V times gives the one-view loss: the loss
    (and, under Adam, the step) has the same scale for every V of Fig. 6."""
    from facebench.baselines.ramon2019.losses import mrl

    g = torch.Generator().manual_seed(0)
    B, N = 3, 20
    x = torch.randn(B, N, 3, generator=g) * 50
    x_hat = x + torch.randn(B, N, 3, generator=g)
    q = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(B, 1)
    t = torch.tensor([[0.0, 0.0, 600.0]]).repeat(B, 1)
    K = torch.tensor([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]])
    view = torch.cat((q, t), dim=1)[:, None]
    one = mrl(x_hat, q, t, x, q, t, K, views=view)
    for V in (2, 8):
        assert torch.allclose(mrl(x_hat, q, t, x, q, t, K, views=view.repeat(1, V, 1)), one, rtol=1e-6)
