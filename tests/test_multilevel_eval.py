"""The evaluations of the multi-level model: reflectance error with an oracle, the canonical view,
the SH sphere, settings checks, and a tiny end-to-end run of each experiment's machinery."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from facebench import conventions as cv
from facebench.baselines.tewari2018.evaluations import (
    EvalSettings,
    canonical_pose,
    reflectance_errors,
    resolve_eval_settings,
    run_correctives,
    run_reflectance,
)
from facebench.baselines.tewari2018.figures import _sphere
from facebench.errors import FacebenchError, InputFileError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_model():
    from facebench.models import load

    return load("synthetic")


@pytest.fixture(scope="module")
def data(tmp_path_factory, face_model):
    from facebench.datasets.generator import GeneratorSettings, generate

    root = tmp_path_factory.mktemp("ml-eval")
    generate(GeneratorSettings(n=4, size=32, seed=0), root / "train.h5", model=face_model)
    generate(GeneratorSettings(n=2, size=32, seed=1), root / "test.h5", model=face_model)
    few = root / "few"
    generate(GeneratorSettings(n=2, size=32, seed=0, reflectance_dims=40), few / "train.h5", model=face_model)
    generate(GeneratorSettings(n=2, size=32, seed=1, reflectance_dims=40), few / "test.h5", model=face_model)
    return root


class _Oracle(torch.nn.Module):
    """Returns given reflectance fields in dataset order (what iterate_reconstructions needs)."""

    def __init__(self, base: torch.Tensor, final: torch.Tensor):
        super().__init__()
        self.base, self.final, self.next = base, final, 0

    def reconstruct(self, images):
        b, s = images.shape[0], self.next
        self.next += b
        return SimpleNamespace(reflectance_base=self.base[s:s + b], reflectance_final=self.final[s:s + b])


def test_reflectance_error_is_zero_for_the_truth_and_shift_invariant(data, face_model):
    from facebench.datasets.dataset_file import FaceDataset

    test = FaceDataset(data / "test.h5")
    gt = face_model.reflectance(torch.as_tensor(test.array("reflectance"))).clamp(0, 1)
    shifted = (gt - 0.02).clamp(0, 1)  # a global shift is removed by the metric (up to the clamp at 0)
    noisy = (gt + 0.2 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    errors = reflectance_errors(_Oracle(noisy, gt), test, face_model, batch_size=1)
    assert errors["final"].shape == (2,) and np.all(errors["final"] < 1e-6)
    assert np.all(errors["base"] > 0.05) and np.all(errors["mean"] > 0)
    shifted_errors = reflectance_errors(_Oracle(shifted, shifted), test, face_model)
    assert np.all(shifted_errors["final"] < 2e-3)


def test_canonical_pose_looks_at_the_centre_frontally(data, face_model):
    from facebench.datasets.dataset_file import FaceDataset

    test = FaceDataset(data / "test.h5")
    q, t, K = canonical_pose(test, face_model)
    assert np.allclose(q, cv.Q_FRONT)
    centre = np.asarray(test.attrs["settings"]["centre"])
    uv = cv.project(centre[None], q, t, K)[0]
    assert np.allclose(uv, K[:2, 2], atol=1e-9)
    assert cv.transform(centre[None], q, t)[0, 2] == pytest.approx(test.attrs["settings"]["distance"])


def test_sphere_under_ambient_light_is_uniform():
    from facebench.render import ambient_sh

    image = _sphere(ambient_sh(0.5), 16)
    c = (np.arange(16) + 0.5) / 16 * 2 - 1
    inside = (c[None] ** 2 + c[:, None] ** 2) < 1
    assert np.allclose(image[inside], 0.5, atol=1e-5) and np.all(image[~inside] == 0)


def test_settings_are_checked(tmp_path):
    s = resolve_eval_settings(EvalSettings(out=tmp_path, quick=True))
    assert s.size == 64 and s.batch == 5 and s.pretrain_iters > 0
    assert resolve_eval_settings(EvalSettings(out=tmp_path, quick=False)).test == 1000
    for bad in (dict(size=16), dict(train=0), dict(pretrain_iters=0, finetune_iters=0), dict(lr_scale=0.0),
                dict(threads=0)):
        with pytest.raises(FacebenchError):
            resolve_eval_settings(EvalSettings(out=tmp_path, **bad))
    (tmp_path / "x").write_text("not empty")
    with pytest.raises(InputFileError, match="not empty"):
        run_correctives(EvalSettings(out=tmp_path, data=tmp_path, pretrain_iters=1))
    with pytest.raises(FacebenchError, match="--counts"):
        run_correctives(EvalSettings(out=tmp_path / "new"), counts=(-1,))


def test_reflectance_test_refuses_a_set_without_the_extra_modes(data, tmp_path):
    with pytest.raises(InputFileError, match="40 reflectance modes"):
        run_reflectance(EvalSettings(out=tmp_path / "r", data=data / "few", pretrain_iters=1, finetune_iters=1))


def test_correctives_end_to_end_tiny(data, tmp_path):
    out = tmp_path / "corr"
    lines = []
    result = run_correctives(EvalSettings(out=out, data=data, size=32, pretrain_iters=1, finetune_iters=1, batch=2,
                                          panels=1, encoder_width=8), counts=(0, 4), on_stage=lines.append)
    table = pd.read_csv(out / "correctives.csv")
    assert list(table["variant"]) == ["C0", "C4", "mean-shape", "projection-oracle"]  # then the reference rows
    references, table = table.iloc[2:], table.iloc[:2]
    assert list(table["n_correctives"]) == [0, 4]
    for column in ("photo_base", "photo_final", "refl_base", "refl_final", "shape_mm", "reprojection_px"):
        assert all(math.isfinite(v) for v in table[column]), column
    # the base level spans 80 of the model's 100 identity modes: the oracle's floor is above 0, below the mean face
    assert 0.01 < references["shape_mm"].iloc[1] < references["shape_mm"].iloc[0]
    assert references["photo_final"].isna().all() and (references["rotation_deg"] < 1e-3).all()
    assert table.loc[0, "offset_mm"] == 0.0  # C = 0: final = base
    for name in ("correctives.png", "panels.png", "summary.json", "submissions/C4.h5", "results/C4/summary.json",
                 "results/mean-shape/summary.json", "results/projection-oracle/summary.json"):
        assert (out / name).is_file(), name
    assert any("pre-training" in line for line in lines)
    assert result.files["correctives"] == out / "correctives.csv"


def test_reflectance_with_two_seeds(data, tmp_path, face_model):
    """--seeds 2 on the tiny sets: per-seed folders, mean/sd across seeds, the mean-reflectance
    reference row equal to an independent computation, verdict values."""
    from facebench.benchmark.metrics import reflectance_error
    from facebench.datasets.dataset_file import FaceDataset

    out = tmp_path / "refl"
    result = run_reflectance(EvalSettings(out=out, data=data, size=32, pretrain_iters=1, finetune_iters=0, batch=2,
                                          panels=0, encoder_width=8, seeds=2, seed=5))
    table = pd.read_csv(out / "reflectance.csv", keep_default_na=False, na_values=[""])
    assert list(table["level"]) == ["base", "final", "mean"]
    assert {"reflectance_error_mean", "reflectance_error_sd", "n_seeds", "verdict"} <= set(table.columns)
    assert (table["n_seeds"] == 2).all()
    for seed in (5, 6):
        runs = pd.read_csv(out / f"seed{seed}" / "runs.csv")
        assert list(runs["variant"]) == ["final"]  # the reference here is the mean reflectance
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert len(verdicts) == 3 and set(verdicts["metric"]) == {"reflectance_error"}
    assert all(v == "" or v.startswith(("lower than ", "higher than ", "not resolved vs "))
               for v in table["verdict"].fillna(""))
    # the mean-reflectance row, computed here: the model's mean vs each test image's reflectance
    from facebench.baselines.tewari2018.evaluations import _render_colors

    test = FaceDataset(data / "test.h5")
    q, t, K = canonical_pose(test, face_model)
    coefficients = torch.as_tensor(test.read("reflectance", 0, len(test)), dtype=torch.float32)
    gt, mask = _render_colors(face_model, face_model.reflectance(coefficients).clamp(0, 1), q, t, K, 32)
    mean = torch.as_tensor(np.array(face_model.reflectance_mean), dtype=torch.float32).clamp(0, 1)
    image, _ = _render_colors(face_model, mean.expand(len(test), -1, -1), q, t, K, 32)
    expected = float(reflectance_error(image, gt, mask).mean())
    row = table.set_index("level").loc["mean"]
    assert row["reflectance_error_mean"] == pytest.approx(expected, rel=1e-5)
    assert row["reflectance_error_sd"] == pytest.approx(0.0, abs=1e-9)  # same test set in both seeds
    assert result.files["verdicts"] == out / "verdicts.csv"


def test_reproduce_commands_report_bad_options_in_one_line(data, tmp_path):
    from facebench.commands.base import FacebenchGroup
    from facebench.commands.reproduce_tewari2018 import (
        ablation_command,
        corrective_spaces_command,
        correctives_command,
        reflectance_command,
    )

    group = FacebenchGroup("reproduce")
    for command in (correctives_command, corrective_spaces_command, reflectance_command, ablation_command):
        group.add_command(command)
    runner = CliRunner()
    result = runner.invoke(group, ["corrective-spaces", "--out", str(tmp_path / "a"), "--kinds", "affine,cubic"])
    assert result.exit_code == 2 and "cubic" in result.output and "Traceback" not in result.output
    result = runner.invoke(group, ["correctives", "--out", str(tmp_path / "b"), "--counts", "0,x"])
    assert result.exit_code == 2 and "--counts" in result.output
    result = runner.invoke(group, ["ablation", "--out", str(tmp_path / "c"), "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "train.h5" in result.output
    result = runner.invoke(group, ["reflectance", "--out", str(tmp_path / "d"), "--weight", "w_glo=-1"])
    assert result.exit_code == 2 and "w_glo" in result.output
