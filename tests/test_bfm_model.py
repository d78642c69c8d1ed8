"""BFM2009 (.mat) and BFM2017 (statismo HDF5) loaders on small files in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from facebench.errors import ModelFileError
from facebench.geometry import vertex_normals
from facebench.models import bfm

N_GRID = 15  # 225 vertices
K_SHAPE, K_TEX, K_EXPR = 6, 4, 3


def cap_mesh(radius_mm: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """A spherical cap facing +z in the head frame (mm) and its CCW-from-outside triangles."""
    g = np.linspace(-50.0, 50.0, N_GRID)
    x, y = np.meshgrid(g, g, indexing="ij")
    z = np.sqrt(radius_mm**2 - x**2 - y**2) - 20.0
    vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    faces = []
    for i in range(N_GRID - 1):
        for j in range(N_GRID - 1):
            a, b, c, d = i * N_GRID + j, (i + 1) * N_GRID + j, i * N_GRID + j + 1, (i + 1) * N_GRID + j + 1
            faces += [(a, b, c), (c, b, d)]  # x then y: normal +z
    return vertices, np.array(faces, dtype=np.int64)


APEX = (N_GRID // 2) * N_GRID + N_GRID // 2  # vertex at x = y = 0, the "nose tip"


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


def write_mapping(path: Path, table: dict[int, int]) -> Path:
    lines = ["# test mapping", "[landmark_mappings]"] + [f"{k} = {v}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ============================================================================ BFM2009
def bfm2009_fields(pc_scale: float = 1.0) -> dict[str, np.ndarray]:
    """The real 01_MorphableModel.mat layout: column vectors, µm, 0..255 colours, 1-based CW tl."""
    vertices, faces = cap_mesh()
    n = vertices.size
    colours = np.tile([255 * 0.5, 255 * 0.25, 255 * 0.8], (len(vertices), 1))
    return {
        "shapeMU": (vertices * 1000.0).reshape(-1, 1).astype(np.float32),  # mm -> µm
        "shapePC": (orthonormal(n, K_SHAPE, 1) * pc_scale).astype(np.float32),
        "shapeEV": np.array([[4000.0], [3000.0], [2000.0], [1000.0], [500.0], [100.0]], np.float32),
        "texMU": colours.reshape(-1, 1).astype(np.float32),
        "texPC": orthonormal(n, K_TEX, 2).astype(np.float32),
        "texEV": np.array([[300.0], [200.0], [100.0], [50.0]], np.float32),
        "tl": (faces[:, [0, 2, 1]] + 1).astype(np.float64),  # clockwise from outside, as in BFM2009
    }


def save_mat(path: Path, fields: dict) -> Path:
    scipy.io.savemat(str(path), fields)
    return path


def save_mat73(path: Path, fields: dict) -> Path:
    """A MATLAB v7.3-style file: HDF5 with a 512-byte user block, arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, value in fields.items():
            handle.create_dataset(name, data=np.asarray(value).T)
    return path


@pytest.fixture
def mat_path(tmp_path) -> Path:
    return save_mat(tmp_path / "01_MorphableModel.mat", bfm2009_fields())


