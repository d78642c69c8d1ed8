"""Submissions: templates, lazy reading in dataset order, folder and zip layouts, safe unpacking,
and the ``facebench submission`` commands."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facebench.benchmark.submission import load_submission
from facebench.benchmark.submission_format import MANIFEST_NAME
from facebench.benchmark.submission_source import submission_sha256
from facebench.benchmark.submission_writer import SubmissionWriter, write_submission
from facebench.benchmark.submission_zip import UnsafeArchiveError, safe_extract_zip
from facebench.benchmark.templates import write_template
from facebench.benchmark.validation import validate_submission
from facebench.benchmark.validation_report import InvalidSubmission
from facebench.commands.submission import submission as submission_group
from facebench.conventions import pose_from_angles, rotation_error_deg
from facebench.datasets.dataset_file import DatasetWriter, FaceDataset
from facebench.meshio import write_mesh

N = 5
LANDMARKS = np.array([0, 9, 45, 90, 99])


def grid_mesh(size: int = 10, extent: float = 160.0) -> tuple[np.ndarray, np.ndarray]:
    """A curved ``size × size`` vertex sheet over ``extent`` mm and its triangles."""
    u = np.linspace(-extent / 2, extent / 2, size)
    x, y = np.meshgrid(u, u)
    vertices = np.stack([x, y, 25.0 * np.cos(x / 80.0) * np.cos(y / 80.0)], -1).reshape(-1, 3)
    index = np.arange(size * size).reshape(size, size)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    return vertices.astype(np.float32), np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> FaceDataset:
    """5 samples of a 100-vertex mesh, poses at yaw −30..30, 8×8 images."""
    path = tmp_path_factory.mktemp("ds") / "tiny.h5"
    base, faces = grid_mesh()
    rng = np.random.default_rng(0)
    yaw = np.linspace(-30, 30, N)
    with DatasetWriter(path, n=N, height=8, width=8, faces=faces, landmark_indices=LANDMARKS, n_vertices=100,
                       n_coefficients={"identity": 1}, K=np.eye(3)) as writer:
        writer.write(0, {"ids": [f"img{i}" for i in range(N)],
                         "vertices": base + rng.normal(0, 3.0, (N, *base.shape)).astype(np.float32),
                         "q": np.asarray(pose_from_angles(yaw, 0 * yaw, 0 * yaw))[0],
                         "t": np.tile([0.0, 0.0, 600.0], (N, 1)), "yaw": yaw,
                         "coefficients": {"identity": np.zeros((N, 1), np.float32)}})
    return FaceDataset(path)


@pytest.fixture(scope="module")
def truth(dataset) -> dict:
    with h5py.File(dataset.path, "r") as f:
        return {"vertices": f["vertices"][()], "q": f["q"][()], "t": f["t"][()]}


# ---------------------------------------------------------------------------------------- templates
def test_gt_template_reads_back_the_ground_truth(tmp_path, dataset, truth):
    path = write_template(dataset.path, "gt", tmp_path / "gt.h5")
    with load_submission(path, dataset, require_pose=True) as sub:
        assert sub.method == "oracle-gt" and sub.completion == 1.0 and sub.report.ok and sub.has_pose
        samples = list(sub)
    assert [s.id for s in samples] == dataset.ids
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(s.vertices, truth["vertices"][i])
        np.testing.assert_allclose(s.q, truth["q"][i], atol=1e-12)
        np.testing.assert_array_equal(s.t, truth["t"][i])
        np.testing.assert_array_equal(s.landmarks, truth["vertices"][i][LANDMARKS])
        np.testing.assert_array_equal(s.faces, dataset.faces)


def test_noisy_template_has_the_asked_noise_and_is_deterministic(tmp_path, dataset, truth):
    a = write_template(dataset.path, "noisy", tmp_path / "a.h5", noise_mm=0.5, pose_noise_deg=5.0,
                       translation_noise_mm=2.0, seed=3)
    b = write_template(dataset.path, "noisy", tmp_path / "b.h5", noise_mm=0.5, pose_noise_deg=5.0,
                       translation_noise_mm=2.0, seed=3)
    assert submission_sha256(a) != "" and open(a, "rb").read() == open(b, "rb").read()
    with h5py.File(a, "r") as f:
        assert f.attrs["method"] == "noisy-oracle"
        noise = f["vertices"][()].astype(np.float64) - truth["vertices"]
        np.testing.assert_allclose(rotation_error_deg(f["q"][()], truth["q"]), 5.0, atol=1e-9)
        assert np.all(f["q"][:, 0] >= 0)
        assert 1.0 < np.std(f["t"][()] - truth["t"]) < 3.5  # std 2 mm, 15 draws
    assert abs(noise.std() - 0.5) < 0.05 and abs(noise.mean()) < 0.05


def test_mean_template_falls_back_to_the_dataset_average(tmp_path, dataset, truth):
    path = write_template(dataset.path, "mean", tmp_path / "mean.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["mean_source"] == "dataset-average" and f.attrs["method"] == "mean-shape"
        np.testing.assert_allclose(f["vertices"][()], np.broadcast_to(truth["vertices"].mean(0), (N, 100, 3)),
                                   atol=1e-4)
        np.testing.assert_array_equal(f["q"][()], truth["q"])


@pytest.mark.parametrize("same_model", [True, False])
def test_mean_template_uses_the_model_mean(tmp_path, monkeypatch, same_model):
    from conftest import tetra_model_arrays

    import facebench.models
    from facebench.models.morphable_model import MorphableModel

    model = MorphableModel(**tetra_model_arrays())
    monkeypatch.setattr(facebench.models, "load", lambda name, *a, **k: model)  # as if built in
    path = tmp_path / "model.h5"
    truth = np.stack([model.mean + 5.0, model.mean - 1.0])
    with DatasetWriter(path, n=2, height=4, width=4, faces=model.faces, landmark_indices=[0, 1, 2, 3, 3],
                       n_vertices=4, n_coefficients={}, K=np.eye(3),
                       attrs={"model": "tetra", "model_digest": model.digest() if same_model else "other"}) as writer:
        writer.write(0, {"ids": ["a", "b"], "vertices": truth,
                         "q": np.tile([0.0, 1.0, 0.0, 0.0], (2, 1)), "t": np.tile([0.0, 0.0, 500.0], (2, 1))})
    out = write_template(path, "mean", tmp_path / "mean.h5")
    with h5py.File(out, "r") as f:
        if same_model:
            assert f.attrs["mean_source"] == "model:tetra"
            np.testing.assert_array_equal(f["vertices"][1], model.mean)
        else:  # a dataset made with another model: its own average
            assert f.attrs["mean_source"] == "dataset-average"
            np.testing.assert_allclose(f["vertices"][1], truth.mean(0))


def test_template_refuses_unknown_kind(tmp_path, dataset):
    from facebench.errors import FacebenchError

    with pytest.raises(FacebenchError, match="kind"):
        write_template(dataset.path, "perfect", tmp_path / "x.h5")


# ---------------------------------------------------------------------------------------- reading
def test_reading_follows_dataset_order_and_yields_missing_ids(tmp_path, dataset, truth):
    order = [3, 0, 4, 1]  # img2 missing, rows shuffled
    ids = [f"img{i}" for i in order]
    path = write_submission(tmp_path / "s.h5", ids, truth["vertices"][order] + 1.0, method="shuffled")
    with load_submission(path, dataset) as sub:
        assert sub.missing_ids == ["img2"] and sub.completion == pytest.approx(0.8) and not sub.has_pose
        assert sub.report.problem("missing-ids").ids == ["img2"]
        samples = list(sub.samples(chunk_size=2))
    assert [s.id for s in samples] == dataset.ids
    missing = samples[2]
    assert missing.vertices is None and missing.faces is None and missing.q is None
    for i in (0, 1, 3, 4):
        np.testing.assert_allclose(samples[i].vertices, truth["vertices"][i] + 1.0, atol=1e-4)
        assert samples[i].q is None and samples[i].landmarks.shape == (5, 3)


def test_landmark_precedence_and_undefined(tmp_path, dataset, truth):
    coordinates = np.arange(N * 5 * 3, dtype=np.float64).reshape(N, 5, 3)
    path = write_submission(tmp_path / "lm.h5", dataset.ids, truth["vertices"], method="lm",
                            landmark_indices=np.array([0, -1, 2, 3, 4]), landmarks=coordinates)
    with load_submission(path, dataset) as sub:
        np.testing.assert_array_equal(sub.get("img1").landmarks, coordinates[1])
    path = write_submission(tmp_path / "idx.h5", dataset.ids, truth["vertices"], method="lm",
                            landmark_indices=np.array([0, -1, 2, 3, 4]))
    with load_submission(path, dataset) as sub:
        landmarks = sub.get("img1").landmarks
    assert np.isnan(landmarks[1]).all() and np.array_equal(landmarks[2], truth["vertices"][1][2])


def test_invalid_submission_is_refused_with_its_report(tmp_path, dataset, truth):
    vertices = truth["vertices"].copy()
    vertices[0, 0] = np.nan
    path = write_submission(tmp_path / "bad.h5", dataset.ids, vertices, method="bad")
    with pytest.raises(InvalidSubmission) as caught:
        load_submission(path, dataset)
    assert caught.value.report.problem("non-finite-vertices").ids == ["img0"]


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "partial.h5"
    with pytest.raises(RuntimeError, match="never written"):
        with SubmissionWriter(target, n=3, n_vertices=4, method="m") as writer:
            writer.write(0, ids=["a"], vertices=np.zeros((1, 4, 3)))
    with pytest.raises(ZeroDivisionError):
        with SubmissionWriter(target, n=1, n_vertices=4, method="m"):
            raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- folders
def write_folder(folder: Path, dataset, truth, ids=None, suffixes=(".obj", ".ply"), manifest=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = dataset.ids if ids is None else ids
    for k, sample_id in enumerate(ids):
        i = dataset.ids.index(sample_id)
        write_mesh(folder / f"{sample_id}{suffixes[k % len(suffixes)]}", truth["vertices"][i], dataset.faces)
    if manifest is None:
        manifest = {"format": "facebench-submission", "version": 1, "method": "folder-gt",
                    "q": {i: truth["q"][dataset.ids.index(i)].tolist() for i in ids},
                    "t": {i: truth["t"][dataset.ids.index(i)].tolist() for i in ids}}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_folder_round_trip(tmp_path, dataset, truth):
    folder = write_folder(tmp_path / "sub", dataset, truth)
    report = validate_submission(folder, dataset, require_pose=True)
    assert report.ok and report.problems == [] and report.kind == "folder" and report.method == "folder-gt"
    with load_submission(folder, dataset, require_pose=True) as sub:
        assert sub.kind == "folder" and sub.has_pose
        for i, s in enumerate(sub):
            np.testing.assert_allclose(s.vertices, truth["vertices"][i], rtol=1e-7)
            np.testing.assert_array_equal(s.faces, dataset.faces)
            np.testing.assert_allclose(s.q, truth["q"][i], atol=1e-12)
            np.testing.assert_allclose(s.landmarks, truth["vertices"][i][LANDMARKS], rtol=1e-7)


def test_folder_with_other_topologies_under_scan_rules(tmp_path, dataset, truth):
    folder = tmp_path / "scan"
    folder.mkdir()
    for size, sample_id in zip((6, 7, 8, 9, 11), dataset.ids):
        write_mesh(folder / f"{sample_id}.ply", *grid_mesh(size))
    manifest = {"format": "facebench-submission", "version": 1, "method": "scan"}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert validate_submission(folder, dataset, topology="any").codes == {"no-landmarks"}
    assert "vertex-count" in validate_submission(folder, dataset, topology="dataset").codes
    manifest["landmark_indices"] = [0, 1, 2, 3, 35]  # 6×6 = 36 vertices: in range everywhere
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert validate_submission(folder, dataset, topology="any").ok
    manifest["landmark_indices"] = [0, 1, 2, 3, 40]  # outside the 6×6 mesh only
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert validate_submission(folder, dataset, topology="any").problem("landmark-out-of-range").ids == ["img0"]


def test_folder_problems_are_all_reported(tmp_path, dataset, truth):
    folder = write_folder(tmp_path / "sub", dataset, truth, ids=["img0", "img1", "img3"], suffixes=(".obj",))
    write_mesh(folder / "img0.ply", truth["vertices"][0], dataset.faces)  # img0.obj exists too
    (folder / "notes.txt").write_text("hello")
    (folder / "img1.obj").write_text("v 1 2\n")  # broken mesh
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    del manifest["q"]["img3"]
    manifest["q"]["ghost"] = [1, 0, 0, 0]
    manifest["t"]["ghost"] = [0, 0, 1]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    report = validate_submission(folder, dataset)
    assert report.problem("duplicate-ids").ids == ["img0"]
    assert report.problem("unreadable").ids == ["img1"] and "img1.obj" in report.problem("unreadable").message
    assert report.problem("pose-incomplete").ids == ["img3"]
    assert report.problem("orphan-entries").ids == ["ghost"]
    assert report.problem("stray-files").severity == "warning"
    assert report.missing_ids == ["img2", "img4"] and not report.ok


def test_folder_manifest_problems(tmp_path, dataset, truth):
    folder = write_folder(tmp_path / "sub", dataset, truth)
    (folder / MANIFEST_NAME).unlink()
    report = validate_submission(folder, dataset)
    assert "unreadable" in report.codes and "manifest.json" in report.problem("unreadable").message
    (folder / MANIFEST_NAME).write_text("{not json")
    assert "unreadable" in validate_submission(folder, dataset).codes
    (folder / MANIFEST_NAME).write_text(json.dumps({"format": "x", "version": 3}))
    assert {"unknown-format", "unsupported-version", "missing-method"} <= validate_submission(folder, dataset).codes


def test_folder_symlinks_are_refused(tmp_path, dataset, truth):
    folder = write_folder(tmp_path / "sub", dataset, truth, ids=dataset.ids[:4])
    (folder / f"{dataset.ids[4]}.obj").symlink_to(folder / f"{dataset.ids[0]}.obj")
    assert "unsafe-path" in validate_submission(folder, dataset).codes


def test_folder_sha256_depends_on_content(tmp_path, dataset, truth):
    folder = write_folder(tmp_path / "sub", dataset, truth)
    first = submission_sha256(folder)
    assert first == submission_sha256(folder)
    write_mesh(folder / "img0.obj", truth["vertices"][0] + 1, dataset.faces)
    assert submission_sha256(folder) != first


# ---------------------------------------------------------------------------------------- zips
def test_zip_of_hdf5_and_of_folder(tmp_path, dataset, truth):
    h5 = write_template(dataset.path, "gt", tmp_path / "gt.h5")
    with zipfile.ZipFile(tmp_path / "h5.zip", "w") as archive:
        archive.write(h5, "predictions.h5")
    report = validate_submission(tmp_path / "h5.zip", dataset)
    assert report.ok and report.kind == "hdf5"
    folder = write_folder(tmp_path / "sub", dataset, truth)
    with zipfile.ZipFile(tmp_path / "folder.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in folder.iterdir():
            archive.write(entry, f"my-method/{entry.name}")
        archive.writestr("__MACOSX/my-method/._img0.obj", b"\0\5\x16\7")  # macOS resource fork: ignored
        archive.writestr("my-method/.DS_Store", b"\0")
    with load_submission(tmp_path / "folder.zip", dataset) as sub:
        assert sub.report.codes == {"stray-files"}
        assert sub.kind == "folder" and len(list(sub)) == N
        temporary = sub._paths["img0"].parent
        assert temporary.is_dir()
    assert not temporary.exists()  # the unpacked copy is removed on close


def _zip_with(path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(MANIFEST_NAME, json.dumps({"format": "facebench-submission", "version": 1}))
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.create_system = 3
            info.external_attr = mode << 16
        archive.writestr(info, data)
    return path


@pytest.mark.parametrize("name, mode, reason", [
    ("../evil.obj", None, "leaves the archive root"),
    ("sub/../../evil.obj", None, "leaves the archive root"),
    ("/tmp/evil.obj", None, "absolute path"),
    ("link.obj", stat.S_IFLNK | 0o777, "symbolic link"),
    ("fifo.obj", stat.S_IFIFO | 0o644, "not a regular file"),
])
def test_unsafe_zip_members_are_refused(tmp_path, dataset, name, mode, reason):
    archive = _zip_with(tmp_path / "evil.zip", name, b"/etc/passwd", mode)
    report = validate_submission(archive, dataset)
    assert report.codes == {"unsafe-zip"} and reason in report.problems[0].message
    assert not (tmp_path / "evil.obj").exists() and not Path("/tmp/evil.obj").exists()
    with pytest.raises(InvalidSubmission):
        load_submission(archive, dataset)


def test_zip_bomb_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.obj", b"\0" * (3 << 20))  # 3 MiB of zeros compress to a few KiB
    assert (tmp_path / "bomb.zip").stat().st_size < 50_000
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match="exceeds the limit"):
        safe_extract_zip(tmp_path / "bomb.zip", out, max_bytes=1 << 20)
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------- CLI
def test_cli_validate_exit_codes(tmp_path, dataset, truth):
    runner = CliRunner()
    good = write_template(dataset.path, "gt", tmp_path / "gt.h5")
    result = runner.invoke(submission_group, ["validate", "--dataset", str(dataset.path), "--submission", str(good)])
    assert result.exit_code == 0 and "OK" in result.output and "completion: 1.000" in result.output
    vertices = truth["vertices"] * 1000.0
    bad = write_submission(tmp_path / "bad.h5", dataset.ids[:3], vertices[:3], method="um")
    result = runner.invoke(submission_group, ["validate", "--dataset", str(dataset.path), "--submission", str(bad)])
    assert result.exit_code == 2 and "INVALID" in result.output and "absurd-size" in result.output
    assert "missing-ids" in result.output and "Traceback" not in result.output
    result = runner.invoke(submission_group, ["validate", "--dataset", str(dataset.path), "--submission", str(bad),
                                              "--json"])
    assert result.exit_code == 2 and json.loads(result.output)["missing_ids"] == ["img3", "img4"]


def test_cli_bad_dataset_is_one_error_line(tmp_path):
    result = CliRunner().invoke(submission_group, ["validate", "--dataset", str(tmp_path / "none.h5"),
                                                   "--submission", str(tmp_path / "s.h5")])
    assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output


def test_cli_template(tmp_path, dataset):
    out = tmp_path / "noisy.h5"
    result = CliRunner().invoke(submission_group, ["template", "--dataset", str(dataset.path), "--kind", "noisy",
                                                   "--out", str(out), "--noise-mm", "0.2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "noisy-oracle" in result.output and validate_submission(out, dataset, require_pose=True).ok
