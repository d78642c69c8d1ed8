"""The standard mode of Tewari et al. 2018's evaluations: the plateau rule, the two-level CI, both
readings of the reflectance error's global shift, and a miniature end-to-end run (structure,
reference rows' known values, resume, refusal of changed settings)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from facebench.baselines.tewari2018.standard import (
    MINIATURE,
    StandardSettings,
    plateaued,
    reflectance_error_both,
    run_standard,
    seeds_images_ci,
)
from facebench.errors import FacebenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plateau_rule_hand_cases():
    rule = {"patience": 2, "tol": 0.01, "min_iters": 20, "max_iters": 100}
    assert plateaued([], [], **rule) is None
    # still improving by more than 1 %: train on
    assert plateaued([1.0, 0.9, 0.8], [10, 20, 30], **rule) is None
    # best of the last two (0.995) is not 1 % below the best before (1.0): plateau
    assert plateaued([1.0, 0.995, 0.999], [10, 20, 30], **rule) == "plateau"
    # the same values before min_iters: train on
    assert plateaued([1.0, 0.995, 0.999], [5, 10, 15], **rule) is None
    # the cap wins whatever the values
    assert plateaued([1.0, 0.5, 0.2], [40, 70, 100], **rule) == "cap"
    # a worse last value than an earlier best: plateau
    assert plateaued([0.5, 0.6, 0.7], [10, 20, 30], **rule) == "plateau"


def test_seeds_images_ci_hand_values():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]])
    mean, lo, hi = seeds_images_ci(x)
    assert mean == pytest.approx(3.5)
    assert 1.5 <= lo < 3.5 < hi <= 5.5
    constant = np.full((3, 5), 0.25)
    assert seeds_images_ci(constant) == pytest.approx((0.25, 0.25, 0.25))
    # subjects: two images of one subject move together, the CI resamples them as one cluster
    mean, lo, hi = seeds_images_ci(np.array([[0.0, 0.0, 1.0, 1.0]]), groups=[0, 0, 1, 1])
    assert mean == 0.5 and lo == pytest.approx(0.0) and hi == pytest.approx(1.0)


def test_reflectance_error_both_readings():
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 8, 8, 3, generator=gen) * 0.5 + 0.2
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    mask[:, :2] = False
    offset = reflectance_error_both(gt + torch.tensor([0.1, -0.05, 0.02]), gt, mask)
    assert torch.allclose(offset["add"], torch.zeros(2), atol=1e-6)
    assert (offset["gain"] > 1e-3).all()
    gain = reflectance_error_both(gt * torch.tensor([0.5, 1.2, 2.0]), gt, mask)
    assert torch.allclose(gain["gain"], torch.zeros(2), atol=1e-6)
    assert (gain["add"] > 1e-3).all()


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    out = tmp_path_factory.mktemp("tewari-standard") / "out"
    settings = StandardSettings(out=out, values=dict(MINIATURE))
    stages: list[str] = []
    # two of the four experiments (the other two train the same way with other run specs): seconds, not minutes
    files = run_standard(settings, ("correctives", "reflectance"), on_stage=stages.append)
    return out, settings, files, stages


def test_miniature_structure_and_reference_values(miniature):
    out, settings, files, _ = miniature
    for name in ("correctives", "reflectance", "comparisons", "curves", "correctives_plot", "reflectance_plot"):
        assert files[name].is_file(), name
    table = pd.read_csv(out / "correctives.csv")
    assert list(table["row"]) == ["C0", "C4", "base-oracle", "C4-oracle", "mean"]
    models = table[table["kind"] == "model"]
    assert (models["n_seeds"] == 2).all() and (models["n_images"] == 6).all()
    for column in ("photo_base", "photo_final", "shape_final_mm", "refl_final_add", "refl_final_gain"):
        assert (models[f"{column}_lo"] <= models[column] + 1e-12).all()
        assert (models[column] <= models[f"{column}_hi"] + 1e-12).all()
    refs = table.set_index("row")
    # in-span data whose identity uses the base level's 80 modes: the base-span oracle is exact
    assert refs.loc["base-oracle", "shape_final_mm"] < 1e-3
    assert refs.loc["base-oracle", "refl_final_add"] < 1e-3
    assert refs.loc["C4-oracle", "shape_final_mm"] <= refs.loc["base-oracle", "shape_final_mm"] + 1e-6
    # the mean face is not exact
    assert refs.loc["mean", "shape_final_mm"] > 0.5
    # C = 0 has no correctives: its offsets are exactly zero
    assert refs.loc["C0", "offset_mm"] == 0 and refs.loc["C0", "refl_offset"] == 0
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons["verdict"]) <= {"a lower", "a higher", "not resolved"}
    assert set(comparisons["experiment"]) == {"correctives", "reflectance"}
    reflectance = pd.read_csv(out / "reflectance.csv")
    assert list(reflectance["row"]) == ["C4", "base-oracle", "C4-oracle", "mean"]
    # diagnostics of the first seed's top-C model: finite gradient norms per term; the mode energies of
    # each corrective space sum to 1 (the bias row apart) and are sorted, largest first
    for name in ("gradient_norms", "mode_energy"):
        assert files[name].is_file(), name
    norms = pd.read_csv(files["gradient_norms"])
    numeric = norms.drop(columns=["term"]).select_dtypes("number").to_numpy()
    assert len(norms) >= 2 and np.isfinite(numeric).all() and (numeric >= 0).all()
    energy = pd.read_csv(files["mode_energy"])
    modes = energy[energy["mode"] >= 0]
    assert not modes.empty
    for _, space in modes.groupby("space"):
        assert abs(space["fraction"].sum() - 1) < 1e-6
        assert (space.sort_values("mode")["energy"].diff().dropna() <= 1e-12).all()
    assert (out / "diagnostics" / "reflectance_panels.png").is_file()
    for seed in (0, 1):
        assert not (out / f"seed{seed}" / "runs" / "relu1").exists()
        for run in ("pretrain", "C0", "C4"):
            info = json.loads((out / f"seed{seed}" / "runs" / run / "done.json").read_text())
            assert info["reason"] in ("plateau", "cap") and info["iterations"] >= 2


def test_miniature_rerun_continues_and_changed_settings_refused(miniature):
    out, settings, _, _ = miniature
    before = (out / "seed0" / "runs" / "C4" / "model.pt").stat().st_mtime_ns
    stages: list[str] = []
    run_standard(settings, ("correctives",), on_stage=stages.append)
    assert (out / "seed0" / "runs" / "C4" / "model.pt").stat().st_mtime_ns == before
    assert not any(line.startswith("generating") for line in stages)
    changed = StandardSettings(out=out, values={**MINIATURE, "finetune_max": 3})
    with pytest.raises(FacebenchError, match="finetune_max"):
        run_standard(changed, ("correctives",))
    from facebench.cli import main

    result = CliRunner().invoke(main, ["reproduce", "ablation", "--standard", "--out", str(out)])
    assert result.exit_code == 2
    assert "other settings" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["reproduce", "ablation", "--standard", "--lr-scale", "2", "--out", str(out)])
    assert result.exit_code == 2 and "does not apply to --standard" in result.output
