"""Metrics with hand-computed values; bootstrap CIs; yaw bins; protocols."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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
