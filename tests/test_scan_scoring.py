"""Scoring prepared scan datasets (MICC / FaceWarehouse files) under the real-data presets.

The scan datasets are written here with :class:`ScanDatasetWriter` from real meshes: faces of the
procedural model re-meshed per sample (midpoint subdivision, which keeps the surface; cropping),
and, when ``../shared/data`` is present, ICT-FaceKit's neutral and first identity meshes (face
region, mm). Predictions that contain the scanned surface under a random similarity must score
≈ 0 mm under every preset; a mirror image must not; a 2 mm bump must show as 2 mm.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import facebench.models as fm
from facebench.benchmark.align import ScanAlignmentParams
from facebench.benchmark.crop import crop_sphere, scan_nose_tip
from facebench.benchmark.landmark_sets import LandmarkSetError, landmark_indices_for
from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score, write_results
from facebench.benchmark.similarity import AlignmentError
from facebench.benchmark.submission_writer import write_submission
from facebench.benchmark.validation import validate_submission
from facebench.benchmark.validation_report import InvalidSubmission
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample
from facebench.geometry import vertex_normals
from facebench.landmarks import SCAN_LANDMARK_SETS
from facebench.meshio import read_obj, write_mesh

SIZE = 32
MICC4 = list(SCAN_LANDMARK_SETS["micc4"])
FW6 = list(SCAN_LANDMARK_SETS["facewarehouse6"])


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def model():
    return fm.load("synthetic")


def _subdivide(vertices, faces):
    """Midpoint subdivision (the surface is unchanged; original vertices keep their indices)."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.array(faces, np.int32)))
    mesh = mesh.subdivide_midpoint(1)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles, np.int64)


def _crop(vertices, faces, keep_mask, landmarks):
    """Keep the masked vertices and the triangles among them; re-index faces and landmarks."""
    remap = np.full(len(vertices), -1)
    remap[keep_mask] = np.arange(keep_mask.sum())
    new_faces = remap[faces]
    assert (remap[landmarks] >= 0).all()
    return vertices[keep_mask], new_faces[(new_faces >= 0).all(axis=1)], remap[landmarks]


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _random_similarity(rng):
    angle = np.radians(rng.uniform(5, 30))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    shift = rng.normal(size=3)
    return rng.uniform(0.9, 1.1), R, 100.0 * shift / np.linalg.norm(shift)


def _move(vertices, rng):
    s, R, t = _random_similarity(rng)
    return s * np.asarray(vertices) @ R.T + t


def _write_scans(path, kind, names, scans, **kw) -> Path:
    with ScanDatasetWriter(path, kind=kind, landmark_names=names, image_size=SIZE,
                           landmark_set="micc4" if kind == "micc" else "facewarehouse6", **kw) as writer:
        for i, (sample_id, vertices, faces, landmarks) in enumerate(scans):
            writer.add(ScanSample(id=sample_id, image=_image(i), face_box=np.array([0, 0, 99, 99]),
                                  frame_size=(100, 100), vertices=vertices, faces=faces,
                                  landmark_indices=landmarks, source=f"{sample_id}.wrl"))
    return path


@pytest.fixture(scope="module")
def faces_of(model):
    """Three procedural faces (the predictions' surfaces): (V,3) each, mm."""
    rng = np.random.default_rng(11)
    return [np.array(model.shape(rng.standard_normal(model.n_identity)), np.float64) for _ in range(3)]


@pytest.fixture(scope="module")
def micc(tmp_path_factory, model, faces_of) -> Path:
    """A MICC-like file: three scans of three topologies (cropped, subdivided, the model's own)."""
    faces = np.asarray(model.faces, np.int64)
    li = landmark_indices_for(model, "micc4")
    a = _crop(faces_of[0], faces, faces_of[0][:, 2] > 10.0, li)
    b = _subdivide(faces_of[1], faces)
    scans = [("subject_1", *a), ("subject_2", b[0], b[1], li), ("subject_3", faces_of[2], faces, li)]
    return _write_scans(tmp_path_factory.mktemp("micc") / "micc.h5", "micc", MICC4, scans)