def test_bfm2009_round_trip_units_faces_std(mat_path):
    fields = bfm2009_fields()
    model = bfm.load_bfm2009(mat_path)
    vertices, faces = cap_mesh()
    np.testing.assert_allclose(model.mean, vertices, atol=1e-3)  # µm -> mm
    np.testing.assert_allclose(model.identity_std, fields["shapeEV"][:, 0] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(model.identity_basis.reshape(-1, K_SHAPE), fields["shapePC"], atol=1e-6)
    assert model.n_expression == 0 and model.n_reflectance == K_TEX
    np.testing.assert_array_equal(model.faces, faces)  # 1-based CW -> 0-based CCW
    assert model.metadata["faces_flipped"] is True
    assert vertex_normals(model.mean, model.faces)[APEX, 2] > 0.99
    assert np.all(model.landmark_indices == -1)
    assert model.name == "bfm2009" and len(model.version) == 12
    assert "(0.0, 0.0, 80.0) mm" in model.origin


def test_bfm2009_shape_matches_file_arithmetic(mat_path):
    fields = bfm2009_fields()
    model = bfm.load_bfm2009(mat_path)
    coef = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    expected = (fields["shapeMU"][:, 0] + fields["shapePC"] @ (coef * fields["shapeEV"][:, 0])) / 1000.0
    np.testing.assert_allclose(model.shape(identity=coef).reshape(-1), expected, atol=1e-3)


def test_bfm2009_non_unit_columns_are_normalized(tmp_path):
    unit = bfm.load_bfm2009(save_mat(tmp_path / "unit.mat", bfm2009_fields()))
    scaled = bfm.load_bfm2009(save_mat(tmp_path / "scaled.mat", bfm2009_fields(pc_scale=2.5)))
    np.testing.assert_allclose(scaled.identity_std, 2.5 * unit.identity_std, rtol=1e-5)
    np.testing.assert_allclose(scaled.identity_basis, unit.identity_basis, atol=1e-6)
    assert scaled.metadata["identity_basis"]["normalized"] and not unit.metadata["identity_basis"]["normalized"]
    coef = np.linspace(-1, 1, K_SHAPE)
    np.testing.assert_allclose(scaled.shape(identity=coef), 2.5 * (unit.shape(identity=coef) - unit.mean) + unit.mean,
                               atol=1e-2)


def test_bfm2009_colours(mat_path):
    linear = bfm.load_bfm2009(mat_path, color_space="linear")
    np.testing.assert_allclose(linear.reflectance_mean[0], [0.5, 0.25, 0.8], atol=1e-6)
    np.testing.assert_allclose(linear.reflectance_std, [300 / 255, 200 / 255, 100 / 255, 50 / 255], rtol=1e-5)
    srgb = bfm.load_bfm2009(mat_path)
    np.testing.assert_allclose(srgb.reflectance_mean[0], [0.21404, 0.050876, 0.60383], atol=1e-4)
    assert "sRGB" in srgb.reflectance_source
    flat = srgb.reflectance_basis.reshape(-1, K_TEX)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=0), 1.0, atol=1e-5)
    # first order: a small step in the file's colour space matches the decoded model
    step = 1e-3
    exact = bfm.srgb_to_linear(linear.reflectance([step]))
    np.testing.assert_allclose(srgb.reflectance([step]), exact, atol=1e-6)


def test_bfm2009_mat73_equals_v5(tmp_path, mat_path):
    v73 = bfm.load_bfm2009(save_mat73(tmp_path / "v73.mat", bfm2009_fields()))
    assert v73.digest() == bfm.load_bfm2009(mat_path).digest()


def test_bfm2009_landmark_mapping(tmp_path, mat_path):
    mapping = write_mapping(tmp_path / "ibug_to_test.txt", {31: APEX, 9: 7})
    model = bfm.load_bfm2009(mat_path, landmark_mapping=mapping)
    assert model.landmark_indices[30] == APEX and model.landmark_indices[8] == 7
    assert (model.landmark_indices >= 0).sum() == 2
    too_far = write_mapping(tmp_path / "ibug_to_big.txt", {31: 53489})  # a real BFM index
    with pytest.raises(ModelFileError, match="53489"):
        bfm.load_bfm2009(mat_path, landmark_mapping=too_far)


def _broken(fields: dict, name: str, value) -> dict:
    fields = dict(fields)
    if value is None:
        del fields[name]
    else:
        fields[name] = value
    return fields


