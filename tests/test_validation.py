"""Submission validation: every broken variant gets its own problem code, all at once, and
nothing is ever unpickled or followed outside the submission."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from facebench.benchmark.submission_format import FORMAT
from facebench.benchmark.templates import write_template
from facebench.benchmark.validation import validate_submission
from facebench.benchmark.validation_checks import DEGENERATE_ERROR_FRACTION
from facebench.benchmark.validation_report import InvalidSubmission, ValidationReport
from facebench.conventions import pose_from_angles
from facebench.datasets.dataset_file import DatasetWriter, FaceDataset

N, GRID, L = 6, 12, 5


def grid_mesh(size: int = GRID, extent: float = 150.0) -> tuple[np.ndarray, np.ndarray]:
    """A ``size × size`` vertex grid over ``extent`` mm (a gently curved sheet) and its triangles."""
    u = np.linspace(-extent / 2, extent / 2, size)
    x, y = np.meshgrid(u, u)
    z = 30.0 * np.exp(-(x**2 + y**2) / (2 * 50.0**2))
    vertices = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    index = np.arange(size * size).reshape(size, size)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)
    return vertices, faces


def make_dataset(path: Path, n: int = N, attrs: dict | None = None) -> Path:
    """A tiny dataset: ``n`` deformed grids (144 vertices), 5 landmarks, 8×8 images."""
    base, faces = grid_mesh()
    rng = np.random.default_rng(1)
    vertices = base[None] + rng.normal(0, 2.0, (n, *base.shape)).astype(np.float32)
    yaw = np.linspace(-40, 40, n)
    q = np.asarray(pose_from_angles(yaw, np.zeros(n), np.zeros(n)))[0]
    t = np.tile([0.0, 0.0, 500.0], (n, 1))
    K = np.array([[20.0, 0, 3.5], [0, 20.0, 3.5], [0, 0, 1]])
    with DatasetWriter(path, n=n, height=8, width=8, faces=faces, landmark_indices=np.array([0, 11, 66, 132, 143]),
                       n_vertices=len(base), n_coefficients={"identity": 2}, K=K, attrs=attrs or {}) as writer:
        writer.write(0, {"ids": [f"s{i:03d}" for i in range(n)], "vertices": vertices, "q": q, "t": t,
                         "yaw": yaw, "coefficients": {"identity": np.zeros((n, 2), np.float32)}})
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> FaceDataset:
    return FaceDataset(make_dataset(tmp_path_factory.mktemp("ds") / "tiny.h5"))


@pytest.fixture(scope="module")
def gt_fields(dataset) -> dict:
    """The ground-truth submission's fields, to break one at a time."""
    with h5py.File(dataset.path, "r") as f:
        return {"ids": np.array([s.encode() for s in dataset.ids], dtype=object), "vertices": f["vertices"][()],
                "landmark_indices": f["landmark_indices"][()], "q": f["q"][()], "t": f["t"][()]}


def write_raw(path: Path, fields: dict, attrs: dict | None = None) -> Path:
    """An HDF5 file with exactly these datasets (None: omitted) and attributes."""
    with h5py.File(path, "w") as f:
        for key, value in {"format": FORMAT, "version": 1, "method": "test", **(attrs or {})}.items():
            if value is not None:
                f.attrs[key] = value
        for name, value in fields.items():
            if value is None:
                continue
            if name == "ids" and isinstance(value, np.ndarray) and value.dtype == object:
                f.create_dataset(name, data=value, dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=value)
    return path


def check(tmp_path, dataset, gt_fields, attrs=None, **changes) -> ValidationReport:
    fields = {**gt_fields, **changes}
    return validate_submission(write_raw(tmp_path / "s.h5", fields, attrs), dataset)


# ---------------------------------------------------------------------------------------- valid
@pytest.mark.parametrize("kind", ["gt", "mean", "noisy"])
def test_templates_validate_ok(tmp_path, dataset, kind):
    report = validate_submission(write_template(dataset.path, kind, tmp_path / f"{kind}.h5"), dataset,
                                 require_pose=True)
    assert report.ok and report.problems == [] and report.completion == 1.0
    assert report.n_scored == report.n_expected == N and report.method


def test_raw_gt_and_float64_are_accepted(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=gt_fields["vertices"].astype(np.float64))
    assert report.ok and report.problems == []


def test_float16_is_warned(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=gt_fields["vertices"].astype(np.float16))
    assert report.ok and report.codes == {"low-precision"}


# ---------------------------------------------------------------------------------------- header
def test_unknown_format_and_version(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, attrs={"format": "something-else", "version": 2})
    assert not report.ok and {"unknown-format", "unsupported-version"} <= report.codes
    report = check(tmp_path, dataset, gt_fields, attrs={"format": None, "version": None, "method": None})
    assert {"unknown-format", "unsupported-version", "missing-method"} <= report.codes