@pytest.fixture(scope="module")
def facewarehouse(tmp_path_factory, model, faces_of) -> Path:
    """A FaceWarehouse-like file: one template topology, its 6 landmark ids shared, mm_per_unit 10."""
    faces = np.asarray(model.faces, np.int64)
    li = landmark_indices_for(model, "facewarehouse6")
    scans = [(f"Tester_{i + 1}", faces_of[i], faces, li) for i in range(2)]
    return _write_scans(tmp_path_factory.mktemp("fw") / "fw.h5", "facewarehouse", FW6, scans,
                        shared_landmark_indices=li, mm_per_unit=10.0)


def _moved_submission(path, ids, surfaces, model, landmark_set, seed=3, **kw):
    rng = np.random.default_rng(seed)
    moved = np.stack([_move(x, rng) for x in surfaces])
    return write_submission(path, ids, moved, method=kw.pop("method", "copy"), faces=np.asarray(model.faces),
                            landmark_indices=landmark_indices_for(model, landmark_set), **kw)


# ---------------------------------------------------------------------------- landmark sets, nose tip
def test_landmark_sets_on_the_procedural_model(model):
    named = model.named_landmarks
    np.testing.assert_array_equal(
        landmark_indices_for(model, "facewarehouse6"),
        [named["right_eye_lacrimal"], named["left_eye_lacrimal"], named["subnasale"], named["lips_central"],
         named["right_ear_level"], named["left_ear_level"]])
    # without names: iBUG 40 / 43 / 34 and the vertex nearest the mean of iBUG 63 and 67
    bare = dataclasses.replace(model, named_landmarks={})
    got = landmark_indices_for(bare, "micc4")
    lm = model.landmark_indices
    assert got[:3].tolist() == [lm[39], lm[42], lm[33]]
    mean = np.asarray(model.mean, np.float64)
    target = (mean[lm[62]] + mean[lm[66]]) / 2
    assert np.linalg.norm(mean[got[3]] - target) <= np.linalg.norm(mean - target, axis=1).min() + 1e-9
    assert abs(mean[got[3], 0]) < 1.0  # on the midline
    with pytest.raises(LandmarkSetError, match="right_ear_tragus"):
        landmark_indices_for(bare, "facewarehouse6")
    with pytest.raises(LandmarkSetError, match="unknown scan landmark set"):
        landmark_indices_for(model, "ibug68")


def test_scan_nose_tip_finds_the_models_nose_tip(model):
    li = landmark_indices_for(model, "micc4")
    tip = model.named_landmarks["nose_tip"]
    mean = np.asarray(model.mean, np.float64)
    np.testing.assert_array_equal(scan_nose_tip(mean, mean[li]), mean[tip])
    rng = np.random.default_rng(0)
    for _ in range(8):
        x = np.array(model.shape(rng.standard_normal(model.n_identity), rng.standard_normal(model.n_expression)),
                     np.float64)
        x = _move(x, rng)  # any pose: the direction comes from the landmarks, not the axes
        assert np.linalg.norm(scan_nose_tip(x, x[li]) - x[tip]) < 6.0
    bad = mean[li].copy()
    bad[3] = (bad[0] + bad[1]) / 2  # lips on the eye line: collinear, no direction
    with pytest.raises(AlignmentError, match="collinear"):
        scan_nose_tip(mean, bad)
    with pytest.raises(ValueError, match="crop_center"):
        ScanAlignmentParams(crop_center="nose")


