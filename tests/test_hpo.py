"""Bayesian search of the multiterm losses (facebench.baselines.ramon2019.hpo, ``facebench hpo``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from facebench.baselines.ramon2019.hpo import (
    LR_RANGE,
    TRIAL_COLUMNS,
    WEIGHT_FACTORS,
    best_trial,
    run_hpo,
    search_space,
)
from facebench.baselines.ramon2019.losses import ramon2019_scale_weights
from facebench.commands.base import FacebenchGroup
from facebench.commands.hpo import hpo_command
from facebench.errors import FacebenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A tiny train/val pair (32 px, ~8 training images, disjoint subjects, varied poses)."""
    from facebench.datasets.generator import GeneratorSettings, generate

    root = tmp_path_factory.mktemp("hpo_data")
    generate(GeneratorSettings(n=12, size=32, seed=0, angles="ramon2019", identities=6, split="70/10/20"),
             root / "s.h5")
    return root / "s_train.h5", root / "s_val.h5"


def _run(sets, out, loss="coarse", trials=3, seed=0):
    train, val = sets
    return run_hpo(loss, train, val, out, trials=trials, epochs=1, batch=4, seed=seed)


def test_coarse_table_ranges_best_and_files(sets, tmp_path):
    result = _run(sets, tmp_path / "hpo", trials=3)
    table = result.trials
    assert list(table.columns) == list(TRIAL_COLUMNS)
    assert list(table["trial"]) == [0, 1, 2]
    assert (table["state"] == "complete").all()
    scale = ramon2019_scale_weights(sets[0])
    assert ((table["lr"] > LR_RANGE[0]) & (table["lr"] < LR_RANGE[1])).all()
    low, high = WEIGHT_FACTORS[0] * scale["alpha"], WEIGHT_FACTORS[1] * scale["alpha"]
    assert ((table["alpha"] >= low) & (table["alpha"] <= high)).all()
    assert table["beta"].isna().all() and table["gamma"].isna().all()
    assert len(set(table["lr"])) == 3  # the sampler explores
    # the best trial is the minimum of the objective, and its value is the run's best val shape error
    best = result.best
    assert best["objective_shape_mm"] == pytest.approx(table["objective_shape_mm"].min())
    log = pd.read_csv(tmp_path / "hpo" / f"trial_{best['trial']:03d}" / "log.csv")
    assert best["objective_shape_mm"] == pytest.approx(log["val_shape_mm"].min(), rel=1e-5)
    # files: the table as returned, best.json naming the same trial, one run folder per trial
    on_disk = pd.read_csv(tmp_path / "hpo" / "trials.csv")
    assert list(on_disk.columns) == list(TRIAL_COLUMNS)
    np.testing.assert_allclose(on_disk["lr"], table["lr"], rtol=1e-5)
    saved = json.loads((tmp_path / "hpo" / "best.json").read_text())
    assert saved["best"]["trial"] == best["trial"]
    assert set(saved["params"]) == {"lr", "alpha"}
    for i in range(3):
        assert (tmp_path / "hpo" / f"trial_{i:03d}" / "best.pt").is_file()


def test_same_seed_same_parameters_xqt(sets, tmp_path):
    a = _run(sets, tmp_path / "a", loss="xqt", trials=2, seed=3).trials
    b = _run(sets, tmp_path / "b", loss="xqt", trials=2, seed=3).trials
    c = _run(sets, tmp_path / "c", loss="xqt", trials=2, seed=4).trials
    for column in ("lr", "beta", "gamma"):
        np.testing.assert_array_equal(a[column], b[column])
    assert not np.allclose(a["lr"], c["lr"])
    scale = ramon2019_scale_weights(sets[0])
    for name in ("beta", "gamma"):
        assert ((a[name] >= 0.1 * scale[name]) & (a[name] <= 10 * scale[name])).all()
    assert a["alpha"].isna().all()


def test_search_space_is_centred_on_the_scale_weights():
    space = search_space("xqt", {"alpha": 1.0, "beta": 200.0, "gamma": 0.02})
    assert space == {"lr": (1e-5, 1e-3), "beta": pytest.approx((20.0, 2000.0)),
                     "gamma": pytest.approx((0.002, 0.2))}
    assert set(search_space("coarse", {"alpha": 0.5})) == {"lr", "alpha"}
    with pytest.raises(FacebenchError, match="alpha is 0"):
        search_space("coarse", {"alpha": 0.0})


def test_best_trial_skips_failures_and_breaks_ties_by_reprojection():
    nan = math.nan
    table = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["complete", "failed", "complete", "complete"],
                          "objective_shape_mm": [3.0, nan, 2.0, 2.0], "val_reprojection_px": [1.0, nan, 5.0, 4.0]})
    assert best_trial(table)["trial"] == 3
    with pytest.raises(FacebenchError, match="no trial completed"):
        best_trial(table[table["state"] == "failed"])


@pytest.mark.parametrize(("loss", "message"), [("gal", "no weights to search"), ("srl", "no weights to search"),
                                               ("nope", "unknown loss 'nope'")])
def test_non_multiterm_or_unknown_loss_is_a_clear_error(sets, tmp_path, loss, message):
    with pytest.raises(FacebenchError, match=message):
        run_hpo(loss, sets[0], sets[1], tmp_path / "o", trials=1, epochs=1)
    assert not (tmp_path / "o").exists()  # nothing started


def _cli():
    group = FacebenchGroup("facebench")  # how the root group runs it: one line, exit 2
    group.add_command(hpo_command)
    return group


def test_cli_errors_are_one_line(sets, tmp_path):
    runner = CliRunner()
    result = runner.invoke(_cli(), ["hpo", "--loss", "gal", "--dataset", str(sets[0]), "--val", str(sets[1]),
                                    "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no weights to search" in result.output and "Traceback" not in result.output
    missing = tmp_path / "missing.h5"
    result = runner.invoke(_cli(), ["hpo", "--loss", "coarse", "--dataset", str(missing), "--val", str(sets[1]),
                                    "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "missing.h5" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = runner.invoke(_cli(), ["hpo", "--loss", "coarse", "--dataset", str(sets[0]), "--val", str(sets[1]),
                                    "--out", str(tmp_path / "full")])
    assert result.exit_code == 2 and "not empty" in result.output


def test_cli_runs_and_reports_the_best(sets, tmp_path):
    result = CliRunner().invoke(_cli(), ["hpo", "--loss", "coarse", "--dataset", str(sets[0]), "--val", str(sets[1]),
                                         "--trials", "2", "--epochs", "1", "--batch", "4", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "best trial" in result.output
    assert len(pd.read_csv(tmp_path / "o" / "trials.csv")) == 2