def test_missing_fields(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=None)
    assert report.problem("missing-field") and "vertices" in report.problem("missing-field").message
    report = check(tmp_path, dataset, gt_fields, ids=None)
    assert "missing-field" in report.codes and report.completion == 0


def test_unknown_field_is_a_warning(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, extra=np.zeros(3))
    assert report.ok and report.codes == {"unknown-field"}


# ---------------------------------------------------------------------------------------- ids
def test_unknown_ids(tmp_path, dataset, gt_fields):
    ids = gt_fields["ids"].copy()
    ids[2] = b"not-there"
    report = check(tmp_path, dataset, gt_fields, ids=ids)
    assert report.problem("unknown-ids").ids == ["not-there"]
    assert report.problem("missing-ids").ids == ["s002"] and report.completion == pytest.approx(5 / 6)
    assert not report.ok


def test_duplicate_ids(tmp_path, dataset, gt_fields):
    ids = gt_fields["ids"].copy()
    ids[1] = ids[0]
    report = check(tmp_path, dataset, gt_fields, ids=ids)
    assert report.problem("duplicate-ids").ids == ["s000"] and not report.ok


def test_missing_ids_are_counted_and_listed_not_dropped(tmp_path, dataset, gt_fields):
    keep = [0, 2, 3, 5]
    fields = {k: (v[keep] if k not in ("landmark_indices",) else v) for k, v in gt_fields.items()}
    report = validate_submission(write_raw(tmp_path / "s.h5", fields), dataset)
    assert report.ok  # a warning only
    assert report.completion == pytest.approx(4 / 6) and report.n_scored == 4
    assert report.missing_ids == ["s001", "s004"] == report.problem("missing-ids").ids
    assert report.problem("missing-ids").severity == "warning"
    assert "s001" in report.to_text() and report.to_dict()["missing_ids"] == ["s001", "s004"]


def test_no_prediction_at_all_is_an_error(tmp_path, dataset, gt_fields):
    ids = np.array([b"x1", b"x2", b"x3", b"x4", b"x5", b"x6"], dtype=object)
    report = check(tmp_path, dataset, gt_fields, ids=ids)
    assert {"unknown-ids", "no-predictions"} <= report.codes and report.completion == 0.0


def test_numeric_ids_are_refused(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, ids=np.arange(N))
    assert report.problem("bad-dtype") and "ids" in report.problem("bad-dtype").message


# ---------------------------------------------------------------------------------------- vertices
def test_wrong_vertex_count(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=gt_fields["vertices"][:, :100])
    assert "vertex-count" in report.codes and not report.ok


def test_wrong_vertices_shape(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=gt_fields["vertices"][:, :, :2])
    assert report.codes == {"bad-shape"}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_vertices(tmp_path, dataset, gt_fields, value):
    vertices = gt_fields["vertices"].copy()
    vertices[3, 7, 1] = value
    report = check(tmp_path, dataset, gt_fields, vertices=vertices)
    assert report.problem("non-finite-vertices").ids == ["s003"] and not report.ok


def test_integer_vertices_are_refused(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, vertices=np.round(gt_fields["vertices"]).astype(np.int32))
    assert report.problem("bad-dtype") and "vertices" in report.problem("bad-dtype").message


@pytest.mark.parametrize("scale, code, severity, word", [
    (1e-3, "absurd-size", "error", "metres"),
    (1e3, "absurd-size", "error", "micrometres"),
    (0.1, "size-mismatch", "warning", "centimetres"),
])
def test_absurd_sizes(tmp_path, dataset, gt_fields, scale, code, severity, word):
    report = check(tmp_path, dataset, gt_fields, vertices=gt_fields["vertices"] * scale)
    problem = report.problem(code)
    assert problem.severity == severity and word in problem.message and len(problem.ids) == N


# ---------------------------------------------------------------------------------------- faces
def test_faces_out_of_range(tmp_path, dataset, gt_fields):
    faces = dataset.faces.copy()
    faces[4] = [0, 1, 144]  # V = 144
    report = check(tmp_path, dataset, gt_fields, faces=faces)
    assert "faces-out-of-range" in report.codes and not report.ok


def test_one_based_faces_are_out_of_range(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, faces=dataset.faces + 1)
    assert "1-based" in report.problem("faces-out-of-range").message


