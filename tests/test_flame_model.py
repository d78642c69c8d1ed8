"""FLAME loader: fake generic_model.pkl files in the real (chumpy) layout, and hostile pickles."""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import facebench.models.flame as flame
from facebench.errors import ModelFileError
from facebench.geometry import vertex_normals

N_GRID, N_SHAPE, N_EXPR = 15, 6, 4
APEX = (N_GRID // 2) * N_GRID + N_GRID // 2


class FakeCh:
    """Stand-in for chumpy.ch.Ch, pickled like it: NEWOBJ + BUILD(__dict__ minus _parents/_cache)."""

    def __init__(self, x):
        self.__dict__.update({"x": np.asarray(x, np.float64), "_dirty_vars": set(), "_itr": None,
                              "_depends_on_deps": {}, "_make_dense": False, "_make_sparse": False})

    def __getstate__(self):
        return dict(self.__dict__)


FakeCh.__module__, FakeCh.__name__, FakeCh.__qualname__ = "chumpy.ch", "Ch", "Ch"


@contextlib.contextmanager
def fake_chumpy():
    """Register a fake ``chumpy.ch`` module while pickling; restore sys.modules afterwards."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    module.Ch = FakeCh
    package.ch = module
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def cap_mesh_m() -> tuple[np.ndarray, np.ndarray]:
    """A spherical cap facing +z, in metres (FLAME's unit), with CCW-from-outside triangles."""
    g = np.linspace(-0.05, 0.05, N_GRID)
    x, y = np.meshgrid(g, g, indexing="ij")
    z = np.sqrt(0.1**2 - x**2 - y**2) - 0.02
    vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    faces = []
    for i in range(N_GRID - 1):
        for j in range(N_GRID - 1):
            a, b, c, d = i * N_GRID + j, (i + 1) * N_GRID + j, i * N_GRID + j + 1, (i + 1) * N_GRID + j + 1
            faces += [(a, b, c), (c, b, d)]
    return vertices, np.array(faces, dtype=np.uint32)


STD_M = np.array([0.004, 0.003, 0.002, 0.0015, 0.001, 0.0005, 0.002, 0.001, 0.0008, 0.0002])


def flame_dict() -> dict:
    """The keys and types of FLAME's generic_model.pkl (chumpy arrays where FLAME has them)."""
    vertices, faces = cap_mesh_m()
    V = len(vertices)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3 * V, N_SHAPE + N_EXPR)))
    shapedirs = (q * STD_M).reshape(V, 3, N_SHAPE + N_EXPR)
    regressor = np.zeros((5, V))
    regressor[0, [0, N_GRID - 1]] = 0.5  # root joint: midpoint of two rim vertices
    regressor[1:, APEX] = 1.0
    return {
        "v_template": vertices,
        "f": faces,
        "shapedirs": FakeCh(shapedirs),
        "posedirs": FakeCh(np.zeros((V, 3, 36))),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "J": np.zeros((5, 3)),
        "weights": FakeCh(np.full((V, 5), 0.2)),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    with fake_chumpy():
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.fixture
def recorder(monkeypatch):
    calls = []

    def fake(model):
        calls.append(model)
        return model

    monkeypatch.setattr(flame, "with_synthetic_reflectance", fake)
    return calls


@pytest.fixture
def pkl_path(tmp_path) -> Path:
    return write_pickle(tmp_path / "generic_model.pkl", flame_dict())


def test_fake_chumpy_is_removed_after_pickling(pkl_path):
    assert "chumpy.ch" not in sys.modules or sys.modules["chumpy.ch"].__dict__.get("Ch") is not FakeCh
    assert b"chumpy.ch\nCh" in pkl_path.read_bytes()  # pickled under chumpy's real name


def test_round_trip_units_and_bases(pkl_path, recorder):
    data = flame_dict()
    model = flame.load_flame(pkl_path, n_shape=N_SHAPE)
    vertices, faces = cap_mesh_m()
    np.testing.assert_allclose(model.mean, vertices * 1000.0, atol=1e-4)  # m -> mm
    np.testing.assert_array_equal(model.faces, faces.astype(np.int32))
    assert (model.n_identity, model.n_expression) == (N_SHAPE, N_EXPR)
    np.testing.assert_allclose(model.identity_std, STD_M[:N_SHAPE] * 1000.0, rtol=1e-5)
    np.testing.assert_allclose(model.expression_std, STD_M[N_SHAPE:] * 1000.0, rtol=1e-5)
    flat = model.identity_basis.reshape(-1, N_SHAPE)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=0), 1.0, atol=1e-5)
    betas, psi = np.array([1.0, -0.5, 0, 2, 0, 0]), np.array([0, 1.0, 0, -1])
    shapedirs = data["shapedirs"].x.reshape(-1, N_SHAPE + N_EXPR)
    expected = vertices.reshape(-1) + shapedirs @ np.concatenate([betas, psi])  # FLAME's own formula, m
    np.testing.assert_allclose(model.shape(betas, psi).reshape(-1), expected * 1000.0, atol=1e-3)
    assert len(recorder) == 1 and np.all(model.landmark_indices == -1)


