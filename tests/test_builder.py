"""Tests of the PCA model builder: GPA undoes similarities, PCA recovers a known low-rank model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from scipy.spatial.transform import Rotation

from facebench.errors import FacebenchError, ModelFileError
from facebench.meshio import write_mesh
from facebench.models.builder import (
    build_model,
    build_model_from_dir,
    generalized_procrustes,
)
from facebench.models.morphable_model import MorphableModel

N_VERTICES, N_SAMPLES = 60, 40
#: mode stds in mm; small against the mean's size (~540 mm centroid size) because similarity GPA
#: is a non-linear projection: it leaks ~ |d|^2 / (2 |mean|) of each shape's offset d along the mean
TRUE_STD = np.array([4.0, 2.0, 1.0])


def _known_model(seed: int = 0):
    """A mean (V,3) ~ 100 mm in size and 3 orthonormal modes (3V,3) that move no centroid,
    carry no infinitesimal rotation or scaling of the mean (so GPA cannot absorb them)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(scale=40.0, size=(N_VERTICES, 3))
    mean -= mean.mean(axis=0)
    # directions GPA would remove: 3 translations, 3 rotations, 1 scaling of the mean
    nuisance = [np.tile(np.eye(3)[i], (N_VERTICES, 1)).ravel() for i in range(3)]
    nuisance += [np.cross(np.eye(3)[i], mean).ravel() for i in range(3)]
    nuisance.append(mean.ravel())
    q_nuisance, _ = np.linalg.qr(np.stack(nuisance, axis=1))
    raw = rng.normal(size=(3 * N_VERTICES, 3))
    raw -= q_nuisance @ (q_nuisance.T @ raw)
    modes, _ = np.linalg.qr(raw)
    return mean, modes


def _samples(mean, modes, seed: int = 1):
    rng = np.random.default_rng(seed)
    centred = rng.normal(size=(N_SAMPLES, 3))
    whitened, _ = np.linalg.qr(centred - centred.mean(axis=0))  # zero-mean orthonormal columns
    coefficients = whitened * np.sqrt(N_SAMPLES - 1) * TRUE_STD  # sample stds exactly TRUE_STD
    shapes = mean + (coefficients @ modes.T).reshape(N_SAMPLES, N_VERTICES, 3)
    rotations = Rotation.random(N_SAMPLES, random_state=seed).as_matrix()
    scales = rng.uniform(0.9, 1.1, size=N_SAMPLES)
    translations = rng.normal(scale=100.0, size=(N_SAMPLES, 3))
    moved = np.einsum("n,nij,nvj->nvi", scales, rotations, shapes) + translations[:, None, :]
    return shapes, moved


def _faces():
    return np.array([[i, i + 1, i + 2] for i in range(N_VERTICES - 2)])


def test_pca_recovers_known_modes():
    mean, modes = _known_model()
    _, moved = _samples(mean, modes)
    model = build_model(list(moved), variance=0.999, faces=_faces())
    assert model.n_identity == 3
    assert model.metadata["explained_variance_total"] > 0.999
    # the model lives in the first mesh's pose: rotate its directions into the true model's frame
    _, R, _ = _common_similarity(model.mean, mean)
    basis = np.einsum("ij,vjk->vik", R, model.identity_basis.astype(np.float64)).reshape(-1, 3)
    assert np.degrees(subspace_angles(basis, modes).max()) < 1.0
    # and the small deviation is GPA's known scale leak, along the mean shape only
    with_mean = np.concatenate([modes, mean.reshape(-1, 1) / np.linalg.norm(mean)], axis=1)
    assert np.degrees(subspace_angles(basis, with_mean).max()) < 1e-3
    # std in mm: the samples' spread along each true mode, up to the GPA's small scale wobble
    np.testing.assert_allclose(model.identity_std, TRUE_STD, rtol=0.02)
    assert model.n_expression == 0 and model.n_reflectance == 0
    assert model.metadata["gpa_converged"]


