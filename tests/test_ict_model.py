"""Tests of the ICT-FaceKit loader, cache and fetch, on the real subset in ../shared/data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import facebench.models.ict as ict
from facebench.errors import FacebenchError, ModelFileError
from facebench.geometry import vertex_normals
from facebench.meshio import read_obj

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FACEX = SHARED / "ict-facekit" / "FaceXModel"

pytestmark = pytest.mark.skipif(
    not (FACEX / "generic_neutral_mesh.obj").is_file(),
    reason=f"shared ICT-FaceKit subset not found at {FACEX}",
)


def _synthetic_available() -> bool:
    try:
        import facebench.models.procedural  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def _reflectance():
    """Use the real reflectance transfer when the synthetic model exists, else a constant albedo."""
    with pytest.MonkeyPatch.context() as mp:
        if not _synthetic_available():
            from facebench.models.reflectance_transfer import constant_reflectance

            mp.setattr(ict, "with_synthetic_reflectance", lambda m: dataclasses.replace(
                m, **constant_reflectance(m.n_vertices), reflectance_source="constant (test fallback)"))
        yield


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model(module_cache):
    """The face-region model converted (and cached) from the shared folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBENCH_CACHE", str(module_cache))
        return ict.load_ict(FACEX)


@pytest.fixture(scope="module")
def neutral():
    return read_obj(FACEX / "generic_neutral_mesh.obj")


def test_counts_and_triangulation(model, neutral):
    assert model.n_vertices == ict.FACE_VERTICES == 11248
    assert model.n_identity == 10 and model.n_expression == 6
    # face region = polygons [0, 11144) of the README table, each split into (n - 2) triangles
    assert model.n_faces == int(np.sum(neutral.polygon_sizes[:11144] - 2)) == 22288
    assert model.faces.max() < model.n_vertices
    assert len(model.metadata["missing_expressions"]) == 53 - 6
    assert model.metadata["expression_names"] == [
        "browInnerUp_L", "eyeBlink_L", "eyeBlink_R", "jawOpen", "mouthSmile_L", "mouthSmile_R"]
    assert "da5f95a" in model.version and "10 identity" in model.version


def test_millimetres_and_head_frame(model):
    points = model.landmarks(model.mean)
    jaw_width = np.linalg.norm(points[0] - points[16])  # iBUG 1 - 17
    assert 140 < jaw_width < 160
    assert int(np.argmax(points[:, 2])) == 30  # nose tip, iBUG 31, is the most forward landmark
    assert points[45, 0] > 20 and points[36, 0] < -20  # subject's left eye corner (46) at +x
    assert points[17:27, 1].mean() > points[48:68, 1].mean() + 40  # brows above the mouth: +y up
    # faces counter-clockwise from outside: the nose-tip normal points forward (+z)
    normals = vertex_normals(model.mean, model.faces)
    assert normals[model.landmark_indices[30], 2] > 0.9
    assert "131 mm behind the nose tip" in model.origin


def test_identity_and_expression_round_trip_to_obj(model, neutral):
    identity = np.zeros(10, np.float32)
    identity[0] = 1
    expected = read_obj(FACEX / "identity000.obj").vertices[: model.n_vertices] * 10.0
    np.testing.assert_allclose(model.shape(identity=identity), expected, atol=1e-3)
    expression = np.zeros(6, np.float32)
    expression[3] = 1  # jawOpen: coefficient 1 is the full blendshape
    expected = read_obj(FACEX / "jawOpen.obj").vertices[: model.n_vertices] * 10.0
    np.testing.assert_allclose(model.shape(expression=expression), expected, atol=1e-3)
    np.testing.assert_allclose(model.mean, neutral.vertices[: model.n_vertices] * 10.0, atol=1e-4)
    norms = np.linalg.norm(model.identity_basis.reshape(-1, 10), axis=0)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_second_load_uses_cache(model, module_cache, monkeypatch):
    monkeypatch.setenv("FACEBENCH_CACHE", str(module_cache))

    def no_parsing(path, **kw):
        raise AssertionError(f"re-parsed {path}: cache not used")

    monkeypatch.setattr(ict, "read_obj", no_parsing)
    again = ict.load_ict(FACEX)
    assert again.digest() == model.digest()
    assert len(list((module_cache / "ict").glob("*.npz"))) == 1
    from facebench.models import load

    assert load("ict", path=FACEX).digest() == model.digest()


def test_unfetched_load_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path))
    with pytest.raises(FacebenchError, match="facebench models fetch ict"):
        ict.load_ict()
    with pytest.raises(FacebenchError, match="region"):
        ict.load_ict(region="eyes")