# ---------------------------------------------------------------------------- ≈ 0 under each preset
@pytest.mark.parametrize("preset", ["micc-ramon2019", "micc-95mm", "facewarehouse-ramon2019"])
def test_the_scan_under_a_random_similarity_scores_zero(preset, micc, facewarehouse, model, faces_of, tmp_path):
    dataset = facewarehouse if preset.startswith("facewarehouse") else micc
    ds = FaceDataset(dataset)
    n = len(ds)
    sub = _moved_submission(tmp_path / "sub.h5", ds.ids, faces_of[:n], model, ds.attrs["landmark_set"])
    result = score(dataset, sub, get_protocol(preset))
    table = result.per_sample
    assert table["scored"].all(), table["error"].tolist()
    assert table["shape_mm"].max() < 0.05 and table["rmse_mm"].max() < 0.05
    summary = result.summary
    assert summary["protocol"]["version"] == "1.1" and summary["protocol_id"] == f"{preset}@1.1"
    assert summary["dataset"]["kind"] == ds.kind
    assert summary["dataset"]["mm_per_unit"] == (10.0 if ds.kind == "facewarehouse" else 1.0)
    assert summary["dataset"]["landmark_names"] == ds.landmark_names
    if preset == "micc-95mm":
        assert summary["headline"]["metric"] == "rmse_mm"
    # per-vertex results are ragged, on each scan's own vertices; no mean face for scans
    pv = result.per_vertex
    assert "mean_vertices" not in pv and "mean_per_vertex" not in pv
    sizes = np.diff(pv["offsets"])
    scan_sizes = [len(ds.scan(i)[0]) for i in range(n)]
    if preset == "micc-95mm":
        assert all(0 < k < s for k, s in zip(sizes, scan_sizes))
    else:
        assert sizes.tolist() == scan_sizes
    assert pv["distances"].max() < 0.5


def test_95mm_crop_keeps_the_scan_vertices_within_95mm_of_the_nose_tip(micc, model, faces_of, tmp_path):
    ds = FaceDataset(micc)
    sub = _moved_submission(tmp_path / "sub.h5", ds.ids, faces_of, model, "micc4")
    pv = score(micc, sub, get_protocol("micc-95mm")).per_vertex
    for i in range(len(ds)):
        vertices, _ = ds.scan(i)
        tip = scan_nose_tip(vertices, ds.scan_landmarks(i))
        expected = np.flatnonzero(np.linalg.norm(vertices - tip, axis=1) <= 95.0)
        got = pv["vertex_indices"][pv["offsets"][i]:pv["offsets"][i + 1]]
        np.testing.assert_array_equal(np.sort(got), expected)
        np.testing.assert_array_equal(crop_sphere(vertices, tip, 95.0), expected)
        assert 0 < len(expected) < len(vertices)  # the crop removes the back of the head


# ---------------------------------------------------------------------------- errors that must show
def test_a_2mm_bump_scores_2mm_where_it_is(micc, model, faces_of, tmp_path):
    """A plateau 2 mm out along the normals at the right brow (a local bump that a similarity
    cannot absorb): scan vertices under the plateau are ~2 mm away, those far from it ~0. Plain
    least-squares ICP leans a little toward the bump (1.92 mm measured at its centre)."""
    faces = np.asarray(model.faces, np.int64)
    centre_index = model.landmark_indices[17]  # iBUG 18: right brow, outer end
    surfaces, plateau = [], []
    for x in faces_of:
        d = np.linalg.norm(x - x[centre_index], axis=1)
        weight = np.clip((20.0 - d) / 10.0, 0.0, 1.0)  # 1 within 10 mm, ramp to 0 at 20 mm
        surfaces.append(x + 2.0 * weight[:, None] * vertex_normals(x, faces))
        plateau.append(x[centre_index])
    ds = FaceDataset(micc)
    sub = _moved_submission(tmp_path / "bump.h5", ds.ids, surfaces, model, "micc4")
    result = score(micc, sub, get_protocol("micc-ramon2019"))
    pv = result.per_vertex
    for i in range(len(ds)):
        vertices, _ = ds.scan(i)
        idx = pv["vertex_indices"][pv["offsets"][i]:pv["offsets"][i + 1]]
        dist = pv["distances"][pv["offsets"][i]:pv["offsets"][i + 1]]
        to_centre = np.linalg.norm(vertices[idx] - plateau[i], axis=1)
        inside, far = dist[to_centre < 6.0], dist[to_centre > 35.0]
        assert len(inside) >= 5
        assert np.median(inside) == pytest.approx(2.0, abs=0.15), i
        assert np.median(far) < 0.1, i
    assert 0.01 < result.summary["metrics"]["shape_mm"]["mean"] < 0.3


