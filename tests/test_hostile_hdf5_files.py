"""Dataset and submission files from strangers: facebench never reads outside the file.

Each case takes a valid dataset (or submission), rewrites one member into a structure that makes HDF5
read another file holding a marker, and runs the commands a user would: every one exits 2 with one
``error:`` line naming the file and the member, no traceback, and the marker's bytes in no output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facebench.benchmark.templates import write_template
from facebench.cli import main
from facebench.datasets.generator import GeneratorSettings, generate

MARKER = b"MARKER-51c9-never-read"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    dataset = root / "data.h5"
    generate(GeneratorSettings(n=4, size=32, seed=3), dataset)
    submission = root / "gt.h5"
    write_template(dataset, "gt", submission)
    raw = root / "marker.bin"
    raw.write_bytes(MARKER * 64)
    marker_h5 = root / "marker.h5"
    with h5py.File(marker_h5, "w") as f:
        f["data"] = np.frombuffer(MARKER * 64, np.uint8)
        f["faces"] = np.frombuffer(MARKER * 12, np.uint8).astype(np.int32).reshape(-1, 3)
    return {"root": root, "dataset": dataset, "submission": submission, "raw": raw, "marker_h5": marker_h5}


def _replace(f: h5py.File, name: str, make) -> None:
    del f[name]
    make(f, name)


def _external_raw(world):
    def make(f, name):
        f.create_dataset(name, shape=(68,), dtype=np.uint8, external=[(str(world["raw"]), 0, 68)])
    return make


def _external_link(world, target="/faces"):
    def make(f, name):
        f[name] = h5py.ExternalLink(str(world["marker_h5"]), target)
    return make


def _virtual(world):
    def make(f, name):
        layout = h5py.VirtualLayout(shape=(64 * len(MARKER),), dtype=np.uint8)
        layout[:] = h5py.VirtualSource(str(world["marker_h5"]), "data", shape=(64 * len(MARKER),))
        f.create_virtual_dataset(name, layout)
    return make


def _compound(world):
    def make(f, name):
        f.create_dataset(name, (4,), dtype=np.dtype([("a", "<i4"), ("b", "<i4"), ("c", "<i4")]))
    return make


def _soft_outside(world):
    def make(f, name):
        f["elsewhere"] = h5py.ExternalLink(str(world["marker_h5"]), "/")
        f[name] = h5py.SoftLink("/elsewhere/faces")
    return make


DATASET_CASES = {
    "external-raw-landmarks": ("landmark_indices", _external_raw),
    "external-link-faces": ("faces", _external_link),
    "virtual-vertices": ("vertices", _virtual),
    "compound-faces": ("faces", _compound),
    "soft-link-out-faces": ("faces", _soft_outside),
}


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _assert_refused(code: int, output: str, path: Path, members: tuple[str, ...]) -> None:
    assert code == 2, output
    assert "Traceback" not in output and "internal error" not in output
    assert MARKER.decode() not in output
    # one `error:` line naming file and member, or (submission validation) the report: the file on its
    # first line and an `error <code>:` line naming the member
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors and str(path) in output, output
    assert any(f"'{m}'" in line for line in errors for m in members), errors


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_hostile_dataset_refused_by_every_reader(world, case, tmp_path):
    member, maker = DATASET_CASES[case]
    hostile = tmp_path / f"{case}.h5"
    shutil.copy(world["dataset"], hostile)
    with h5py.File(hostile, "a") as f:
        _replace(f, member, maker(world))
    members = (member, "elsewhere")
    out = tmp_path / "results"
    for args in (("datasets", "info", hostile),
                 ("synth", "info", hostile),
                 ("submission", "validate", "--dataset", hostile, "--submission", world["submission"]),
                 ("score", "--dataset", hostile, "--submission", world["submission"], "--protocol", "synthetic",
                  "--method", "m", "--out", out)):
        code, output = _run(*args)
        _assert_refused(code, output, hostile, members)
    assert not out.exists()


def test_deep_json_attribute_refused(world, tmp_path):
    hostile = tmp_path / "deep.h5"
    shutil.copy(world["dataset"], hostile)
    with h5py.File(hostile, "a") as f:
        f.attrs["settings"] = "[" * 100_000 + "]" * 100_000
    code, output = _run("datasets", "info", hostile)
    _assert_refused(code, output, hostile, ("settings",))
    assert "deeper than" in output


@pytest.mark.parametrize("case", ["external-link", "virtual", "external-raw"])
def test_hostile_submission_refused(world, case, tmp_path):
    hostile = tmp_path / f"sub-{case}.h5"
    shutil.copy(world["submission"], hostile)
    member = "vertices"
    with h5py.File(hostile, "a") as f:
        maker = {"external-link": lambda w: _external_link(w, "/data"), "virtual": _virtual,
                 "external-raw": _external_raw}[case](world)
        _replace(f, member, maker)
    out = tmp_path / "results"
    for args in (("submission", "validate", "--dataset", world["dataset"], "--submission", hostile),
                 ("score", "--dataset", world["dataset"], "--submission", hostile, "--protocol", "synthetic",
                  "--method", "m", "--out", out)):
        code, output = _run(*args)
        _assert_refused(code, output, hostile, (member,))
    assert not out.exists()


# ---------------------------------------------------------------------------------------- scan datasets
SCAN_NAMES = ["right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central"]


def _scan_dataset(path: Path) -> Path:
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample

    rng = np.random.default_rng(0)
    with ScanDatasetWriter(path, kind="micc", landmark_names=SCAN_NAMES, image_size=16, landmark_set="micc4") as w:
        for sample_id in ("subject_1", "subject_2"):
            vertices = rng.normal(size=(30, 3)) * 50
            faces = np.stack([np.arange(28), np.arange(1, 29), np.arange(2, 30)], axis=1)
            w.add(ScanSample(id=sample_id, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                             face_box=np.array([1.0, 2.0, 33.0, 34.0]), frame_size=(48, 64), vertices=vertices,
                             faces=faces, landmark_indices=np.array([0, 1, 2, 3]), source=f"{sample_id}/scan.wrl",
                             frame_index=7))
    return path


@pytest.mark.parametrize("case", ["external-raw", "external-link", "virtual", "compound"])
def test_hostile_scan_dataset_refused(world, case, tmp_path):
    hostile = _scan_dataset(tmp_path / f"scan-{case}.h5")
    member = "scans/subject_2/faces" if case != "virtual" else "scans/subject_2/vertices"
    maker = {"external-raw": _external_raw, "external-link": _external_link, "virtual": _virtual,
             "compound": _compound}[case](world)
    with h5py.File(hostile, "a") as f:
        _replace(f, member, maker)
    code, output = _run("datasets", "info", hostile)
    _assert_refused(code, output, hostile, (member,))


def test_scan_member_of_wrong_kind_refused_before_reading(tmp_path):
    hostile = _scan_dataset(tmp_path / "scan-kind.h5")
    with h5py.File(hostile, "a") as f:
        del f["scans/subject_1/faces"]
        f["scans/subject_1/faces"] = np.zeros((4, 3), np.float32)  # float indices
    code, output = _run("datasets", "info", hostile)
    _assert_refused(code, output, hostile, ("scans/subject_1/faces",))
    assert "expected int" in output


@pytest.mark.parametrize("member, make", [
    ("landmarks_2d", lambda f, n: f.create_dataset("landmarks_2d", shape=(n, 10**8, 2), dtype=np.float32)),
    ("vertices", lambda f, n: f.create_dataset("vertices", shape=(n, 10, 3), dtype=np.int64)),
    ("images", lambda f, n: f.create_dataset("images", shape=(n, 2**20, 2**20, 3), dtype=np.uint8)),
])
def test_per_sample_members_checked_against_the_header_before_reading(world, tmp_path, member, make):
    hostile = tmp_path / f"header-{member}.h5"
    shutil.copy(world["dataset"], hostile)
    with h5py.File(hostile, "a") as f:
        n = f["ids"].shape[0]
        del f[member]
        make(f, n)
    code, output = _run("datasets", "info", hostile)
    _assert_refused(code, output, hostile, (member,))


def test_scan_faces_out_of_range_are_the_files_fault(tmp_path):
    hostile = _scan_dataset(tmp_path / "scan-range.h5")
    with h5py.File(hostile, "a") as f:
        faces = f["scans/subject_2/faces"][()]
        faces[0, 0] = 10_000
        del f["scans/subject_2/faces"]
        f["scans/subject_2/faces"] = faces
    code, output = _run("datasets", "info", hostile)
    _assert_refused(code, output, hostile, ("scans/subject_2/faces",))