def test_fetch_from_file_url_checks_hashes(tmp_path, monkeypatch, model):
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path))
    calls = []
    out = ict.fetch_ict(base_url=FACEX.as_uri(), progress=lambda done, total: calls.append((done, total)))
    root = tmp_path / "ict"
    assert out == root / "ict-face.npz"
    assert sorted(p.name for p in (root / "FaceXModel").iterdir()) == sorted(ict.ICT_SHA256)
    assert calls[-1] == (18, 18) and len(calls) == 18
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["pinned_only"] is True
    assert "identity010.obj" in manifest["skipped_unpinned"] and "browDown_L.obj" in manifest["skipped_unpinned"]
    assert manifest["sha256"] == ict.ICT_SHA256
    fetched = ict.load_ict()
    np.testing.assert_array_equal(fetched.identity_basis, model.identity_basis)
    assert fetched.metadata["fetch"]["pinned_only"] is True
    full = ict.load_ict(region="full")
    assert full.n_vertices == 26719 and full.n_faces == 52220
    assert np.all(np.diff(full.identity_std) < 0), "ICT identity modes: std-scaled PCs, decreasing"


def test_tampered_download_is_rejected_and_discarded(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = bytearray((FACEX / "vertex_indices.json").read_bytes())
    data[100] = ord(" ") if data[100] != ord(" ") else ord("\t")
    (mirror / "vertex_indices.json").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACEBENCH_CACHE", str(cache))
    with pytest.raises(ModelFileError, match="vertex_indices.json.*does not match the pinned"):
        ict.fetch_ict(base_url=mirror.as_uri())
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_unpinned_files_need_the_flag(tmp_path, monkeypatch):
    pinned = dict(ict.ICT_SHA256)
    del pinned["identity001.obj"]
    monkeypatch.setattr(ict, "ICT_SHA256", pinned)
    dest = tmp_path / "ict"
    ict.fetch_ict(base_url=FACEX.as_uri(), dest=dest, n_identity=2, expressions=[])
    first = ict.MorphableModel.load_npz(dest / "ict-face.npz")
    assert first.n_identity == 1 and first.n_expression == 0
    assert first.metadata["fetch"]["skipped_unpinned"] == ["identity001.obj"]
    assert any("0 expression modes" in w for w in first.metadata["warnings"])
    ict.fetch_ict(base_url=FACEX.as_uri(), dest=dest, n_identity=2, expressions=[], allow_unpinned=True)
    second = ict.MorphableModel.load_npz(dest / "ict-face.npz")
    assert second.n_identity == 2
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["unpinned_accepted"] == ["identity001.obj"]
    assert manifest["sha256"]["identity001.obj"] == hashlib.sha256((FACEX / "identity001.obj").read_bytes()).hexdigest()


def test_source_option_converts_a_local_copy(tmp_path):
    folder = _partial_folder(tmp_path, ["generic_neutral_mesh.obj", "vertex_indices.json",
                                        "identity000.obj", "identity002.obj", "jawOpen.obj"])
    out = ict.fetch_ict(source=folder, dest=tmp_path / "cache")
    built = ict.MorphableModel.load_npz(out)
    assert built.n_identity == 1 and built.n_expression == 1
    assert built.metadata["ignored_identity_files"] == ["identity002.obj"]
    assert ict.load_ict(out).digest() == built.digest()


def _partial_folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(FACEX / name)
    return folder


def test_missing_neutral_mesh_is_named(tmp_path):
    folder = _partial_folder(tmp_path, ["vertex_indices.json", "identity000.obj"])
    with pytest.raises(ModelFileError, match="generic_neutral_mesh.obj"):
        ict.convert_ict(folder)


@pytest.mark.parametrize("victim", ["identity000.obj", "generic_neutral_mesh.obj"])
def test_truncated_obj_is_named(tmp_path, victim):
    names = ["generic_neutral_mesh.obj", "vertex_indices.json", "identity000.obj"]
    folder = _partial_folder(tmp_path, [n for n in names if n != victim])
    data = (FACEX / victim).read_bytes()
    (folder / victim).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        ict.convert_ict(folder)
    assert victim in str(info.value)


def test_missing_identity_and_bad_json(tmp_path):
    folder = _partial_folder(tmp_path, ["generic_neutral_mesh.obj", "vertex_indices.json"])
    with pytest.raises(ModelFileError, match="identity000.obj"):
        ict.convert_ict(folder)
    (folder / "vertex_indices.json").unlink()
    (folder / "vertex_indices.json").write_text("{not json")
    (folder / "identity000.obj").symlink_to(FACEX / "identity000.obj")
    with pytest.raises(ModelFileError, match="vertex_indices.json"):
        ict.convert_ict(folder)
