"""MorphableModel: evaluation on numpy and torch, validation, serialization; landmarks; geometry."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
import torch
from conftest import tetra_model_arrays

from facebench.errors import ModelFileError
from facebench.geometry import similarity_from_correspondences, vertex_normals
from facebench.landmarks import IBUG68_MIRROR, IBUG68_NAMES
from facebench.models import MorphableModel


@pytest.fixture
def tetra() -> MorphableModel:
    return MorphableModel(**tetra_model_arrays())


def test_shape_uses_std_units(tetra):
    x = tetra.shape(np.array([1.5, -1.0]), np.array([2.0]))
    expected = tetra.mean.copy()
    expected[1, 0] += 1.5 * 2.0
    expected[2, 1] += -1.0 * 1.0
    expected[3, 2] += 2.0 * 3.0
    np.testing.assert_allclose(x, expected)
    # fewer coefficients than modes: the rest are zero
    np.testing.assert_allclose(tetra.shape(np.array([1.0])),
                               tetra.mean + np.array([[0, 0, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]]))
    np.testing.assert_array_equal(tetra.shape(), tetra.mean)


def test_shape_batches_and_broadcasts(tetra):
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    x = tetra.shape(a, np.array([1.0]))
    assert x.shape == (3, 4, 3)
    assert x[0, 1, 0] == 12.0 and x[1, 2, 1] == 11.0 and x[2, 3, 2] == 13.0


def test_torch_path_matches_numpy_and_is_differentiable(tetra):
    a = torch.tensor([[0.3, -0.7]], dtype=torch.float64, requires_grad=True)
    e = torch.tensor([[1.1]], dtype=torch.float64)
    x = tetra.shape(a, e)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float64
    np.testing.assert_allclose(x.detach().numpy(), tetra.shape(a.detach().numpy(), e.numpy()), atol=1e-6)
    x[0, 1, 0].backward()
    np.testing.assert_allclose(a.grad.numpy(), [[2.0, 0.0]])  # d x_1 / d a_0 = std_0
    r = tetra.reflectance(torch.ones(2, 1))
    assert r.shape == (2, 4, 3)
    np.testing.assert_allclose(r[:, :, 0].numpy(), 0.5 + 0.5 * 0.2)


def test_wrong_coefficient_count_is_a_clear_error(tetra):
    with pytest.raises(ValueError, match="identity coefficients must be"):
        tetra.shape(np.zeros(3))


def test_landmarks_pick_vertices_and_nan_for_missing(tetra):
    lm = tetra.landmarks(tetra.mean)
    assert lm.shape == (68, 3)
    np.testing.assert_array_equal(lm[30], tetra.mean[3])
    assert np.isnan(lm[0]).all() and int(tetra.has_landmark.sum()) == 1
    lm_t = tetra.landmarks(torch.as_tensor(np.array(tetra.mean))[None])
    assert lm_t.shape == (1, 68, 3) and torch.isnan(lm_t[0, 0]).all()


def test_truncated_keeps_first_modes(tetra):
    small = tetra.truncated(identity=1, expression=0)
    assert (small.n_identity, small.n_expression, small.n_reflectance) == (1, 0, 1)
    np.testing.assert_allclose(small.shape(np.array([1.0])), tetra.shape(np.array([1.0])))
    with pytest.raises(ValueError):
        tetra.truncated(identity=5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mean": np.zeros((4, 2))}, "mean must be"),
        ({"faces": np.array([[0, 1, 9]])}, "faces index vertices"),
        ({"identity_std": np.ones(3)}, "identity_std must be"),
        ({"identity_basis": np.full((4, 3, 2), np.nan)}, "NaN"),
        ({"landmark_indices": np.zeros(5)}, "landmark_indices must be"),
        ({"landmark_indices": np.full(68, 7)}, "landmark_indices outside"),
        ({"reflectance_mean": np.zeros((3, 3))}, "reflectance_mean must be"),
        ({"expression_std": -np.ones(1)}, "negative"),
    ],
)
def test_validation_rejects_malformed_arrays(change, message):
    arrays = tetra_model_arrays() | change
    with pytest.raises(ModelFileError, match=message):
        MorphableModel(**arrays)


def test_npz_round_trip_is_exact(tmp_path, tetra):
    model = dataclasses.replace(tetra, origin="vertex 0", named_landmarks={"apex": 3},
                                metadata={"identity_mode_names": ["a", "b"]})
    path = model.save(tmp_path / "m.npz")
    back = MorphableModel.load_npz(path)
    assert back.digest() == model.digest()
    assert back.origin == "vertex 0" and back.named_landmarks == {"apex": 3}
    assert back.metadata["identity_mode_names"] == ["a", "b"]
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write left nothing behind


def test_npz_errors_name_the_file(tmp_path, tetra):
    good = tetra.save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated.npz"):
        MorphableModel.load_npz(truncated)
    with pytest.raises(ModelFileError, match="no such file"):
        MorphableModel.load_npz(tmp_path / "absent.npz")
    # a pickled object array inside the npz must be refused, not unpickled
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{f: getattr(tetra, f) for f in ("faces",)}, header=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="pickled.npz"):
        MorphableModel.load_npz(pickled)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a facebench model file"):
        MorphableModel.load_npz(other)
    assert zipfile.is_zipfile(good)


def test_ibug_names_and_mirror():
    assert len(IBUG68_NAMES) == 68 and IBUG68_NAMES[30] == "nose tip" and IBUG68_NAMES[8] == "chin"
    np.testing.assert_array_equal(IBUG68_MIRROR[IBUG68_MIRROR], np.arange(68))
    assert IBUG68_MIRROR[36] == 45 and IBUG68_MIRROR[39] == 42 and IBUG68_MIRROR[48] == 54
    assert IBUG68_MIRROR[0] == 16 and IBUG68_MIRROR[30] == 30


def test_similarity_recovers_a_known_transform_and_refuses_reflections():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3)) * 50
    angle = np.radians(40)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    dst = 1.3 * src @ R.T + np.array([5.0, -2.0, 100.0])
    s, R_fit, t = similarity_from_correspondences(src, dst)
    assert s == pytest.approx(1.3) and np.allclose(R_fit, R) and np.allclose(t, [5, -2, 100])
    mirrored = dst * np.array([-1.0, 1.0, 1.0])
    s, R_fit, t = similarity_from_correspondences(src, mirrored)
    assert np.linalg.det(R_fit) == pytest.approx(1.0)
    residual = np.linalg.norm(s * src @ R_fit.T + t - mirrored, axis=1).mean()
    assert residual > 10.0  # a mirrored shape is not explained away
    s_rigid, _, _ = similarity_from_correspondences(src, dst, with_scale=False)
    assert s_rigid == 1.0


def test_vertex_normals_point_outward(tetra):
    normals = vertex_normals(tetra.mean, tetra.faces)
    centroid = tetra.mean.mean(axis=0)
    assert np.all(np.sum(normals * (tetra.mean - centroid), axis=1) > 0)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)


@pytest.mark.parametrize("header, why", [("[" * 100_000 + "]" * 100_000, "deeper than"),
                                          ("[1, 2]", "format None"), ("{nope", "not valid JSON")])
def test_npz_model_header_json_is_bounded_and_checked(tmp_path, header, why):
    path = MorphableModel(**tetra_model_arrays()).save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["header"] = np.array(header)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=why) as info:
        MorphableModel.load_npz(tmp_path / "bad.npz")
    assert str(tmp_path / "bad.npz") in str(info.value) and "\n" not in str(info.value)
