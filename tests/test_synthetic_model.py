"""Tests of the procedural default model (facebench.models.procedural) and the PNG preview."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facebench.landmarks import IBUG68_MIRROR
from facebench.models import load
from facebench.models.procedural import (
    REGION_NAMES,
    SYNTHETIC_MODEL_SHA256,
    SYNTHETIC_MODEL_VERSION,
    generate_synthetic_model,
    load_synthetic,
    mirror_permutation,
    vertex_regions,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return load_synthetic()


@pytest.fixture(scope="module")
def lm(model):
    """(68,3) float64 landmark positions on the mean, indexed 0..67 (iBUG number - 1)."""
    return model.mean[model.landmark_indices].astype(np.float64)


# ---------------------------------------------------------------------------- determinism
def test_digest_is_the_recorded_contract(model):
    assert model.digest() == SYNTHETIC_MODEL_SHA256
    assert model.version == SYNTHETIC_MODEL_VERSION


def test_generation_is_repeatable_and_cached(model):
    again = generate_synthetic_model()
    assert again is not model
    assert again.digest() == model.digest()
    assert load_synthetic() is model
    assert load("synthetic") is model


def test_single_thread_subprocess_gives_same_bytes(model):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = "from facebench.models.procedural import generate_synthetic_model as g; print(g().digest())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == model.digest()


def test_model_is_immutable(model):
    with pytest.raises(ValueError):
        model.mean[0, 0] = 1.0


# ---------------------------------------------------------------------------- sizes, spaces
def test_counts(model):
    assert 5_000 <= model.n_vertices <= 30_000
    assert model.n_identity >= 80 and model.n_expression == 64 and model.n_reflectance >= 80
    assert model.faces.dtype == np.int32 and model.faces.min() == 0
    assert model.faces.max() == model.n_vertices - 1
    assert model.name == "synthetic" and model.source == "procedural"
    assert "eye corners" in model.origin
    names = model.metadata["identity_mode_names"]
    assert names[:2] == ["face_width", "face_length"]
    assert model.metadata["expression_mode_names"][0] == "jaw_open"
    assert model.metadata["reflectance_mode_names"][0] == "skin_tone"


@pytest.mark.parametrize("space", ["identity", "expression", "reflectance"])
def test_std_strictly_decreasing_and_basis_orthonormal(model, space):
    std = getattr(model, f"{space}_std").astype(np.float64)
    assert np.all(std > 0) and np.all(np.diff(std) < 0)
    basis = getattr(model, f"{space}_basis").astype(np.float64)
    flat = basis.reshape(-1, basis.shape[2])
    np.testing.assert_allclose(flat.T @ flat, np.eye(flat.shape[1]), atol=1e-4)


def test_identity_magnitudes(model):
    rms = model.identity_std / np.sqrt(model.n_vertices)  # per-vertex RMS, mm
    assert 1.5 < rms[0] < 6.0
    assert rms[-1] < 0.2
    np.testing.assert_allclose(model.metadata["identity_rms_mm"], rms, atol=1e-3)


def test_shape_offset_norm_is_three_std(model):
    for k in (0, 5, 50):
        c = np.zeros(model.n_identity)
        c[k] = 3.0
        offset = model.shape(identity=c).astype(np.float64) - model.mean
        np.testing.assert_allclose(np.linalg.norm(offset), 3.0 * model.identity_std[k], rtol=1e-4)


# ---------------------------------------------------------------------------- geometry
def test_extents(model):
    width, height, depth = model.extent_mm()
    assert 130 <= width <= 160
    assert 180 <= height <= 230
    assert 90 <= depth <= 130
    assert np.all(np.isfinite(model.mean))


def test_outward_normals(model):
    v = model.mean.astype(np.float64)
    tri = v[model.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = tri.mean(axis=1)
    front = (np.abs(centre[:, 0]) < 40) & (centre[:, 1] > -60) & (centre[:, 1] < 40)
    mean_normal = cross[front].sum(axis=0)
    assert mean_normal[2] > 0.9 * np.linalg.norm(mean_normal)
    # open surface: the signed volume of the cone from the head axis is positive (outward)
    signed_volume = np.einsum("ij,ij->i", tri[:, 0] - [0, 0, 0], cross).sum() / 6.0
    assert signed_volume > 0
    # and the normals point away from the head's vertical axis almost everywhere
    radial = centre.copy()
    radial[:, 1] = 0
    outward = np.einsum("ij,ij->i", radial, cross) > 0
    assert outward.mean() > 0.9


def test_mesh_is_smooth(model):
    """No spikes or folds: normals of triangles sharing an edge differ by less than 60 degrees."""
    v = model.mean.astype(np.float64)
    f = model.faces.astype(np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(f)), 3)
    key = edges[:, 0] * len(v) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    shared = np.flatnonzero(key[1:] == key[:-1])
    assert len(shared) > len(f)  # a connected grid: most edges are interior
    cos = np.einsum("ij,ij->i", n[owner[shared]], n[owner[shared + 1]])
    # the mouth line is a deliberate crease (three rows 0.4 mm apart): checked separately
    mouth = vertex_regions(model)["lips"] & (np.abs(v[:, 1] - v[model.named_landmarks["lips_central"], 1]) < 0.5)
    on_mouth = mouth[f].any(axis=1)
    crease = on_mouth[owner[shared]] | on_mouth[owner[shared + 1]]
    assert crease.sum() < 600
    assert cos[~crease].min() > np.cos(np.radians(60))
    assert cos[crease].min() > np.cos(np.radians(120))


def test_mirror_permutation(model):
    perm = mirror_permutation()
    assert perm.shape == (model.n_vertices,)
    assert np.array_equal(np.sort(perm), np.arange(model.n_vertices))
    assert np.array_equal(model.mean[perm] * np.array([-1, 1, 1], np.float32), model.mean)
    assert np.array_equal(perm[perm], np.arange(model.n_vertices))
    # landmarks map to their iBUG mirror partners
    assert np.array_equal(perm[model.landmark_indices], model.landmark_indices[IBUG68_MIRROR])
    # named landmarks, too
    named = model.named_landmarks
    assert perm[named["left_ear_level"]] == named["right_ear_level"]
    assert perm[named["left_eye_lacrimal"]] == named["right_eye_lacrimal"]
    assert model.mean[named["nose_tip"], 0] == 0


def test_mirrored_faces_keep_topology(model):
    perm = mirror_permutation()
    faces = {tuple(sorted(t)) for t in model.faces.tolist()}
    mirrored = {tuple(sorted(t)) for t in perm[model.faces].tolist()}
    assert faces == mirrored


# ---------------------------------------------------------------------------- landmarks
def test_landmarks_all_present_and_distinct(model):
    assert np.all(model.has_landmark)
    assert len(set(model.landmark_indices.tolist())) == 68


def test_nose_tip_is_most_frontal(model, lm):
    assert np.argmax(lm[:, 2]) == 30
    assert 90 <= lm[30, 2] <= 112
    assert model.named_landmarks["nose_tip"] == model.landmark_indices[30]
    cheeks = lm[[2, 14], 2].mean()
    assert lm[30, 2] - lm[39, 2] > 20  # the tip protrudes beyond the inner eye corners
    assert cheeks < lm[30, 2]


def test_eye_and_mouth_corners_symmetric(lm):
    for right, left in ((36, 45), (39, 42), (48, 54), (0, 16), (31, 35)):
        np.testing.assert_allclose(lm[right] * [-1, 1, 1], lm[left], atol=0.5)
    assert lm[36, 0] < lm[39, 0] < 0 < lm[42, 0] < lm[45, 0]
    assert lm[48, 0] < 0 < lm[54, 0]
    assert 25 <= lm[42, 0] - lm[39, 0] <= 40  # intercanthal width
    assert 80 <= lm[45, 0] - lm[36, 0] <= 100  # biocular width


def test_vertical_order(lm):
    brows, eyes = lm[17:27, 1].mean(), lm[36:48, 1].mean()
    tip, mouth, chin = lm[30, 1], lm[48:68, 1].mean(), lm[8, 1]
    assert brows > eyes > tip > mouth > chin
    assert np.argmin(lm[:, 1]) == 8
    assert abs(lm[8, 0]) < 1e-6
    assert lm[51, 1] > lm[62, 1] > lm[66, 1] > lm[57, 1]  # outer/inner upper, inner/outer lower
    assert np.all(np.diff(lm[27:31, 1]) < 0)  # nose bridge top -> tip


def test_jaw_contour(lm):
    x = lm[0:17, 0]
    assert np.all(np.diff(x) > 0)
    assert x[0] < -60 and x[16] > 60
    assert np.all(np.diff(lm[0:9, 1]) < 0) and np.all(np.diff(lm[8:17, 1]) > 0)


def test_brow_order(lm):
    assert np.all(np.diff(lm[17:22, 0]) > 0) and np.all(np.diff(lm[22:27, 0]) > 0)
    assert lm[21, 0] < 0 < lm[22, 0]


# ---------------------------------------------------------------------------- expressions
def _expression(model, name, value):
    k = model.metadata["expression_mode_names"].index(name)
    c = np.zeros(model.n_expression)
    c[k] = value
    return model.shape(expression=c).astype(np.float64)


def test_jaw_open_moves_chin_down_and_opens_mouth(model, lm):
    opened = _expression(model, "jaw_open", 1.0)
    chin = opened[model.landmark_indices[8]] - lm[8]
    assert chin[1] < -4.0
    assert 7.0 <= np.linalg.norm(chin) <= 11.0
    gap_before = lm[62, 1] - lm[66, 1]
    gap_after = opened[model.landmark_indices[62], 1] - opened[model.landmark_indices[66], 1]
    assert gap_after - gap_before > 4.0
    # the upper face does not move
    eyes = model.landmark_indices[36:48]
    assert np.abs(opened[eyes] - lm[36:48]).max() < 0.01


def test_expressions_are_local(model):
    basis = model.expression_basis.astype(np.float64)
    regions = vertex_regions(model)
    moved = np.linalg.norm(basis[:, :, 0] * model.expression_std[0], axis=1) > 0.05
    assert not np.any(moved & regions["forehead"])
    smile = np.linalg.norm(basis[:, :, 1], axis=1)
    assert smile[regions["lips"]].mean() > 10 * smile[regions["forehead"]].mean()


def test_eye_close_closes_one_eye(model, lm):
    closed = _expression(model, "eye_close_right", 3.0)
    idx = model.landmark_indices
    right_open = lm[37, 1] - lm[41, 1]
    right_closed = closed[idx[37], 1] - closed[idx[41], 1]
    assert right_closed < 0.25 * right_open
    np.testing.assert_allclose(closed[idx[42:48]], lm[42:48], atol=0.02)  # the other eye stays


# ---------------------------------------------------------------------------- reflectance
def test_reflectance(model):
    mean = model.reflectance_mean
    assert mean.min() >= 0 and mean.max() <= 1
    regions = vertex_regions(model)
    lips = mean[regions["lips"] & ~regions["mouth_line"]].mean(axis=0)
    skin = mean[regions["skin"]].mean(axis=0)
    assert lips[0] / lips[1] > 1.3 * skin[0] / skin[1]
    assert mean[regions["brows"]].mean() < 0.5 * skin.mean()
    for k in (0, 1, 10, 79):
        c = np.zeros(model.n_reflectance)
        for sign in (-2.0, 2.0):
            c[k] = sign
            rgb = model.reflectance(c)
            assert np.mean((rgb >= 0) & (rgb <= 1)) > 0.99


def test_vertex_regions(model):
    regions = vertex_regions(model)
    assert set(regions) == set(REGION_NAMES)
    for name, mask in regions.items():
        assert mask.shape == (model.n_vertices,) and mask.dtype == bool
        assert mask.any(), name
    assert not np.any(regions["skin"] & regions["eyes"])
    eye_centre = model.named_landmarks["right_eye_center"]
    assert regions["eyes"][eye_centre]
    assert regions["nose"][model.landmark_indices[30]]
    with pytest.raises(ValueError):
        vertex_regions(model.__class__(**{**_fields(model), "name": "other"}))


def _fields(model):
    import dataclasses

    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}


# ---------------------------------------------------------------------------- preview
def test_preview_png(model, tmp_path):
    import matplotlib.image as mpimg

    from facebench.models.preview import render_preview

    c = np.zeros(model.n_expression)
    c[0] = 2.0
    out = render_preview(
        [model.mean, model.shape(expression=c)], model.faces, tmp_path / "sub" / "p.png",
        titles=["mean", "jaw open"], colors=[model.reflectance_mean, None], panel_px=160,
    )
    assert out == tmp_path / "sub" / "p.png" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["p.png"]  # no temporary left behind
    image = mpimg.imread(out)
    assert image.shape[:2] == (2 * 160, 2 * 160)
    background = np.all(image[..., :3] > 0.99, axis=-1)
    assert 0.1 < 1.0 - background.mean() < 0.8
    # the coloured panel (top left) has skin tones: red above blue
    panel = image[:160, :160, :3][~background[:160, :160]]
    assert panel[:, 0].mean() > panel[:, 2].mean() + 0.05


def test_preview_rejects_bad_input(model, tmp_path):
    from facebench.models.preview import render_preview

    with pytest.raises(ValueError):
        render_preview([model.mean], model.faces, tmp_path / "x.png", views=("top",))
    with pytest.raises(ValueError):
        render_preview([model.mean], model.faces, tmp_path / "x.png", colors=[None, None])


def test_identity_modes_hold_no_rigid_motion():
    """A pose must not be able to imitate an identity mode (as after Procrustes in a real 3DMM)."""
    from facebench.models import load

    model = load("synthetic")
    x = model.mean.astype(np.float64)
    centred = x - x.mean(axis=0)
    generators = []
    for k in range(3):
        axis = np.eye(3)[k]
        generators.append(np.broadcast_to(axis, x.shape).ravel())
        generators.append(np.cross(axis, centred).ravel())
    rigid, _ = np.linalg.qr(np.stack(generators, axis=1))
    basis = model.identity_basis.reshape(-1, model.n_identity).astype(np.float64)
    assert np.abs(rigid.T @ basis).max() < 1e-5