def test_degenerate_faces_few_warn_many_fail(tmp_path, dataset, gt_fields):
    faces = dataset.faces.copy()
    faces[0] = [0, 0, 1]  # one of 242 triangles: 0.4 %
    report = check(tmp_path, dataset, gt_fields, faces=faces)
    assert report.ok and report.problem("degenerate-faces").severity == "warning"
    assert set(report.codes) == {"degenerate-faces", "faces-differ"}
    many = int(len(faces) * DEGENERATE_ERROR_FRACTION) + 3
    faces[:many, 1] = faces[:many, 0]
    report = check(tmp_path, dataset, gt_fields, faces=faces)
    assert not report.ok and report.problem("degenerate-faces").severity == "error"


def test_collapsed_geometry_is_degenerate(tmp_path, dataset, gt_fields):
    vertices = gt_fields["vertices"].copy()
    vertices[2, :, 0] = vertices[2, 0, 0]  # sample s002 squashed onto a line along y
    vertices[2, :, 2] = 0.0
    path = write_raw(tmp_path / "s.h5", {**gt_fields, "vertices": vertices})
    report = validate_submission(path, dataset, topology="any")  # scan protocols use the surface
    assert report.problem("degenerate-faces").ids == ["s002"] and not report.ok
    assert "degenerate-faces" not in validate_submission(path, dataset, topology="dataset").codes


def test_float_faces_are_refused(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, faces=dataset.faces.astype(np.float32))
    assert "bad-dtype" in report.codes and "vertex-count" not in report.codes


# ---------------------------------------------------------------------------------------- landmarks
def test_landmark_index_out_of_range_and_count(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, landmark_indices=np.array([0, 1, 2, 3, 144]))
    assert "landmark-out-of-range" in report.codes and not report.ok
    report = check(tmp_path, dataset, gt_fields, landmark_indices=np.array([0, 1, -1, 3, -1]))
    assert report.ok  # −1: undefined landmark
    report = check(tmp_path, dataset, gt_fields, landmark_indices=np.array([0, 1, 2]))
    assert "landmark-count" in report.codes


def test_per_sample_landmarks(tmp_path, dataset, gt_fields):
    landmarks = gt_fields["vertices"][:, dataset.landmark_indices].astype(np.float64)
    landmarks[1, 2] = np.nan  # undefined: fine
    assert check(tmp_path, dataset, gt_fields, landmarks=landmarks).ok
    landmarks[4, 0, 0] = np.inf
    assert check(tmp_path, dataset, gt_fields, landmarks=landmarks).problem("non-finite-landmarks").ids == ["s004"]
    report = check(tmp_path, dataset, gt_fields, landmarks=landmarks[:, :3])
    assert "landmark-count" in report.codes


def test_scan_topology_needs_faces_and_landmarks(tmp_path, dataset, gt_fields):
    other, faces = grid_mesh(8)
    vertices = np.repeat(other[None], N, axis=0)
    fields = {**gt_fields, "vertices": vertices, "landmark_indices": None}
    path = write_raw(tmp_path / "scan.h5", fields)
    report = validate_submission(path, dataset, topology="any")
    assert report.problem("vertex-count") and "no-landmarks" in report.codes
    fields.update(faces=faces)
    report = validate_submission(write_raw(tmp_path / "scan.h5", fields), dataset, topology="any")
    assert report.codes == {"no-landmarks"}
    fields.update(landmark_indices=np.array([0, 7, 27, 56, 63]))
    assert validate_submission(write_raw(tmp_path / "scan.h5", fields), dataset, topology="any").ok
    report = validate_submission(write_raw(tmp_path / "scan.h5", fields), dataset, topology="dataset")
    assert "vertex-count" in report.codes


# ---------------------------------------------------------------------------------------- poses
def test_non_unit_and_nan_quaternions(tmp_path, dataset, gt_fields):
    q = gt_fields["q"].copy()
    q[1] *= 1.01
    q[2] *= 1.0005  # within the 1e-3 tolerance
    q[4, 0] = np.nan
    report = check(tmp_path, dataset, gt_fields, q=q)
    assert report.problem("non-unit-quaternion").ids == ["s001"]
    assert report.problem("non-finite-pose").ids == ["s004"] and not report.ok


def test_pose_presence(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, t=None)
    assert report.codes == {"pose-incomplete"}
    fields = {**gt_fields, "q": None, "t": None}
    path = write_raw(tmp_path / "nopose.h5", fields)
    assert validate_submission(path, dataset).ok
    assert validate_submission(path, dataset, require_pose=True).codes == {"missing-pose"}


def test_translation_in_metres_and_behind_camera_warned(tmp_path, dataset, gt_fields):
    report = check(tmp_path, dataset, gt_fields, t=gt_fields["t"] / 1000.0)
    assert report.ok and report.codes == {"translation-scale"}
    report = check(tmp_path, dataset, gt_fields, t=-gt_fields["t"])
    assert report.problem("behind-camera").severity == "warning"


