"""SFM loader (eos cereal binary) on the real eos share files, and on broken copies of them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import facebench.models.sfm as sfm
from facebench.errors import ModelFileError
from facebench.geometry import vertex_normals

SHARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "eos-share"
MODEL = SHARE / "sfm_shape_3448.bin"
BLENDSHAPES = SHARE / "expression_blendshapes_3448.bin"
MAPPING = SHARE / "ibug_to_sfm.txt"

pytestmark = pytest.mark.skipif(
    not MODEL.is_file(), reason=f"real eos SFM files not found at {SHARE} (../shared/data beside the repository)")


@pytest.fixture
def no_transfer(monkeypatch):
    """Replace the reflectance transfer (needs the synthetic model) by a recorder."""
    calls = []

    def fake(model):
        calls.append(model)
        return model

    monkeypatch.setattr(sfm, "with_synthetic_reflectance", fake)
    return calls


@pytest.fixture
def model(no_transfer):
    return sfm.load_sfm(MODEL, landmark_mapping=MAPPING, expression_path=BLENDSHAPES)


def test_real_file_sizes_and_version(model, no_transfer):
    assert (model.n_vertices, model.n_identity, model.n_faces) == (3448, 63, 6736)
    assert model.n_expression == 6
    assert model.metadata["expression_names"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert model.metadata["texture_coordinates"] == 3448
    assert len(model.version) == 12 and int(model.version, 16) >= 0
    assert len(no_transfer) == 1, "a shape-only SFM gets the synthetic reflectance transfer"


def test_basis_orthonormal_and_std_is_sqrt_eigenvalue(model):
    flat = model.identity_basis.reshape(-1, model.n_identity).astype(np.float64)
    np.testing.assert_allclose(flat.T @ flat, np.eye(63), atol=1e-4)
    raw = sfm.read_eos_model(MODEL)
    np.testing.assert_allclose(model.identity_std, np.sqrt(raw["shape"]["eigenvalues"][:, 0]), rtol=1e-6)
    assert np.all(np.diff(model.identity_std) <= 0), "PCA std should decrease"
    assert 200 < model.identity_std[0] < 300  # sqrt(56502) mm over 3448 vertices


def test_extent_in_mm_and_frame(model):
    width, height, depth = model.extent_mm()
    assert 120 < width < 180 and 150 < height < 220 and 80 < depth < 130
    lm = model.landmark_indices
    assert lm[8] == 33 and lm[30] == 114  # chin, nose tip (iBUG 9, 31)
    mapped = model.mean[lm[lm >= 0]]
    nose = model.mean[lm[30]]
    assert nose[2] == pytest.approx(mapped[:, 2].max()), "iBUG 31 (nose tip) is the most frontal landmark"
    right_outer, left_outer = model.mean[lm[36]], model.mean[lm[45]]  # iBUG 37 / 46
    assert right_outer[0] < -30 and left_outer[0] > 30, "+x is toward the subject's left"
    assert abs(right_outer[0] + left_outer[0]) < 2 and abs(right_outer[1] - left_outer[1]) < 2
    assert model.mean[lm[8], 1] < nose[1] < right_outer[1], "+y is up: chin below nose below eyes"


def test_faces_point_outward(model):
    normals = vertex_normals(model.mean, model.faces)
    assert normals[model.landmark_indices[30], 2] > 0.9
    assert model.metadata["faces_flipped"] is False


def test_expression_columns_unit_with_norm_as_std(model):
    shapes = sfm.read_eos_blendshapes(BLENDSHAPES)
    for k, (_name, deformation) in enumerate(shapes):
        assert model.expression_std[k] == pytest.approx(np.linalg.norm(deformation), rel=1e-5)
        np.testing.assert_allclose(model.expression_basis[:, :, k].reshape(-1) * model.expression_std[k],
                                   deformation, atol=1e-4)
    e = np.zeros(6, np.float32)
    e[5] = 1.0  # full "surprise" blendshape
    np.testing.assert_allclose(model.shape(expression=e) - model.mean,
                               shapes[5][1].reshape(-1, 3), atol=1e-3)


def test_without_mapping_no_landmarks(no_transfer):
    model = sfm.load_sfm(MODEL)
    assert np.all(model.landmark_indices == -1) and model.n_expression == 0


def _copy(tmp_path: Path, data: bytes, name: str = "broken.bin") -> Path:
    target = tmp_path / name
    target.write_bytes(data)
    return target


@pytest.mark.parametrize("cut", [3, 100, 50_000, 2_784_000])
def test_truncated_model_file(tmp_path, no_transfer, cut):
    broken = _copy(tmp_path, MODEL.read_bytes()[:cut])
    with pytest.raises(ModelFileError, match="truncated") as info:
        sfm.load_sfm(broken)
    assert str(broken) in str(info.value)


def test_wrong_version_and_sizes(tmp_path, no_transfer):
    data = bytearray(MODEL.read_bytes())
    wrong_version = _copy(tmp_path, bytes(struct.pack("<I", 4) + data[4:]), "v4.bin")
    with pytest.raises(ModelFileError, match="class version 4"):
        sfm.load_sfm(wrong_version)
    huge_rows = bytearray(data)
    huge_rows[4:8] = struct.pack("<i", 10**9)
    with pytest.raises(ModelFileError, match="truncated or malformed"):
        sfm.load_sfm(_copy(tmp_path, bytes(huge_rows), "rows.bin"))
    negative = bytearray(data)
    negative[8:12] = struct.pack("<i", -1)
    with pytest.raises(ModelFileError, match="negative matrix size"):
        sfm.load_sfm(_copy(tmp_path, bytes(negative), "neg.bin"))
    with pytest.raises(ModelFileError, match="trailing bytes"):
        sfm.load_sfm(_copy(tmp_path, bytes(data) + b"\0" * 8, "trailing.bin"))
    with pytest.raises(ModelFileError, match="no such file"):
        sfm.load_sfm(tmp_path / "absent.bin")


def test_blendshapes_of_another_model_rejected(tmp_path, no_transfer):
    name = b"smile"
    other = struct.pack("<Q", 1) + struct.pack("<Q", len(name)) + name + struct.pack("<ii", 30, 1)
    other += np.ones(30, "<f4").tobytes()
    path = _copy(tmp_path, other, "other_blendshapes.bin")
    with pytest.raises(ModelFileError, match="'smile' has 10 vertices, the model 3448") as info:
        sfm.load_sfm(MODEL, expression_path=path)
    assert str(path) in str(info.value)
    truncated = _copy(tmp_path, BLENDSHAPES.read_bytes()[:-10], "cut_blendshapes.bin")
    with pytest.raises(ModelFileError, match="truncated"):
        sfm.load_sfm(MODEL, expression_path=truncated)


def test_registry_dispatch(no_transfer):
    from facebench.models import load

    model = load("sfm", MODEL, landmark_mapping=MAPPING)
    assert model.name == "sfm" and model.n_identity == 63 and model.landmark_indices[30] == 114


def test_real_reflectance_transfer():
    pytest.importorskip("facebench.models.procedural", reason="synthetic model not available yet")
    model = sfm.load_sfm(MODEL, landmark_mapping=MAPPING)
    assert model.reflectance_mean.shape == (3448, 3)
    assert "transferred" in model.reflectance_source
    assert np.all((model.reflectance_mean >= 0) & (model.reflectance_mean <= 1))


def _eigen(matrix: np.ndarray) -> bytes:
    """cereal/Eigen layout: int32 rows, int32 cols, float32 column-major."""
    matrix = np.atleast_2d(np.asarray(matrix, np.float32))
    return struct.pack("<ii", *matrix.shape) + np.asfortranarray(matrix).tobytes(order="F")


def _pca(mean, basis, eigenvalues, triangles) -> bytes:
    out = _eigen(np.reshape(mean, (-1, 1))) + _eigen(basis) + _eigen(np.reshape(eigenvalues, (-1, 1)))
    return out + struct.pack("<Q", len(triangles)) + np.asarray(triangles, "<i4").tobytes()


def test_written_model_with_colour_round_trips(tmp_path):
    """A v1 file written here (column-major, with a colour model) reads back to known values."""
    rng = np.random.default_rng(3)
    V, K = 4, 3
    mean = np.array([[-30, 0, 0], [30, 0, 0], [0, 40, 0], [0, 0, 25]], np.float32)  # a tetrahedron
    basis, _ = np.linalg.qr(rng.normal(size=(3 * V, K)))
    eigenvalues = np.array([16.0, 4.0, 1.0])
    triangles = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]])  # outward for this tetrahedron
    colour_mean = np.full(3 * V, 0.5)
    colour_basis, _ = np.linalg.qr(rng.normal(size=(3 * V, 2)))
    data = struct.pack("<I", 1) + _pca(mean, basis, eigenvalues, triangles)
    data += _pca(colour_mean, colour_basis, [0.01, 0.0025], triangles)
    data += struct.pack("<Q", V) + np.zeros((V, 2), "<f8").tobytes()
    path = _copy(tmp_path, data, "tiny.bin")
    model = sfm.load_sfm(path, color_space="linear")
    np.testing.assert_allclose(model.mean, mean)
    np.testing.assert_allclose(model.identity_basis.reshape(-1, K), basis, atol=1e-6)
    np.testing.assert_allclose(model.identity_std, [4.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(model.faces, triangles)
    assert model.metadata["faces_flipped"] is False
    np.testing.assert_allclose(model.reflectance_mean, 0.5)
    np.testing.assert_allclose(model.reflectance_std, [0.1, 0.05], rtol=1e-5)
    assert model.reflectance_source.startswith("model")
    srgb = sfm.load_sfm(path)
    np.testing.assert_allclose(srgb.reflectance_mean, 0.21404, atol=1e-4)
    flipped = sfm.load_sfm(_copy(tmp_path, data.replace(np.asarray(triangles, "<i4").tobytes(),
                                                        np.asarray(triangles[:, [1, 0, 2]], "<i4").tobytes()),
                                 "flipped.bin"), color_space="linear")
    assert flipped.metadata["faces_flipped"] is True
    np.testing.assert_array_equal(flipped.faces, triangles[:, [1, 2, 0]])
