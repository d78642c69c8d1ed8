"""Metrics with hand-computed values; numpy and torch agree; gradients; bootstrap CIs; yaw bins; protocols."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from facebench import conventions as cv
from facebench.benchmark import metrics
from facebench.benchmark.protocols import PRESETS, Protocol, get_protocol
from facebench.errors import FacebenchError

RNG = np.random.default_rng(3)


def test_shape_error_every_vertex_moved_1mm_is_1mm():
    x = RNG.normal(size=(4, 500, 3)) * 50
    directions = RNG.normal(size=x.shape)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    np.testing.assert_allclose(metrics.shape_error_mm(x, x + directions), 1.0, atol=1e-12)
    np.testing.assert_allclose(metrics.shape_error_mm(x, x), 0.0)


def test_translation_error_3_4_5_is_5cm():
    t = np.array([[0.0, 0.0, 600.0]])
    assert metrics.translation_error_cm(t, t + [30.0, 40.0, 0.0])[0] == pytest.approx(5.0, abs=1e-12)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (40, -10, 5), (-80, 30, 170)])
def test_rotation_error_of_a_5_degree_perturbation_is_5(yaw, pitch, roll):
    q = cv.pose_from_angles(float(yaw), float(pitch), float(roll))
    axis = RNG.normal(size=3)
    axis /= np.linalg.norm(axis)
    half = np.radians(5.0) / 2
    delta = np.concatenate([[np.cos(half)], np.sin(half) * axis])
    q_hat = cv.quat_multiply(delta, q)
    assert metrics.rotation_error_deg(q[None], q_hat[None])[0] == pytest.approx(5.0, abs=1e-9)
    assert metrics.rotation_error_deg(q[None], -q_hat[None])[0] == pytest.approx(5.0, abs=1e-9)


def test_reprojection_error_hand_computed():
    K = cv.intrinsics(1000.0, 224)
    q = cv.Q_FRONT[None]
    t = np.array([[0.0, 0.0, 500.0]])
    x = np.zeros((1, 2, 3))
    # moving the prediction 1 mm along +x at 500 mm moves its pixel by 1000/500 = 2 px
    assert metrics.reprojection_error_px(x, q, t, x + [1.0, 0, 0], q, t, K)[0] == pytest.approx(2.0)
    # a translation error that the shape compensates gives zero reprojection error
    assert metrics.reprojection_error_px(x, q, t, x - [5.0, 0, 0], q, t + [5.0, 0, 0], K)[0] == pytest.approx(0.0)


def _torch(*arrays, requires_grad=False):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=requires_grad) for a in arrays]


def test_shape_error_hand_computed_per_vertex_and_per_sample():
    gt = np.zeros((2, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0], [0.0, 6.0, 8.0]]])
    np.testing.assert_array_equal(metrics.per_vertex_error_mm(gt, pred), [[5.0, 1.0], [0.0, 10.0]])
    np.testing.assert_array_equal(metrics.shape_error_mm(gt, pred), [3.0, 5.0])
    np.testing.assert_array_equal(metrics.shape_error_from_per_vertex([[5.0, 1.0], [0.0, 10.0]]), [3.0, 5.0])
    per_vertex = metrics.per_vertex_error_mm(*_torch(gt, pred))
    assert isinstance(per_vertex, torch.Tensor) and per_vertex.tolist() == [[5.0, 1.0], [0.0, 10.0]]


def test_numpy_path_keeps_the_scores_operation_order_bit_for_bit():
    """The golden summaries depend on these exact float64 operations (tests/fixtures)."""
    gt = RNG.normal(size=(3, 100, 3)).astype(np.float32) * 50
    pred = gt + RNG.normal(size=gt.shape).astype(np.float32)
    reference = np.linalg.norm(pred.astype(np.float64) - gt.astype(np.float64), axis=-1)
    errors = metrics.per_vertex_error_mm(gt, pred)
    assert errors.dtype == np.float64 and np.array_equal(errors, reference)
    assert np.array_equal(metrics.shape_error_from_per_vertex(errors), reference.mean(axis=1))
    assert np.array_equal(metrics.shape_error_mm(gt, pred), reference.mean(axis=-1))
    d1, d2 = np.abs(RNG.normal(size=501)), np.abs(RNG.normal(size=300))
    sides = [(float(d.mean()), float(np.median(d)), float(np.mean(d * d))) for d in (d1, d2)]
    expected = (float(np.mean([s[0] for s in sides])), float(np.mean([s[1] for s in sides])),
                math.sqrt(float(np.mean([s[2] for s in sides]))))
    assert tuple(metrics.scan_distance_stats(d1, d2)) == expected
    assert tuple(metrics.scan_distance_stats(d1)) == (sides[0][0], sides[0][1], math.sqrt(sides[0][2]))


def test_scan_distance_stats_hand_computed():
    stats = metrics.scan_distance_stats(np.array([1.0, 2.0, 3.0, 4.0]))
    assert stats == (2.5, 2.5, pytest.approx(math.sqrt(30.0 / 4.0)))
    assert stats.mean_mm == 2.5 and isinstance(stats.median_mm, float)
    # symmetric: means 2 and 4, medians 2 and 2, mean squares 5 and 24
    both = metrics.scan_distance_stats([1.0, 3.0], [2.0, 2.0, 8.0])
    assert both == (3.0, 2.0, pytest.approx(math.sqrt(14.5)))
    torch_both = metrics.scan_distance_stats(*_torch([1.0, 3.0], [2.0, 2.0, 8.0]))
    assert [float(v) for v in torch_both] == [3.0, 2.0, pytest.approx(math.sqrt(14.5), abs=1e-12)]
    with pytest.raises(ValueError, match="at least one"):
        metrics.scan_distance_stats()


def test_landmark_error_hand_computed():
    target = np.zeros((2, 3, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 1.0], [99.0, 0.0]], [[0.0, 2.0], [6.0, 8.0], [0.0, 0.0]]])
    np.testing.assert_allclose(metrics.landmark_error_px(target, pred), [35.0, 4.0])
    # the third landmark left out (as a face model that does not define it)
    np.testing.assert_allclose(metrics.landmark_error_px(target, pred, valid=[True, True, False]), [3.0, 6.0])
    # per-sample masks; NaN outside the mask is ignored; no valid landmark gives NaN
    target[0, 1] = np.nan
    valid = np.array([[True, False, False], [False, False, False]])
    with np.errstate(invalid="ignore"):
        got = metrics.landmark_error_px(target, pred, valid=valid)
    assert got[0] == 5.0 and np.isnan(got[1])
    # NaN targets outside the mask give no NaN gradient
    pred_t = torch.tensor(pred, requires_grad=True)
    metrics.landmark_error_px(torch.tensor(target), pred_t, valid=[[True, False, True], [True] * 3]).sum().backward()
    assert torch.isfinite(pred_t.grad).all()


def test_photometric_and_reflectance_error_hand_computed():
    target = np.zeros((1, 2, 2, 3))
    rendered = np.zeros((1, 2, 2, 3))
    rendered[0, 0, 0] = [0.3, 0.4, 0.0]  # distance 0.5
    rendered[0, 1, 1] = [1.0, 0.0, 0.0]  # distance 1.0, outside the mask
    mask = np.array([[[True, True], [False, False]]])
    np.testing.assert_allclose(metrics.photometric_error(rendered, target, mask), [0.25], atol=1e-15)
    # two masked pixels, red +d and -d from the truth: shift 0, error d
    pred = np.zeros((1, 1, 2, 3))
    pred[0, 0, 0, 0], pred[0, 0, 1, 0] = 0.2, -0.2
    np.testing.assert_allclose(metrics.reflectance_error(pred, np.zeros_like(pred), np.ones((1, 1, 2), bool)),
                               [0.2], atol=1e-15)
    # an empty mask measures nothing
    with np.errstate(invalid="ignore"):
        assert np.isnan(metrics.photometric_error(rendered, target, np.zeros((1, 2, 2), bool))[0])
    with pytest.raises(ValueError, match="mask must be"):
        metrics.photometric_error(rendered, target, mask[:, :1])
    with pytest.raises(ValueError, match="images must both be"):
        metrics.reflectance_error(rendered, target[..., :2], mask)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_reflectance_error_is_invariant_to_a_global_rgb_shift(backend):
    gt = RNG.uniform(size=(3, 8, 9, 3))
    pred = gt + RNG.normal(scale=0.05, size=gt.shape)
    mask = RNG.uniform(size=gt.shape[:3]) > 0.3
    shift = np.array([0.1, -0.2, 0.05])
    if backend == "torch":
        gt, pred, shift = _torch(gt, pred, shift)
        mask = torch.as_tensor(mask)
    base = np.asarray(metrics.reflectance_error(pred, gt, mask))
    shifted = np.asarray(metrics.reflectance_error(pred + shift, gt, mask))
    np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(metrics.reflectance_error(gt + shift, gt, mask))).max() < 1e-12
    # the photometric error does see the shift
    photo = np.asarray(metrics.photometric_error(gt + shift, gt, mask))
    np.testing.assert_allclose(photo, float(np.linalg.norm(np.asarray(shift))), atol=1e-12)


def _metric_cases():
    n, v = 4, 50
    x = RNG.normal(size=(n, v, 3)) * 50
    x_hat = x + RNG.normal(size=x.shape)
    q = np.stack([cv.pose_from_angles(float(a), 5.0, -3.0) for a in (-40, 0, 20, 60)])
    q_hat = np.stack([cv.pose_from_angles(float(a), 2.0, 1.0) for a in (-35, 3, 15, 66)])
    t = np.array([[0.0, 0.0, 600.0]] * n) + RNG.normal(size=(n, 3)) * 10
    t_hat = t + RNG.normal(size=(n, 3)) * 20
    K = cv.intrinsics(1000.0, 224)
    lm, lm_hat = RNG.uniform(0, 224, size=(n, 68, 2)), RNG.uniform(0, 224, size=(n, 68, 2))
    valid = RNG.uniform(size=(n, 68)) > 0.2
    img, img_hat = RNG.uniform(size=(n, 6, 7, 3)), RNG.uniform(size=(n, 6, 7, 3))
    mask = RNG.uniform(size=(n, 6, 7)) > 0.4
    return {
        "per_vertex_error_mm": (metrics.per_vertex_error_mm, (x, x_hat), {}),
        "shape_error_mm": (metrics.shape_error_mm, (x, x_hat), {}),
        "translation_error_cm": (metrics.translation_error_cm, (t, t_hat), {}),
        "rotation_error_deg": (metrics.rotation_error_deg, (q, q_hat), {}),
        "reprojection_error_px": (metrics.reprojection_error_px, (x, q, t, x_hat, q_hat, t_hat, K), {}),
        "landmark_error_px": (metrics.landmark_error_px, (lm, lm_hat), {}),
        "landmark_error_px_valid": (metrics.landmark_error_px, (lm, lm_hat), {"valid": valid[0]}),
        "landmark_error_px_masks": (metrics.landmark_error_px, (lm, lm_hat), {"valid": valid}),
        "photometric_error": (metrics.photometric_error, (img_hat, img, mask), {}),
        "reflectance_error": (metrics.reflectance_error, (img_hat, img, mask), {}),
        "scan_distance_stats": (lambda a, b: torch.stack(list(metrics.scan_distance_stats(a, b)))
                                if isinstance(a, torch.Tensor) else np.array(metrics.scan_distance_stats(a, b)),
                                (np.abs(RNG.normal(size=101)), np.abs(RNG.normal(size=64))), {}),
    }


CASES = _metric_cases()
#: Metrics used by a training loss or validation step in torch: their gradient must exist.
DIFFERENTIABLE = ("per_vertex_error_mm", "shape_error_mm", "translation_error_cm", "rotation_error_deg",
                  "reprojection_error_px", "landmark_error_px", "landmark_error_px_valid",
                  "landmark_error_px_masks", "photometric_error", "reflectance_error")


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_and_torch_agree_in_float64(name):
    function, args, kwargs = CASES[name]
    expected = function(*args, **kwargs)
    assert isinstance(expected, np.ndarray) and expected.dtype == np.float64
    converted = [torch.as_tensor(a) if a.dtype == bool else torch.tensor(a, dtype=torch.float64) for a in args]
    kw = {k: torch.as_tensor(v) for k, v in kwargs.items()}
    got = function(*converted, **kw)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # one tensor among numpy arrays is enough for the torch path
    mixed = function(converted[0], *args[1:], **kwargs)
    assert isinstance(mixed, torch.Tensor)
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_torch_gradient_exists(name):
    function, args, kwargs = CASES[name]
    tensors = [torch.as_tensor(a) if a.dtype == bool else torch.tensor(a, dtype=torch.float64, requires_grad=True)
               for a in args]
    function(*tensors, **kwargs).sum().backward()
    # the prediction (the second float argument, or the first of the image metrics) gets a gradient
    predicted = tensors[0] if name in ("photometric_error", "reflectance_error") else tensors[1]
    assert predicted.grad is not None and torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0


def test_torch_path_keeps_float32_and_the_tensor_dtype():
    gt = torch.zeros(1, 2, 3)
    pred = torch.ones(1, 2, 3)
    out = metrics.shape_error_mm(gt, pred)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(math.sqrt(3.0))
    out = metrics.photometric_error(torch.ones(1, 2, 2, 3), np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2), bool))
    assert out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_path_stays_on_the_device(name):
    function, args, kwargs = CASES[name]
    expected = function(*args, **kwargs)
    first = torch.tensor(args[0], dtype=torch.float64, device="cuda")
    got = function(first, *args[1:], **kwargs)  # the other inputs follow the first tensor's device
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_loss_module_reexports_the_image_metrics():
    from facebench.baselines.tewari2018 import loss

    assert loss.photometric_error is metrics.photometric_error
    assert loss.reflectance_error is metrics.reflectance_error


def test_yaw_bins():
    labels = metrics.yaw_bin_labels([0, -14.9, 15, 44, -59.99, 60, 90, 95], (0, 15, 30, 45, 60, 90))
    assert labels == ["[0,15)", "[0,15)", "[15,30)", "[30,45)", "[45,60)", "[60,90]", "[60,90]", "out"]
    assert metrics.yaw_bin_names((0, 15, 30, 45, 60, 90)) == ["[0,15)", "[15,30)", "[30,45)", "[45,60)", "[60,90]"]


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    x = RNG.normal(loc=3.0, scale=1.0, size=400)
    low, high = metrics.bootstrap_mean_ci(x, resamples=1000, seed=1)
    assert low < x.mean() < high
    # width ≈ 2 * 1.96 * sigma / sqrt(n)
    assert (high - low) == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)
    assert metrics.bootstrap_mean_ci(x, resamples=1000, seed=1) == (low, high)
    assert metrics.bootstrap_mean_ci([2.5]) == (2.5, 2.5)
    assert all(np.isnan(metrics.bootstrap_mean_ci([])))


def test_describe_ignores_nan():
    d = metrics.describe([1.0, 2.0, np.nan, 3.0], resamples=200)
    assert d["n"] == 3 and d["mean"] == 2.0 and d["median"] == 2.0 and d["std"] == pytest.approx(1.0)
    assert metrics.describe([np.nan])["mean"] is None


def test_protocols_round_trip_and_validate():
    for protocol in PRESETS.values():
        assert Protocol.from_dict(protocol.to_dict()) == protocol
    assert get_protocol("synthetic").topology == "corresponding"
    assert get_protocol("synthetic-scan").alignment == "similarity"
    assert get_protocol("micc-95mm").crop_radius_mm == 95.0
    with pytest.raises(FacebenchError, match="unknown protocol"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="needs an alignment"):
        Protocol(name="x", version="1", description="", topology="scan")
    with pytest.raises(ValueError, match="alignment"):
        Protocol(name="x", version="1", description="", alignment="affine")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_protocol("synthetic").version = "2"
