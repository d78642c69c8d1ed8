"""The landmark-fitting baseline: 3DMM fitted to 68 2D landmarks by regularized Levenberg–Marquardt.

Ground truth comes from the procedural model: random identity/expression/pose, K = intrinsics(1000,
224), landmarks_2d = exact projection of the model landmarks.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import facebench.models as fm
from facebench.baselines.landmark_fit import _exp_so3, _Problem, _State, _step, fit_landmarks
from facebench.commands.baselines import baselines
from facebench.conventions import intrinsics, pose_from_angles, project, quat_to_matrix, rotation_error_deg

K = intrinsics(1000, 224)


@pytest.fixture(scope="module")
def model():
    return fm.load("synthetic")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_faces(model, n, seed, *, n_identity=40, n_expression=20, yaw=None):
    """Random faces and poses: yaw ±70°, pitch ±30°, roll ±20°, distance 500–800 mm."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n_identity)).astype(np.float32)
    e = rng.standard_normal((n, n_expression)).astype(np.float32)
    yaw = rng.uniform(-70, 70, n) if yaw is None else np.asarray(yaw, float)
    q = pose_from_angles(yaw, rng.uniform(-30, 30, n), rng.uniform(-20, 20, n))
    t = np.stack([rng.uniform(-30, 30, n), rng.uniform(-30, 30, n), rng.uniform(500, 800, n)], -1)
    vertices = model.shape(a, e)
    landmarks = project(model.landmarks(vertices).astype(np.float64), q, t, K)
    return {"a": a, "e": e, "q": q, "t": t, "vertices": vertices, "landmarks": landmarks}


def errors(model, truth, fit):
    return {
        "rotation_deg": rotation_error_deg(truth["q"], fit.q),
        "translation_mm": np.linalg.norm(truth["t"] - fit.t, axis=1),
        "shape_mm": np.linalg.norm(fit.vertices - truth["vertices"], axis=-1).mean(-1),
        "mean_shape_mm": np.linalg.norm(model.mean - truth["vertices"], axis=-1).mean(-1),
    }


# ---------------------------------------------------------------------------- accuracy
def test_noise_free_landmarks_give_subpixel_fit_and_pose(model):
    truth = make_faces(model, 24, seed=0)
    fit = fit_landmarks(model, truth["landmarks"], K)
    err = errors(model, truth, fit)
    assert fit.identity.shape == (24, 40) and fit.expression.shape == (24, 20)
    assert fit.vertices.shape == (24, model.n_vertices, 3) and fit.vertices.dtype == np.float32
    assert np.all(fit.q[:, 0] >= 0) and np.allclose(np.linalg.norm(fit.q, axis=1), 1)
    assert fit.reprojection_px.mean() < 0.5
    assert err["rotation_deg"].mean() < 2.0 and err["rotation_deg"].max() < 5.0
    assert err["translation_mm"].mean() < 30.0 and err["translation_mm"].max() < 80.0
    assert err["shape_mm"].mean() < 0.8 * err["mean_shape_mm"].mean()
    # the reported reprojection is the distance between the fitted landmarks and the observations
    reprojected = project(model.landmarks(fit.vertices).astype(np.float64), fit.q, fit.t, K)
    np.testing.assert_allclose(np.linalg.norm(reprojected - truth["landmarks"], axis=-1).mean(-1),
                               fit.reprojection_px, atol=1e-3)


def test_faces_with_more_modes_than_fitted_beat_the_mean_shape(model):
    truth = make_faces(model, 24, seed=1, n_identity=model.n_identity, n_expression=model.n_expression)
    fit = fit_landmarks(model, truth["landmarks"], K)
    err = errors(model, truth, fit)
    assert fit.reprojection_px.mean() < 1.0
    assert err["rotation_deg"].mean() < 2.0
    assert err["shape_mm"].mean() < 0.8 * err["mean_shape_mm"].mean()