def test_frame_metadata_and_origin(pkl_path, recorder):
    model = flame.load_flame(pkl_path, n_shape=N_SHAPE)
    assert model.metadata["faces_flipped"] is False
    assert vertex_normals(model.mean, model.faces)[APEX, 2] > 0.99
    assert model.metadata["identity_std_decreasing"] is True
    assert model.metadata["expression_std_decreasing"] is True
    root = model.metadata["joints_mm"][0]
    np.testing.assert_allclose(root, (model.mean[0] + model.mean[N_GRID - 1]) / 2, atol=1e-3)
    assert "(0.0, 0.0, 80.0) mm" in model.origin and "root joint" in model.origin
    assert model.metadata["unused_arrays"]["posedirs"] == [N_GRID**2, 3, 36]
    assert model.name == "flame" and len(model.version) == 12


def test_default_split_and_expression_count(pkl_path, recorder):
    with pytest.raises(ModelFileError, match="fewer than n_shape=300"):
        flame.load_flame(pkl_path)  # the fake has 10 columns, FLAME 400
    model = flame.load_flame(pkl_path, n_shape=8)
    assert (model.n_identity, model.n_expression) == (8, 2)
    none = flame.load_flame(pkl_path, n_shape=N_SHAPE, n_expression=0)
    assert none.n_expression == 0


def test_landmark_mapping(tmp_path, pkl_path, recorder):
    mapping = tmp_path / "ibug_to_flame.txt"
    mapping.write_text(f"[landmark_mappings]\n31 = {APEX}\n37 = 10\n")
    model = flame.load_flame(pkl_path, n_shape=N_SHAPE, landmark_mapping=mapping)
    assert model.landmark_indices[30] == APEX and model.landmark_indices[36] == 10


def test_python2_module_names_and_protocol0(tmp_path, recorder, pkl_path):
    """Old pickles name numpy.core.multiarray and scipy.sparse.csc; protocol 0 uses copy_reg."""
    data = pkl_path.read_bytes()
    old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    old = old.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")
    assert old != data
    (tmp_path / "old.pkl").write_bytes(old)
    reference = flame.load_flame(pkl_path, n_shape=N_SHAPE)
    assert flame.load_flame(tmp_path / "old.pkl", n_shape=N_SHAPE).digest() == reference.digest()
    p0 = write_pickle(tmp_path / "p0.pkl", flame_dict(), protocol=0)
    assert b"copy_reg\n_reconstructor" in p0.read_bytes()
    assert flame.load_flame(p0, n_shape=N_SHAPE).digest() == reference.digest()


