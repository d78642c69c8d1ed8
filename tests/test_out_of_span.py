"""The out-of-span world, the variable camera, the presets and the projection oracle."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facebench import conventions as cv
from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score
from facebench.benchmark.templates import write_template
from facebench.cli import main
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.generator import GeneratorSettings, generate, resolve_settings
from facebench.datasets.out_of_span import OutOfSpanSettings, OutOfSpanWorld
from facebench.errors import FacebenchError
from facebench.models import load


@pytest.fixture(scope="module")
def model():
    return load("synthetic")


@pytest.fixture(scope="module")
def world(model):
    return OutOfSpanWorld(model, OutOfSpanSettings(span_identity_dims=40, span_expression_dims=20,
                                                   span_reflectance_dims=30))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """tewari2018 preset (out-of-span world with expressions, variable camera); 6 samples, 3 subjects."""
    path = tmp_path_factory.mktemp("oos") / "oos.h5"
    generate(GeneratorSettings(n=6, size=40, seed=5, identities=3, preset="tewari2018"), path)
    return path


def _columns(model, prefix: str, k: int) -> np.ndarray:
    V = model.n_vertices
    return np.asarray(getattr(model, f"{prefix}_basis"), np.float64).reshape(3 * V, -1)[:, :k]


def test_detail_is_orthogonal_to_the_predictors_span(model, world):
    span = np.concatenate([_columns(model, "identity", 40), _columns(model, "expression", 20)], axis=1)
    refl_span = _columns(model, "reflectance", 30)
    for subject in (0, 7):
        parts = world.shape_detail(3, subject)
        for key in ("heldout", "detail", "total"):
            d = parts[key].reshape(-1)
            assert np.linalg.norm(d) > 1.0
            # cosine with every (unit) column of the span: zero to 1e-6
            assert np.abs(span.T @ d).max() / np.linalg.norm(d) < 1e-6, key
        refl = world.reflectance_detail(3, subject).reshape(-1)
        assert np.linalg.norm(refl) > 0.1
        assert np.abs(refl_span.T @ refl).max() / np.linalg.norm(refl) < 1e-6
    # the detail is not orthogonal to the modes the predictors do not get (it is not trivially tiny)
    rms = np.sqrt(np.mean(np.sum(world.shape_detail(3, 0)["detail"] ** 2, axis=1)))
    assert rms == pytest.approx(world.settings.detail_rms_mm)


def test_detail_is_deterministic_per_subject(world):
    a, b = world.shape_detail(9, 2)["total"], world.shape_detail(9, 2)["total"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, world.shape_detail(9, 3)["total"])
    assert not np.allclose(a, world.shape_detail(10, 2)["total"])


def test_preset_dataset_records_world_and_has_a_real_camera(dataset):
    ds = FaceDataset(dataset)
    assert ds.attrs["world"] == "out-of-span" and ds.attrs["camera"] == "variable"
    assert ds.attrs["settings"]["preset"] == "tewari2018" and ds.shared_K is None
    K = np.asarray(ds.read("K"), np.float64)
    t = np.asarray(ds.read("t"), np.float64)
    assert len(np.unique(K[:, 0, 0])) == len(ds) and np.ptp(t[:, 2]) > 50
    assert np.all(np.abs(t[:, :2]).max(axis=1) > 0)  # off-centre: not the look-at translation
    for i in range(len(ds)):
        s = ds[i]
        uv = cv.project(s["vertices"][ds.landmark_indices].astype(np.float64), s["q"], s["t"], s["K"])
        np.testing.assert_allclose(uv, s["landmarks_2d"], atol=1e-3)


def test_subject_detail_is_shared_by_its_samples(dataset, model):
    """Two samples of one subject differ only by expression: their identity-plus-detail agree."""
    ds = FaceDataset(dataset)
    subject = ds.read("subject")
    assert subject.tolist() == [0, 0, 1, 1, 2, 2]
    V = model.n_vertices
    expr = _columns(model, "expression", 64) * np.asarray(model.expression_std, np.float64)
    a, b = (ds.read("vertices", i, i + 1)[0].astype(np.float64).reshape(-1)
            - expr @ ds.read("expression", i, i + 1)[0].astype(np.float64) for i in (0, 1))
    assert np.abs(a - b).max() < 1e-3 and V > 0


def test_oracle_equals_the_closed_form_least_squares_residual(dataset, model, tmp_path):
    ds = FaceDataset(dataset)
    truth = ds.read("vertices").astype(np.float64)
    A = np.concatenate([_columns(model, "identity", 100), _columns(model, "expression", 64)], axis=1)
    centred = (truth - model.mean.astype(np.float64)).reshape(len(truth), -1).T
    coefficients, *_ = np.linalg.lstsq(A, centred, rcond=None)
    residual = (centred - A @ coefficients).T.reshape(truth.shape)
    expected_rmse = np.sqrt(np.mean(np.sum(residual**2, axis=2), axis=1))
    expected_mean = np.mean(np.linalg.norm(residual, axis=2), axis=1)
    sub = write_template(dataset, "oracle", tmp_path / "oracle.h5")
    with h5py.File(sub) as f:
        predicted = f["vertices"][()].astype(np.float64)
    np.testing.assert_allclose(predicted - truth, -residual, atol=1e-3)  # float32 storage
    table = score(dataset, sub, get_protocol("synthetic")).per_sample
    np.testing.assert_allclose(table["shape_mm"], expected_mean, atol=2e-4)
    assert expected_rmse.min() > 0.5  # out of span: the oracle cannot be exact
    # identity-only span: expression is residual too, so the floor is higher; the mean face higher still
    sub_id = write_template(dataset, "oracle", tmp_path / "oracle_id.h5", expression_dims=0)
    table_id = score(dataset, sub_id, get_protocol("synthetic")).per_sample
    assert np.all(table_id["shape_mm"].to_numpy() > table["shape_mm"].to_numpy())
    mean_table = score(dataset, write_template(dataset, "mean", tmp_path / "mean.h5"),
                       get_protocol("synthetic")).per_sample
    assert mean_table["shape_mm"].mean() > table_id["shape_mm"].mean()


def test_in_span_oracle_is_exact_and_defaults_are_unchanged(tmp_path, model):
    path = tmp_path / "in.h5"
    generate(GeneratorSettings(n=2, size=24, seed=1), path)
    ds = FaceDataset(path)
    assert ds.attrs["world"] == "in-span" and ds.attrs["camera"] == "fixed" and ds.shared_K is not None
    table = score(path, write_template(path, "oracle", tmp_path / "o.h5"), get_protocol("synthetic")).per_sample
    assert table["shape_mm"].max() < 1e-3


def test_bad_world_and_camera_settings(model):
    with pytest.raises(FacebenchError, match="unknown preset"):
        resolve_settings(GeneratorSettings(n=2, preset="nope"), model)
    with pytest.raises(FacebenchError, match="--distance"):
        resolve_settings(GeneratorSettings(n=2, camera="variable", distance=500.0), model)
    with pytest.raises(FacebenchError, match="span"):
        resolve_settings(GeneratorSettings(n=2, span_identity_dims=10), model)
    resolved = resolve_settings(GeneratorSettings(n=2, preset="ramon2019"), model)
    assert resolved.expression_dims == 0 and resolved.angles == "ramon2019" and resolved.world == "out-of-span"
    explicit = resolve_settings(GeneratorSettings(n=2, preset="ramon2019", angles="frontal"), model)
    assert explicit.angles == "frontal"


def test_cli_world_report_and_bad_input(dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "world", str(dataset)])
    assert result.exit_code == 0, result.output
    assert "projection-oracle id100+exp64" in result.output and "held-out modes" in result.output
    bad = runner.invoke(main, ["synth", "generate", "--n", "2", "--camera", "variable", "--focal", "300",
                               "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "error:" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(main, ["submission", "template", "--dataset", str(dataset), "--kind", "mean",
                               "--identity-dims", "3", "--out", str(tmp_path / "m.h5")])
    assert bad.exit_code == 2 and "error:" in bad.output