def test_one_pixel_noise_degrades_gracefully(model):
    truth = make_faces(model, 24, seed=2)
    noisy = truth["landmarks"] + np.random.default_rng(5).normal(0, 1.0, truth["landmarks"].shape)
    clean, fit = fit_landmarks(model, truth["landmarks"], K), fit_landmarks(model, noisy, K)
    err_clean, err = errors(model, truth, clean), errors(model, truth, fit)
    assert 0.5 < fit.reprojection_px.mean() < 1.6  # about the noise (E|N(0, I2)| = 1.25 px), less the fit
    assert err["rotation_deg"].mean() < 2 * err_clean["rotation_deg"].mean() + 1.0
    assert err["translation_mm"].mean() < 40.0
    assert err["shape_mm"].mean() < err["mean_shape_mm"].mean()


def test_profile_views_converge(model):
    yaw = np.array([-90.0, -80.0, 80.0, 90.0])
    truth = make_faces(model, 4, seed=3, yaw=yaw)
    fit = fit_landmarks(model, truth["landmarks"], K)
    assert rotation_error_deg(truth["q"], fit.q).max() < 5.0
    assert fit.reprojection_px.max() < 0.5


# ---------------------------------------------------------------------------- missing landmarks
def test_nan_landmarks_are_ignored_like_missing_model_landmarks(model):
    truth = make_faces(model, 3, seed=4)
    observed = truth["landmarks"].copy()
    observed[:, 30] = np.nan  # nose tip
    observed[1, 5, 0] = np.inf
    fit = fit_landmarks(model, observed, K)
    assert np.all(np.isfinite(fit.vertices)) and np.all(np.isfinite(fit.reprojection_px))
    assert rotation_error_deg(truth["q"], fit.q).max() < 5.0
    # ignoring an observation equals fitting a model without that landmark
    indices = model.landmark_indices.copy()
    indices[30] = -1
    without = fit_landmarks(model, np.where(np.isfinite(observed), observed, 1e6)[:1], K, landmark_indices=indices)
    np.testing.assert_allclose(without.q, fit.q[:1], atol=1e-6)
    np.testing.assert_allclose(without.identity, fit.identity[:1], atol=1e-5)
    # an observation that is used moves the fit (so the two checks above can fail)
    moved = truth["landmarks"][:1].copy()
    moved[:, 30] += 40.0
    assert rotation_error_deg(fit_landmarks(model, moved, K).q, fit.q[:1])[0] > 0.1


def test_too_few_landmarks_give_nan_reprojection(model):
    truth = make_faces(model, 3, seed=6)
    observed = truth["landmarks"].copy()
    observed[0, 3:] = np.nan
    observed[2] = np.nan
    fit = fit_landmarks(model, observed, K)
    assert np.isnan(fit.reprojection_px[[0, 2]]).all() and fit.reprojection_px[1] < 0.5
    assert np.all(np.isfinite(fit.vertices)) and np.all(np.isfinite(fit.q))


# ---------------------------------------------------------------------------- solver pieces
def test_exp_so3_matches_quaternion_rotation():
    w = torch.tensor([[0.3, -0.2, 0.5], [1e-10, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    angle = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    q = torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * w / angle], -1)
    torch.testing.assert_close(_exp_so3(w), quat_to_matrix(q), atol=1e-12, rtol=0)


def test_analytic_gradient_matches_autograd(model):
    """The normal equations' gradient is half the gradient of the cost along the update."""
    from facebench.baselines.landmark_fit import _landmark_model

    truth = make_faces(model, 2, seed=7)
    dtype = torch.float64
    lm = _landmark_model(model, model.landmark_indices.astype(np.int64), 5, 3, "cpu", dtype)
    obs = torch.as_tensor(truth["landmarks"]) + 3.0
    weight = torch.rand(2, 68, dtype=dtype)
    problem = _Problem(lm, obs, weight, torch.as_tensor(K).expand(2, 3, 3), torch.full((8,), 0.7, dtype=dtype))
    rng = np.random.default_rng(0)
    state = _State(quat_to_matrix(torch.as_tensor(truth["q"])), torch.as_tensor(truth["t"]),
                   torch.as_tensor(rng.standard_normal((2, 8))))
    H, g = problem.normal_equations(state, with_shape=True)
    delta = torch.zeros(2, 14, dtype=dtype, requires_grad=True)
    problem.cost(_step(state, delta, True)).sum().backward()
    torch.testing.assert_close(g, delta.grad / 2, rtol=1e-7, atol=1e-7)
    assert torch.all(torch.linalg.eigvalsh(H) > 0)


def test_per_sample_K_equals_shared_K(model):
    truth = make_faces(model, 3, seed=8)
    shared = fit_landmarks(model, truth["landmarks"], K)
    per_sample = fit_landmarks(model, truth["landmarks"], np.repeat(K[None], 3, axis=0))
    np.testing.assert_allclose(per_sample.q, shared.q, atol=1e-9)
    np.testing.assert_allclose(per_sample.t, shared.t, atol=1e-6)


def test_bad_shapes_are_refused(model):
    with pytest.raises(ValueError, match="landmarks_2d"):
        fit_landmarks(model, np.zeros((2, 67, 2)), K)
    with pytest.raises(ValueError, match="K must be"):
        fit_landmarks(model, np.zeros((2, 68, 2)), np.eye(4))
    with pytest.raises(ValueError, match="cannot fit"):
        fit_landmarks(model, np.zeros((2, 68, 2)), K, n_identity=model.n_identity + 1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))])