def test_v_template_as_chumpy_and_real_sparse(tmp_path, recorder):
    data = flame_dict()
    data["v_template"] = FakeCh(data["v_template"])
    raw = flame.read_flame_pickle(write_pickle(tmp_path / "ch.pkl", data))
    assert isinstance(raw["v_template"], np.ndarray) and raw["v_template"].shape == (N_GRID**2, 3)
    assert scipy.sparse.issparse(raw["J_regressor"]) and raw["J_regressor"].shape == (5, N_GRID**2)
    np.testing.assert_allclose(raw["J_regressor"].toarray(), data["J_regressor"].toarray())


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_not_executed(tmp_path, recorder):
    marker = tmp_path / "pwned"
    data = {"weights": Evil(marker), **{k: v for k, v in flame_dict().items() if k != "weights"}}
    path = write_pickle(tmp_path / "evil.pkl", data)
    with pytest.raises(ModelFileError, match=r"refusing to unpickle (posix|os|nt)\.system: not a FLAME model class"):
        flame.load_flame(path)
    assert not marker.exists()
    # sanity: the plain unpickler runs the command (the first value) before anything else
    with contextlib.suppress(Exception):  # it then fails on chumpy where chumpy is absent
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_unexpected_classes_refused(tmp_path, recorder):
    from collections import OrderedDict

    path = write_pickle(tmp_path / "od.pkl", OrderedDict(v_template=np.zeros((3, 3))))
    with pytest.raises(ModelFileError, match="refusing to unpickle collections.OrderedDict") as info:
        flame.load_flame(path)
    assert str(path) in str(info.value)
    builtin_eval = tmp_path / "eval.pkl"
    builtin_eval.write_bytes(b"c__builtin__\neval\n(S'1+1'\ntR.")
    with pytest.raises(ModelFileError, match=r"refusing to unpickle __builtin__\.eval"):
        flame.load_flame(builtin_eval)
    reconstructor = tmp_path / "reconstructor.pkl"  # copy_reg._reconstructor with a non-stub class
    reconstructor.write_bytes(b"ccopy_reg\n_reconstructor\n(c__builtin__\nset\nc__builtin__\nobject\nNtR.")
    with pytest.raises(ModelFileError, match="other than the FLAME stubs"):
        flame.load_flame(reconstructor)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("shapedirs"), "missing key 'shapedirs'"),
    (lambda d: d.pop("v_template"), "missing key 'v_template'"),
    (lambda d: d.update(shapedirs=FakeCh(np.zeros((10, 3, 10)))), r"shapedirs must be \(225, 3, K\)"),
    (lambda d: d.update(v_template=np.zeros((225, 2))), r"v_template must be \(V,3\)"),
    (lambda d: d.update(f=np.array([[0, 1, 225]])), r"f must be \(F,3\)"),
    (lambda d: d.update(shapedirs=FakeCh(np.full((225, 3, 10), np.nan))), "shapedirs holds NaN"),
    (lambda d: d.update(shapedirs="not an array"), "shapedirs must be a 3-D numeric array"),
    (lambda d: d.update(J_regressor=scipy.sparse.csc_matrix(np.ones((5, 7)))), r"J_regressor must be \(J, 225\)"),
])
def test_malformed_contents(tmp_path, recorder, change, message):
    data = flame_dict()
    change(data)
    path = write_pickle(tmp_path / "bad.pkl", data)
    with pytest.raises(ModelFileError, match=message) as info:
        flame.load_flame(path, n_shape=N_SHAPE)
    assert str(path) in str(info.value)


def test_zero_column_and_not_a_dict(tmp_path, recorder):
    data = flame_dict()
    zero = data["shapedirs"].x.copy()
    zero[:, :, 2] = 0
    data["shapedirs"] = FakeCh(zero)
    with pytest.raises(ModelFileError, match="zero"):
        flame.load_flame(write_pickle(tmp_path / "zero.pkl", data), n_shape=N_SHAPE)
    with pytest.raises(ModelFileError, match="holds a list, not a dict"):
        flame.load_flame(write_pickle(tmp_path / "list.pkl", [1, 2, 3]))


def test_truncated_and_garbage(tmp_path, recorder, pkl_path):
    data = pkl_path.read_bytes()
    for cut in (1, 50, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a readable FLAME pickle|refusing") as info:
            flame.load_flame(path)
        assert str(path) in str(info.value)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x00\x01\x02 not a pickle")
    with pytest.raises(ModelFileError, match="not a readable FLAME pickle"):
        flame.load_flame(junk)
    with pytest.raises(ModelFileError, match="no such file"):
        flame.load_flame(tmp_path / "absent.pkl")


def test_registry_dispatch(pkl_path, recorder):
    from facebench.models import load

    assert load("flame", pkl_path, n_shape=N_SHAPE).n_identity == N_SHAPE


def test_real_transfer_without_landmarks_is_constant(pkl_path):
    pytest.importorskip("facebench.models.procedural", reason="synthetic model not available yet")
    model = flame.load_flame(pkl_path, n_shape=N_SHAPE)
    assert model.n_reflectance == 0 and "constant albedo" in model.reflectance_source
    np.testing.assert_allclose(model.reflectance_mean, model.reflectance_mean[0][None, :].repeat(N_GRID**2, 0))