def test_a_mirrored_prediction_is_not_accepted_as_zero(micc, model, faces_of, tmp_path):
    faces = np.asarray(model.faces, np.int64)
    li = landmark_indices_for(model, "micc4")
    mirrored = np.stack([x * np.array([-1.0, 1.0, 1.0]) for x in faces_of])
    ds = FaceDataset(micc)
    # the mirror's right lacrimal is the original's left: keep the landmark meaning, re-wind faces
    sub = write_submission(tmp_path / "mirror.h5", ds.ids, mirrored, method="mirror", faces=faces[:, ::-1],
                           landmark_indices=li[[1, 0, 2, 3]])
    result = score(micc, sub, get_protocol("micc-ramon2019"))
    assert result.per_sample["shape_mm"].min() > 0.3


def test_degenerate_landmarks_fail_one_sample_with_its_reason(micc, model, faces_of, tmp_path):
    ds = FaceDataset(micc)
    li = landmark_indices_for(model, "micc4")
    landmarks = np.stack([x[li] for x in faces_of])
    landmarks[1] = landmarks[1, :1]  # all four at one point
    sub = write_submission(tmp_path / "lm.h5", ds.ids, np.stack(faces_of), method="lm",
                           faces=np.asarray(model.faces), landmarks=landmarks)
    result = score(micc, sub, get_protocol("micc-ramon2019"))
    table = result.per_sample
    assert table["scored"].tolist() == [True, False, True]
    assert "collinear or coincident" in table.loc[1, "error"]
    assert table.loc[table["scored"], "shape_mm"].max() < 0.05
    assert result.summary["n_failed"] == 1 and result.summary["completion"] == pytest.approx(2 / 3)


def test_wrong_landmark_count_and_missing_faces_are_validation_errors(micc, model, faces_of, tmp_path):
    ds = FaceDataset(micc)
    six = landmark_indices_for(model, "facewarehouse6")
    sub = write_submission(tmp_path / "six.h5", ds.ids, np.stack(faces_of), method="six",
                           faces=np.asarray(model.faces), landmark_indices=six)
    report = validate_submission(sub, ds, topology="any")
    assert "landmark-count" in report.codes and not report.ok
    assert "dataset's landmark set 4" in report.problem("landmark-count").message
    with pytest.raises(InvalidSubmission):
        score(micc, sub, get_protocol("micc-ramon2019"))
    no_faces = write_submission(tmp_path / "nofaces.h5", ds.ids, np.stack(faces_of), method="nf",
                                landmark_indices=landmark_indices_for(model, "micc4"))
    report = validate_submission(no_faces, ds, topology="any")
    assert "vertex-count" in report.codes and "'faces'" in report.problem("vertex-count").message
    # a synthetic-scan protocol on a MICC file is refused with one line
    from facebench.errors import FacebenchError

    with pytest.raises(FacebenchError, match="scores synthetic datasets"):
        score(micc, sub, get_protocol("synthetic-scan"))


def test_validation_extent_comes_from_the_scans(micc, model, faces_of, tmp_path):
    ds = FaceDataset(micc)
    sub = write_submission(tmp_path / "cm.h5", ds.ids, np.stack(faces_of) / 4.0, method="cm",
                           faces=np.asarray(model.faces), landmark_indices=landmark_indices_for(model, "micc4"))
    report = validate_submission(sub, ds, topology="any")
    assert report.ok and "size-mismatch" in report.codes  # a face a quarter of the scans' size


