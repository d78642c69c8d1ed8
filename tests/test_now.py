"""NoW-compatible scoring: NoW's crop and pooled statistics, the exact final alignment on any scan
density, the reflection / implausible-landmark warnings, and the reader for NoW's layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import facebench.models as fm
from facebench.benchmark.align import align_and_measure
from facebench.benchmark.crop import now_crop
from facebench.benchmark.landmark_sets import landmark_indices_for
from facebench.benchmark.metrics import pooled_distance_stats
from facebench.benchmark.protocols import PRESETS, Protocol, get_protocol
from facebench.benchmark.scoring import _scan_params
from facebench.benchmark.similarity import AlignmentError, Similarity

ASYMMETRIC = {"smile_asymmetry": 2.5, "eye_close_right": 2.0, "mouth_left_right": 2.0, "jaw_sideways": 2.0,
              "brow_raise_asymmetry": 2.5}
SCAN_PRESETS = [name for name, p in PRESETS.items() if p.topology == "scan"]


@pytest.fixture(scope="module")
def model():
    return fm.load("synthetic")


@pytest.fixture(scope="module")
def asymmetric(model):
    """An asymmetric face (a one-sided smile, one eye closing, the jaw sideways): vertices, faces."""
    names = model.metadata["expression_mode_names"]
    expression = np.zeros(model.n_expression)
    for name, value in ASYMMETRIC.items():
        expression[names.index(name)] = value
    identity = np.random.default_rng(1).standard_normal(model.n_identity)
    return model.shape(identity, expression).astype(np.float64), np.asarray(model.faces, np.int64)


@pytest.fixture(scope="module")
def dense(asymmetric):
    """The same surface with 4x the triangles (midpoint subdivision; original vertices keep their index)."""
    import open3d as o3d

    v, f = asymmetric
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    mesh = mesh.subdivide_midpoint(1)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles, np.int64)


def _landmark_vertices(model, protocol: Protocol) -> np.ndarray:
    if protocol.landmarks == "ibug68":
        return np.asarray(model.landmark_indices)
    return landmark_indices_for(model, protocol.landmarks)


# ---------------------------------------------------------------------------- NoW's crop, NoW's statistics
def test_now_crop_centre_and_radius_in_closed_form():
    # a hand-built face (mm): eyes on y = 30, subnasale at the origin, mouth below
    landmarks = np.array([
        [-45.0, 30.0, 0.0],   # right eye, outer corner
        [-15.0, 30.0, 5.0],   # right eye, inner corner
        [15.0, 30.0, 5.0],    # left eye, inner corner
        [45.0, 30.0, 0.0],    # left eye, outer corner
        [0.0, 0.0, 20.0],     # subnasale
        [-25.0, -25.0, 5.0],  # right mouth corner
        [25.0, -25.0, 5.0],   # left mouth corner
    ])
    centre, radius = now_crop(landmarks)
    # inner-eye midpoint (0, 30, 5); nose length |(0, 30, -15)| = sqrt(1125); outer-eye distance 90
    np.testing.assert_allclose(centre, [0.0, 9.0, 15.5], atol=1e-12)
    assert radius == pytest.approx(1.4 * (90.0 + np.sqrt(1125.0)) / 2.0, abs=1e-12)
    landmarks[4] = np.nan
    with pytest.raises(AlignmentError, match="subnasale"):
        now_crop(landmarks)


def test_pooled_statistics_weigh_every_distance_like_now():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([10.0])
    stats = pooled_distance_stats([a, np.zeros(0), b])
    # pooled: {1, 2, 3, 10}: median 2.5, mean 4, population std sqrt(((-3)² + (-2)² + (-1)² + 6²) / 4)
    assert stats["median_mm"] == pytest.approx(2.5)
    assert stats["mean_mm"] == pytest.approx(4.0)
    assert stats["std_mm"] == pytest.approx(np.sqrt(50.0 / 4.0))
    assert stats["n_distances"] == 4 and stats["n_sets"] == 2
    # unlike the mean of per-scan means (2 and 10 -> 6)
    assert np.mean([a.mean(), b.mean()]) == pytest.approx(6.0)
    assert pooled_distance_stats([])["median_mm"] is None


def test_now_presets_and_versions():
    now, metrical = get_protocol("now"), get_protocol("now-metrical")
    assert now.id == "now@1.0" and metrical.id == "now-metrical@1.0"
    assert now.alignment == "similarity" and metrical.alignment == "rigid" and not metrical.icp_scale
    assert now.icp_max_points is None and now.icp_max_correspondence_mm is None and now.crop_rule == "now"
    assert now.landmarks == "now7" and now.aggregation == "now_pooled"
    # changed presets moved to 1.1; 1.0 stays scoreable with its old final ICP step
    old = get_protocol("micc-95mm@1.0")
    assert old.icp_final == "open3d" and not old.stop_implausible and get_protocol("micc-95mm").version == "1.1"
    # a summary written before the new fields existed reads back as the behaviour of its time
    legacy = {k: v for k, v in old.to_dict().items() if k not in ("icp_final", "stop_implausible")}
    assert Protocol.from_dict(legacy) == old


# ---------------------------------------------------------------------------- exact final alignment
@pytest.mark.parametrize("preset", SCAN_PRESETS)
def test_an_exact_copy_scores_zero_on_denser_and_coarser_scans(preset, model, asymmetric, dense):
    protocol = get_protocol(preset)
    params = _scan_params(protocol)
    li = _landmark_vertices(model, protocol)
    rng = np.random.default_rng(SCAN_PRESETS.index(preset))
    coarse = asymmetric
    for (pv, pf), (gv, gf) in (((coarse[0], coarse[1]), dense), (dense, (coarse[0], coarse[1]))):
        scale = 1.0 if protocol.alignment == "rigid" else rng.uniform(0.8, 1.2)
        moved = Similarity(scale, Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix(), rng.normal(size=3) * 50)
        # the predicted landmarks are 1.5 mm off: ICP, not the landmark fit, must find the alignment
        landmarks = moved.apply(pv[li] + rng.normal(0.0, 1.5, (len(li), 3)))
        result = align_and_measure(moved.apply(pv), pf, landmarks, gv, gf, gv[li], params)
        assert result.warning == ""
        assert result.icp is not None and result.icp.scale_converged
        assert result.gt_distances.max() <= 1e-5, (preset, len(pv), len(gv), result.gt_distances.max())


def test_version_1_0_keeps_its_final_open3d_step(model, asymmetric, dense):
    params = _scan_params(get_protocol("synthetic-scan@1.0"))
    li = np.asarray(model.landmark_indices)
    gv, gf = dense
    result = align_and_measure(asymmetric[0], asymmetric[1], asymmetric[0][li], gv, gf, gv[li], params)
    assert result.icp.open3d_calls == 1 and result.mean_mm > 1e-3  # the 1.0 numbers, defect included


# ---------------------------------------------------------------------------- reflections
def test_left_right_swapped_prediction_is_warned_and_stops_early(model, asymmetric):
    v, f = asymmetric
    li = np.asarray(model.landmark_indices)
    mirrored = v * np.array([-1.0, 1.0, 1.0])  # the landmarks move with the vertices: left and right swapped
    for preset in ("synthetic-scan", "synthetic-scan@1.0"):
        result = align_and_measure(mirrored, f[:, [0, 2, 1]], mirrored[li], v, f, v[li],
                                   _scan_params(get_protocol(preset)))
        assert result.warning.startswith("reflection"), result.warning
        assert np.linalg.det(result.similarity.R) == pytest.approx(1.0)
        assert result.landmark_check.reflected_rms_mm < 1e-6 < 10.0 < result.landmark_check.rms_mm
        assert result.mean_mm > 5.0  # refused: never scored as the unmirrored face
        if preset == "synthetic-scan":
            assert result.icp is None  # stopped after the landmark fit
        else:
            assert result.icp is not None  # 1.0 warns, and still runs ICP as it did
    # the same mirror image with its labels mirrored back is a plausible (if wrong) face: no warning
    from facebench.landmarks import IBUG68_MIRROR

    relabelled = align_and_measure(mirrored, f[:, [0, 2, 1]], mirrored[li][IBUG68_MIRROR], v, f, v[li],
                                   _scan_params(get_protocol("synthetic-scan")))
    assert relabelled.warning == "" and relabelled.icp is not None


def test_implausible_landmark_residual_is_warned(model, asymmetric):
    v, f = asymmetric
    li = np.asarray(model.landmark_indices)
    scrambled = v[li][np.random.default_rng(0).permutation(len(li))]
    result = align_and_measure(v, f, scrambled, v, f, v[li], _scan_params(get_protocol("synthetic-scan")))
    assert "implausible landmark residual" in result.warning and result.icp is None