def test_gpa_undoes_similarities_and_keeps_mm():
    mean, modes = _known_model()
    shapes, moved = _samples(mean, modes)
    gpa = generalized_procrustes(moved)
    # aligned shapes, mapped back by one common similarity, match the unmoved shapes
    s, R, t = _common_similarity(gpa.aligned.reshape(-1, 3), shapes.reshape(-1, 3))
    restored = s * gpa.aligned @ R.T + t
    residual = np.linalg.norm(restored - shapes, axis=2).mean()
    assert residual < 0.05 * 1.0, residual  # mm, for shapes ~100 mm across
    assert abs(s - 1.0) < 0.05  # the mean keeps the inputs' average scale: mm stay mm
    assert np.all(np.linalg.det(gpa.rotations) > 0)
    assert gpa.converged and 2 <= gpa.iterations < 100
    assert not generalized_procrustes(moved, max_iterations=1).converged


def _common_similarity(source, target):
    from facebench.geometry import similarity_from_correspondences

    return similarity_from_correspondences(source, target)


def test_mirrored_mesh_is_not_aligned_by_a_reflection():
    mean, modes = _known_model()
    _, moved = _samples(mean, modes)
    mirrored = moved.copy()
    mirrored[5] = mirrored[5] * np.array([-1.0, 1.0, 1.0])
    gpa = generalized_procrustes(mirrored)
    assert np.all(np.linalg.det(gpa.rotations) > 0.999)
    errors = np.linalg.norm(gpa.aligned - gpa.mean, axis=2).mean(axis=1)
    assert errors[5] > 5 * np.median(errors)  # the mirror image stays a misfit


def test_n_components_and_variance_choice():
    mean, modes = _known_model()
    _, moved = _samples(mean, modes)
    assert build_model(moved, n_components=2, faces=_faces()).n_identity == 2
    # 16 / (16 + 4 + 1) = 0.76: variance 0.7 needs one mode, 0.9 two
    assert build_model(moved, variance=0.7, faces=_faces()).n_identity == 1
    assert build_model(moved, variance=0.9, faces=_faces()).n_identity == 2
    with pytest.raises(FacebenchError, match="at least 2 meshes"):
        build_model(moved[:1], faces=_faces())
    with pytest.raises(FacebenchError, match="n_components"):
        build_model(moved, n_components=99, faces=_faces())


def test_from_dir_round_trip_and_errors(tmp_path):
    mean, modes = _known_model()
    _, moved = _samples(mean, modes)
    folder = tmp_path / "meshes"
    for i, shape in enumerate(moved[:12]):
        write_mesh(folder / f"scan{i:02d}{'.ply' if i % 2 else '.obj'}", shape, _faces())
    out = tmp_path / "built.npz"
    model = build_model_from_dir(folder, out, n_components=3, name="mine")
    again = MorphableModel.load_npz(out)
    assert again.digest() == model.digest() and again.name == "mine"
    assert again.metadata["files"][0] == "scan00.obj" and len(again.metadata["files"]) == 12
    np.testing.assert_array_equal(again.faces, _faces())

    write_mesh(folder / "scan99.obj", moved[0][:-1], _faces()[:-1])
    with pytest.raises(ModelFileError, match="scan99.obj.*vertices"):
        build_model_from_dir(folder, tmp_path / "other.npz")
    assert not (tmp_path / "other.npz").exists()


def test_landmarks_give_transferred_reflectance_else_constant():
    mean, modes = _known_model()
    _, moved = _samples(mean, modes)
    plain = build_model(moved[:5], faces=_faces())
    assert plain.reflectance_source.startswith("constant")
    assert np.all(plain.landmark_indices == -1)
    with pytest.raises(FacebenchError, match="landmark_indices"):
        build_model(moved[:5], faces=_faces(), landmark_indices=[0, 1])