@pytest.mark.parametrize("field, value, message", [
    ("texEV", None, "missing field.*texEV"),
    ("shapeEV", np.ones((K_SHAPE + 1, 1)), "shapeEV must be a column vector"),
    ("shapeMU", np.ones((1, 3 * N_GRID**2)), "shapeMU must be a column vector"),
    ("shapePC", np.ones((10, K_SHAPE)), r"shapePC must be \(675"),
    ("texMU", np.ones((30, 1)), "texMU must be a column vector"),
    ("shapeEV", -np.ones((K_SHAPE, 1)), "shapeEV has negative"),
    ("tl", np.array([[1, 2, 3 * N_GRID**2]]), "tl indexes vertices outside"),
    ("tl", np.array([[0, 1, 2]]), "tl indexes vertices outside"),
    ("tl", np.ones((4, 4)), r"tl must be \(F,3\)"),
])
def test_bfm2009_malformed_fields(tmp_path, field, value, message):
    path = save_mat(tmp_path / "bad.mat", _broken(bfm2009_fields(), field, value))
    with pytest.raises(ModelFileError, match=message) as info:
        bfm.load_bfm2009(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bfm2009_nan(tmp_path):
    fields = bfm2009_fields()
    fields["shapeMU"] = fields["shapeMU"].copy()
    fields["shapeMU"][5] = np.nan
    with pytest.raises(ModelFileError, match="shapeMU holds NaN"):
        bfm.load_bfm2009(save_mat(tmp_path / "nan.mat", fields))


def test_bfm2009_truncated_and_not_mat(tmp_path, mat_path):
    data = mat_path.read_bytes()
    for cut in (10, 200, len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{cut}.mat"
        truncated.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as info:
            bfm.load_bfm2009(truncated)
        assert str(truncated) in str(info.value)
    text = tmp_path / "notes.mat"
    text.write_text("this is not a MATLAB file\n" * 20)
    with pytest.raises(ModelFileError, match="not a readable MATLAB"):
        bfm.load_bfm2009(text)
    with pytest.raises(ModelFileError, match="no such file"):
        bfm.load_bfm2009(tmp_path / "absent.mat")


# ============================================================================ BFM2017
def bfm2017_arrays() -> dict[str, np.ndarray]:
    vertices, faces = cap_mesh()
    n, V = vertices.size, len(vertices)
    rng = np.random.default_rng(5)
    return {
        "vertices": vertices,
        "faces": faces,
        "shape_basis": orthonormal(n, K_SHAPE, 3),
        "shape_var": np.array([900.0, 400.0, 100.0, 25.0, 4.0, 1.0]),
        "expr_mean": rng.normal(scale=0.5, size=n),
        "expr_basis": orthonormal(n, K_EXPR, 4),
        "expr_var": np.array([64.0, 16.0, 4.0]),
        "color_mean": np.tile([0.5, 0.25, 1.0], V),
        "color_basis": orthonormal(n, K_TEX, 6),
        "color_var": np.array([0.01, 0.004, 0.001, 0.0001]),
    }


LANDMARKS = [
    {"id": "center.nose.tip", "coordinates": [0.3, -0.2, 80.1], "uncertainty": {"stddevs": [1, 1, 1]}},
    {"id": "left.eye.corner_outer", "coordinates": [35.9, 21.2, 70.5]},
    {"id": "far.away", "coordinates": [0.0, 0.0, 200.0]},
]


def save_bfm2017(path: Path, arrays: dict | None = None, drop: str | None = None, landmarks=LANDMARKS) -> Path:
    """The statismo layout of model2017-1_bfm_nomouth.h5 (float32 datasets, cells (3,F))."""
    a = arrays or bfm2017_arrays()
    points = a["vertices"].T.astype(np.float32)
    cells = a["faces"].T.astype(np.uint32)
    spaces = {
        "shape": (a["vertices"].reshape(-1), a["shape_basis"], a["shape_var"]),
        "expression": (a["expr_mean"], a["expr_basis"], a["expr_var"]),
        "color": (a["color_mean"], a["color_basis"], a["color_var"]),
    }
    with h5py.File(path, "w") as handle:
        for group, (mean, basis, variance) in spaces.items():
            datasets = {
                f"{group}/model/mean": np.asarray(mean, np.float32),
                f"{group}/model/pcaBasis": np.asarray(basis, np.float32),
                f"{group}/model/pcaVariance": np.asarray(variance, np.float32),
                f"{group}/model/noiseVariance": np.float32(1e-5),
                f"{group}/representer/points": points,
                f"{group}/representer/cells": cells,
            }
            for key, value in datasets.items():
                if key != drop:
                    handle.create_dataset(key, data=value)
        if landmarks is not None:
            handle.create_dataset("metadata/landmarks/json", data=json.dumps(landmarks))
    return path


@pytest.fixture
def h5_path(tmp_path) -> Path:
    return save_bfm2017(tmp_path / "model2017-1_bfm_nomouth.h5")


def test_bfm2017_round_trip(h5_path):
    a = bfm2017_arrays()
    model = bfm.load_bfm2017(h5_path, color_space="linear")
    np.testing.assert_allclose(model.mean, a["vertices"] + a["expr_mean"].reshape(-1, 3), atol=1e-4)
    np.testing.assert_allclose(model.identity_std, np.sqrt(a["shape_var"]), rtol=1e-6)
    np.testing.assert_allclose(model.expression_std, np.sqrt(a["expr_var"]), rtol=1e-6)
    np.testing.assert_allclose(model.reflectance_std, np.sqrt(a["color_var"]), rtol=1e-5)
    np.testing.assert_allclose(model.identity_basis.reshape(-1, K_SHAPE), a["shape_basis"], atol=1e-6)
    np.testing.assert_allclose(model.reflectance_mean[3], [0.5, 0.25, 1.0], atol=1e-6)
    np.testing.assert_array_equal(model.faces, a["faces"])  # already CCW: kept
    assert model.metadata["faces_flipped"] is False
    assert (model.n_identity, model.n_expression, model.n_reflectance) == (K_SHAPE, K_EXPR, K_TEX)
    coef, expr = np.array([1.0, 0, -1, 0, 0, 2]), np.array([0.5, -1.0, 0])
    expected = (a["vertices"].reshape(-1) + a["expr_mean"] + a["shape_basis"] @ (coef * np.sqrt(a["shape_var"]))
                + a["expr_basis"] @ (expr * np.sqrt(a["expr_var"])))
    np.testing.assert_allclose(model.shape(coef, expr).reshape(-1), expected, atol=1e-3)


def test_bfm2017_named_landmarks(h5_path):
    model = bfm.load_bfm2017(h5_path)
    assert model.named_landmarks["center.nose.tip"] == APEX
    assert "far.away" not in model.named_landmarks
    assert model.metadata["named_landmarks_rejected"] == ["far.away"]
    distance = model.metadata["named_landmark_distance_mm"]["center.nose.tip"]
    assert distance == pytest.approx(np.linalg.norm([0.3, -0.2, 0.1]), abs=1e-3)
    corner = model.mean[model.named_landmarks["left.eye.corner_outer"]]
    assert corner[0] > 0  # subject's left at +x, as in the file
    assert np.all(model.landmark_indices == -1)
    loose = bfm.load_bfm2017(h5_path, max_landmark_distance_mm=1000.0)
    assert "far.away" in loose.named_landmarks


def test_bfm2017_landmark_mapping_and_no_json(tmp_path):
    path = save_bfm2017(tmp_path / "nolm.h5", landmarks=None)
    mapping = write_mapping(tmp_path / "ibug.txt", {31: APEX, 37: 3, 46: 200})
    model = bfm.load_bfm2017(path, landmark_mapping=mapping)
    assert model.named_landmarks == {}
    assert model.landmark_indices[[30, 36, 45]].tolist() == [APEX, 3, 200]


@pytest.mark.parametrize("drop, message", [
    ("shape/model/pcaBasis", "missing dataset shape/model/pcaBasis"),
    ("color/model/mean", "missing dataset color/model/mean"),
    ("expression/model/pcaVariance", "missing dataset expression/model/pcaVariance"),
    ("shape/representer/cells", "missing dataset shape/representer/cells"),
])
def test_bfm2017_missing_datasets(tmp_path, drop, message):
    path = save_bfm2017(tmp_path / "bad.h5", drop=drop)
    with pytest.raises(ModelFileError, match=message) as info:
        bfm.load_bfm2017(path)
    assert str(path) in str(info.value)


def test_bfm2017_wrong_shapes_and_values(tmp_path):
    cases = {
        "shape_var": (np.ones(K_SHAPE + 2), r"shape/model/pcaVariance must be \(6,\)"),
        "expr_basis": (np.ones((30, K_EXPR)), r"expression/model/pcaBasis must be \(675, K\)"),
        "color_var": (-np.ones(K_TEX), "negative variances"),
        "expr_mean": (np.full(3 * N_GRID**2, np.nan), "expression/model/mean holds NaN"),
    }
    for key, (value, message) in cases.items():
        arrays = bfm2017_arrays()
        arrays[key] = value
        path = save_bfm2017(tmp_path / f"{key}.h5", arrays)
        with pytest.raises(ModelFileError, match=message):
            bfm.load_bfm2017(path)
    arrays = bfm2017_arrays()
    arrays["faces"] = arrays["faces"].copy()
    arrays["faces"][0, 0] = N_GRID**2
    with pytest.raises(ModelFileError, match="cells indexes vertices outside"):
        bfm.load_bfm2017(save_bfm2017(tmp_path / "cells.h5", arrays))
    broken_json = save_bfm2017(tmp_path / "badjson.h5", landmarks=None)
    with h5py.File(broken_json, "a") as handle:
        handle.create_dataset("metadata/landmarks/json", data="[{\"name\": 1}]")
    with pytest.raises(ModelFileError, match="metadata/landmarks/json"):
        bfm.load_bfm2017(broken_json)


def test_bfm2017_truncated_and_not_hdf5(tmp_path, h5_path):
    data = h5_path.read_bytes()
    for cut in (100, len(data) // 2):
        truncated = tmp_path / f"cut{cut}.h5"
        truncated.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as info:
            bfm.load_bfm2017(truncated)
        assert str(truncated) in str(info.value)
    text = tmp_path / "model.h5"
    text.write_text("not hdf5")
    with pytest.raises(ModelFileError, match="not a readable HDF5"):
        bfm.load_bfm2017(text)


def test_registry_dispatch(mat_path, h5_path):
    from facebench.models import load

    assert load("bfm2009", mat_path).name == "bfm2009"
    assert load("bfm2017", h5_path).n_expression == K_EXPR


def test_real_bfm_mappings_parse():
    share = Path(__file__).resolve().parents[2] / "shared" / "data" / "eos-share"
    if not share.is_dir():
        pytest.skip(f"eos share files not found at {share}")
    lm = bfm.landmarks_from_mapping(share / "ibug_to_bfm2017-1_bfm_nomouth.txt", 53149)
    assert lm[30] == 8156 and (lm >= 0).sum() == 26