# ---------------------------------------------------------------------------- files, CLI, leaderboard
def test_results_files_and_leaderboard_without_heat_map(micc, model, faces_of, tmp_path):
    from facebench.cli import main

    ds = FaceDataset(micc)
    sub = _moved_submission(tmp_path / "sub.h5", ds.ids, faces_of, model, "micc4", method="copy")
    runner = CliRunner()
    out = tmp_path / "results" / "copy"
    result = runner.invoke(main, ["score", "--dataset", str(micc), "--submission", str(sub),
                                  "--protocol", "micc-ramon2019", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol_id"] == "micc-ramon2019@1.1" and summary["n_scored"] == 3
    with np.load(out / "per_vertex.npz", allow_pickle=False) as data:
        assert "mean_vertices" not in data.files and data["offsets"][-1] == len(data["distances"])
    board = tmp_path / "board"
    result = runner.invoke(main, ["leaderboard", "build", str(out), "--out", str(board)])
    assert result.exit_code == 0, result.output
    assert (board / "leaderboard.csv").is_file()
    assert not list(board.rglob("heatmap_*.png"))  # no shared topology: no heat map
    write_results(score(micc, sub, get_protocol("micc-95mm")), tmp_path / "r95")
    assert json.loads((tmp_path / "r95" / "summary.json").read_text())["headline"]["metric"] == "rmse_mm"


# ---------------------------------------------------------------------------- real meshes (ICT-FaceKit)
@pytest.fixture(scope="module")
def ict_scans(shared_data):
    folder = shared_data / "ict-facekit" / "FaceXModel"
    if not (folder / "generic_neutral_mesh.obj").is_file():
        pytest.skip(f"ICT-FaceKit subset not found at {folder}")
    from facebench.models.ict import FACE_VERTICES

    table = json.loads((folder / "vertex_indices.json").read_text())
    ibug = np.asarray(table["idx_to_landmark_verts"], np.int64)
    meshes = [read_obj(folder / name) for name in ("generic_neutral_mesh.obj", "identity000.obj")]
    full = [(m.vertices * 10.0, np.asarray(m.faces, np.int64)) for m in meshes]  # cm -> mm
    proxy = type("IctProxy", (), {"name": "ict", "named_landmarks": {}, "landmark_indices": ibug,
                                  "mean": full[0][0]})
    li = landmark_indices_for(proxy, "micc4")
    keep = np.zeros(len(full[0][0]), bool)
    keep[:FACE_VERTICES] = True
    scans = [_crop(v, f, keep, li) for v, f in full]
    return full, scans, li


def test_real_ict_meshes_as_scans_folder_submission(ict_scans, tmp_path):
    """ICT-FaceKit face regions as MICC scans; predictions are the full heads (another topology:
    eyes, mouth interior) under random similarities, as a folder of meshes with per-id landmarks."""
    full, scans, li = ict_scans
    dataset = _write_scans(tmp_path / "ict.h5", "micc", MICC4,
                           [(f"subject_{i + 1}", *scan) for i, scan in enumerate(scans)])
    folder = tmp_path / "sub"
    folder.mkdir()
    rng = np.random.default_rng(7)
    landmarks = {}
    for i, (vertices, faces) in enumerate(full):
        moved = _move(vertices, rng)
        write_mesh(folder / f"subject_{i + 1}.ply", moved, faces)
        landmarks[f"subject_{i + 1}"] = moved[li].tolist()
    (folder / "manifest.json").write_text(json.dumps({"format": "facebench-submission", "version": 1,
                                                      "method": "ict-copy", "landmarks": landmarks}))
    for preset in ("micc-ramon2019", "micc-95mm"):
        result = score(dataset, folder, get_protocol(preset))
        assert result.per_sample["scored"].all(), result.per_sample["error"].tolist()
        assert result.per_sample["shape_mm"].max() < 0.05, preset