# ---------------------------------------------------------------------------------------- safety
class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_data_is_refused_without_being_unpickled(tmp_path, dataset, gt_fields):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Exploit(marker))
    with h5py.File(tmp_path / "evil.h5", "w") as f:
        f.attrs.update({"format": FORMAT, "version": 1, "method": "evil"})
        f.create_dataset("ids", data=gt_fields["ids"], dtype=h5py.string_dtype())
        f.create_dataset("vertices", data=np.void(payload))  # opaque bytes
        f.create_dataset("q", data=np.array([pickle.dumps(_Exploit(marker), protocol=0)] * N, dtype=object),
                         dtype=h5py.string_dtype("ascii"))
        f.create_dataset("t", shape=(N,), dtype=h5py.vlen_dtype(np.float64))
    report = validate_submission(tmp_path / "evil.h5", dataset)
    assert not report.ok and not marker.exists()
    bad = [p.message for p in report.problems if p.code == "bad-dtype"]
    assert len(bad) == 3 and any("opaque" in m for m in bad) and any("variable-length" in m for m in bad)


def test_external_links_are_not_followed(tmp_path, dataset, gt_fields):
    other = write_raw(tmp_path / "other.h5", gt_fields)
    with h5py.File(tmp_path / "linked.h5", "w") as f:
        f.attrs.update({"format": FORMAT, "version": 1, "method": "links"})
        f.create_dataset("ids", data=gt_fields["ids"], dtype=h5py.string_dtype())
        f["vertices"] = h5py.ExternalLink(str(other), "/vertices")
        f["q"] = h5py.SoftLink("/ids")
    report = validate_submission(tmp_path / "linked.h5", dataset)
    assert [p.code for p in report.problems if p.code == "unsafe-hdf5"] == ["unsafe-hdf5", "unsafe-hdf5"]
    assert not report.ok


def test_unreadable_files(tmp_path, dataset):
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    report = validate_submission(tmp_path / "garbage.h5", dataset)
    assert report.codes == {"unreadable"} and report.completion == 0.0 and len(report.missing_ids) == N
    report = validate_submission(tmp_path / "absent.h5", dataset)
    assert report.codes == {"unreadable"} and "not found" in report.problems[0].message
    whole = write_template(dataset.path, "gt", tmp_path / "whole.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(whole[: len(whole) // 2])
    report = validate_submission(tmp_path / "truncated.h5", dataset)
    assert "unreadable" in report.codes and not report.ok
    (tmp_path / "sub.txt").write_text("x")
    assert validate_submission(tmp_path / "sub.txt", dataset).codes == {"unreadable"}


# ---------------------------------------------------------------------------------------- all at once
def test_every_problem_is_reported_at_once(tmp_path, dataset, gt_fields):
    ids = gt_fields["ids"].copy()
    ids[1] = ids[0]
    vertices = gt_fields["vertices"].copy()
    vertices[3, 0, 0] = np.nan
    q = gt_fields["q"].copy()
    q[5] *= 2.0
    report = check(tmp_path, dataset, gt_fields, attrs={"version": 7}, ids=ids, vertices=vertices, q=q,
                   landmark_indices=np.array([0, 1, 2, 3, 999]))
    assert {"unsupported-version", "duplicate-ids", "missing-ids", "non-finite-vertices", "non-unit-quaternion",
            "landmark-out-of-range"} <= report.codes
    text = report.to_text()
    assert "INVALID" in text and all(code in text for code in report.codes)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is False and as_dict["n_errors"] == len(report.errors) >= 5
    error = InvalidSubmission(report)
    assert error.report is report and "invalid submission" in str(error)


def test_unknown_topology_is_refused(tmp_path, dataset, gt_fields):
    with pytest.raises(ValueError, match="topology"):
        validate_submission(write_raw(tmp_path / "s.h5", gt_fields), dataset, topology="scan")


def test_faces_joining_distant_vertices_are_not_a_surface(tmp_path, dataset, gt_fields):
    """Random triangle indices make no surface (and would make the closest-point search grind):
    refused under topology ``any``; the dataset's own faces pass."""
    rng = np.random.default_rng(0)
    n_vertices = gt_fields["vertices"].shape[1]
    random_faces = rng.integers(0, n_vertices, (4 * n_vertices, 3)).astype(np.int32)
    path = write_raw(tmp_path / "random.h5", {**gt_fields, "faces": random_faces})
    report = validate_submission(path, dataset, topology="any")
    assert "not-a-surface" in report.codes and not report.ok
    assert report.problem("not-a-surface").ids == list(dataset.ids)
    own = write_raw(tmp_path / "own.h5", {**gt_fields, "faces": np.asarray(dataset.faces, np.int32)})
    assert "not-a-surface" not in validate_submission(own, dataset, topology="any").codes