def test_torch_input_stays_on_its_device(model, device):
    truth = make_faces(model, 4, seed=9)
    fit = fit_landmarks(model, torch.as_tensor(truth["landmarks"], device=device), torch.as_tensor(K))
    reference = fit_landmarks(model, truth["landmarks"], K)
    for name in ("identity", "q", "t", "vertices", "reprojection_px"):
        value = getattr(fit, name)
        assert isinstance(value, torch.Tensor) and value.device.type == device
        np.testing.assert_allclose(value.cpu().numpy(), getattr(reference, name), atol=1e-3)


# ---------------------------------------------------------------------------- CLI
def write_dataset(model, path, n=5, seed=10):
    from facebench.datasets.dataset_file import DatasetWriter

    truth = make_faces(model, n, seed)
    with DatasetWriter(path, n=n, height=8, width=8, faces=model.faces, landmark_indices=model.landmark_indices,
                       n_vertices=model.n_vertices, n_coefficients={"identity": 40, "expression": 20}, K=K,
                       attrs={"model": "synthetic", "model_version": model.version}) as writer:
        writer.write(0, {"ids": [f"s{i:02d}" for i in range(n)], "vertices": truth["vertices"],
                         "landmarks_2d": truth["landmarks"].astype(np.float32), "q": truth["q"], "t": truth["t"],
                         "coefficients": {"identity": truth["a"], "expression": truth["e"]}})
    return truth


def test_cli_writes_a_submission(model, tmp_path):
    truth = write_dataset(model, tmp_path / "d.h5")
    result = CliRunner().invoke(baselines, ["fit-landmarks", "--dataset", str(tmp_path / "d.h5"),
                                            "--out", str(tmp_path / "s.h5"), "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "5 samples" in result.output and "px" in result.output
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["format"] == "facebench-submission" and f.attrs["version"] == 1
        assert f.attrs["method"] == "landmark-fit"
        assert [i.decode() for i in f["ids"][()]] == [f"s{i:02d}" for i in range(5)]
        assert f["vertices"].shape == (5, model.n_vertices, 3) and f["vertices"].dtype == np.float32
        assert f["q"].shape == (5, 4) and f["t"].shape == (5, 3) and "faces" not in f
        np.testing.assert_array_equal(f["landmark_indices"][()], model.landmark_indices)
        assert rotation_error_deg(truth["q"], f["q"][()]).max() < 5.0
        assert f.attrs["mean_reprojection_px"] < 0.5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_cli_bad_dataset_is_one_error_line(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5")
    for path in (bogus, tmp_path / "missing.h5"):
        result = CliRunner().invoke(baselines, ["fit-landmarks", "--dataset", str(path), "--out", str(tmp_path / "s.h5")])
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error:") and str(path) in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "s.h5").exists()


def test_cli_unavailable_device_is_refused(model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    write_dataset(model, tmp_path / "d.h5", n=1)
    result = CliRunner().invoke(baselines, ["fit-landmarks", "--dataset", str(tmp_path / "d.h5"),
                                            "--out", str(tmp_path / "s.h5"), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
