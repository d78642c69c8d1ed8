"""`score --workers N` and `--dask ADDRESS`: the same results, byte for byte, as one process, under
corresponding-topology and scan protocols; Ctrl-C and a killed worker write nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score, write_results
from facebench.landmarks import IBUG68_MIRROR

pytestmark = pytest.mark.slow


def _sigint_as_at_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default. A shell starts background jobs with SIGINT
    ignored and the child would inherit that (Python then installs no KeyboardInterrupt handler), so
    the test would not be the Ctrl-C of a terminal when the suite itself runs in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from facebench.benchmark.templates import write_template
    from facebench.datasets.generator import GeneratorSettings, generate

    folder = tmp_path_factory.mktemp("parallel")
    dataset = folder / "test.h5"
    generate(GeneratorSettings(n=30, size=32, seed=1), dataset)
    noisy = write_template(dataset, "noisy", folder / "noisy.h5", noise_mm=1.0, pose_noise_deg=2.0, seed=3)
    return dataset, noisy, folder


@pytest.fixture(scope="module")
def scan_submission(files):
    """Predictions for the first 6 of the 30 ids, under a scan protocol: 0, 3 and 5 the truth
    moved by a similarity (+ 0.5 mm noise for 3), 1 with its landmarks all at one point (fails),
    2 with left and right landmarks swapped (the landmark fit warns), 4 missing."""
    from facebench.benchmark.submission_writer import write_submission
    from facebench.datasets.dataset_file import FaceDataset

    dataset, _, folder = files
    ds = FaceDataset(dataset)
    keep = [0, 1, 2, 3, 5]
    rng = np.random.default_rng(7)
    vertices = ds.read("vertices")[keep].astype(np.float64)
    vertices[3] += rng.normal(0.0, 0.5, vertices[3].shape)
    for k in range(len(keep)):
        vertices[k] = 1.05 * vertices[k] @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T + 40.0
    landmarks = vertices[:, ds.landmark_indices].copy()
    landmarks[1] = landmarks[1, :1]
    landmarks[2] = landmarks[2, IBUG68_MIRROR]
    return write_submission(folder / "scan_sub.h5", [ds.ids[i] for i in keep], vertices, method="scan",
                            faces=np.asarray(ds.faces), landmarks=landmarks)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_port=0, host="127.0.0.1") as local:
        yield local


def _written(result, folder):
    paths = write_results(result, folder)
    summary = json.loads(paths["summary"].read_text())
    for key in ("created", "timings_s"):
        summary.pop(key)
    with np.load(paths["per_vertex"]) as npz:
        arrays = {k: (npz[k].dtype.str, npz[k].shape, npz[k].tobytes()) for k in npz.files}
    return paths["per_sample"].read_bytes(), summary, arrays


def test_workers_and_dask_give_the_same_bytes(files, cluster):
    dataset, submission, folder = files
    protocol = get_protocol("synthetic")
    serial = _written(score(dataset, submission, protocol, chunk_size=4), folder / "serial")
    assert serial[1]["metrics"]["rotation_deg"]["n"] == 30  # the pose path is exercised
    two = _written(score(dataset, submission, protocol, chunk_size=4, workers=2), folder / "two")
    assert two == serial
    on_dask = _written(score(dataset, submission, protocol, chunk_size=4, dask_address=cluster.scheduler_address),
                       folder / "dask")
    assert on_dask == serial


def test_scan_protocol_workers_and_dask_give_the_same_bytes(files, scan_submission, cluster):
    dataset, _, folder = files
    protocol = get_protocol("synthetic-scan")
    result = score(dataset, scan_submission, protocol)
    table = result.per_sample
    # failures, warnings and missing predictions land on their own rows
    assert table["scored"].tolist()[:6] == [True, False, True, True, False, True] and not table["scored"][6:].any()
    assert "collinear or coincident" in table.loc[1, "error"] and (table["error"] != "").sum() == 1
    assert table.loc[2, "warning"] and (table["warning"] != "").sum() == 1
    assert table.loc[[0, 5], "shape_mm"].max() < 0.01 and 0.2 < table.loc[3, "shape_mm"] < 1.0
    offsets = result.per_vertex["offsets"]
    assert (np.diff(offsets)[[0, 2, 3, 5]] == 14541).all() and np.diff(offsets)[[1, 4]].tolist() == [0, 0]
    serial = _written(result, folder / "scan_serial")
    assert serial[1]["n_warnings"] == 1 and serial[1]["n_failed"] == 1 and serial[1]["n_scored"] == 4
    two = _written(score(dataset, scan_submission, protocol, workers=2), folder / "scan_two")
    assert two == serial
    three = _written(score(dataset, scan_submission, protocol, workers=3), folder / "scan_three")  # other shards
    assert three == serial
    on_dask = _written(score(dataset, scan_submission, protocol, dask_address=cluster.scheduler_address),
                       folder / "scan_dask")
    assert on_dask == serial


def test_scan_dataset_of_own_topologies_gives_the_same_bytes(tmp_path):
    """A MICC-like file (each scan its own topology, ragged per-vertex results, no mean face) under
    micc-95mm (crop, per-subject RMSE) with 2 workers: the same bytes as one process."""
    import facebench.models as fm
    from facebench.benchmark.landmark_sets import landmark_indices_for
    from facebench.benchmark.submission_writer import write_submission
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample
    from facebench.landmarks import SCAN_LANDMARK_SETS

    model = fm.load("synthetic")
    rng = np.random.default_rng(5)
    faces = np.asarray(model.faces, np.int64)
    li = landmark_indices_for(model, "micc4")
    shapes = [np.asarray(model.shape(rng.standard_normal(model.n_identity)), np.float64) for _ in range(3)]
    dataset = tmp_path / "micc.h5"
    with ScanDatasetWriter(dataset, kind="micc", landmark_names=list(SCAN_LANDMARK_SETS["micc4"]), image_size=16,
                           landmark_set="micc4") as writer:
        for i, x in enumerate(shapes):
            keep = x[:, 2] > 10.0 * i - 15.0  # three crops: three topologies
            remap = np.cumsum(keep) - 1
            kept_faces = faces[keep[faces].all(axis=1)]
            writer.add(ScanSample(id=f"subject_{i + 1}", image=np.zeros((16, 16, 3), np.uint8),
                                  face_box=np.array([0, 0, 99, 99]), frame_size=(100, 100), vertices=x[keep],
                                  faces=remap[kept_faces], landmark_indices=remap[li], source=f"{i}.wrl"))
    moved = np.stack([0.9 * x + np.array([5.0, -20.0, 60.0]) + rng.normal(0, 0.3, x.shape) for x in shapes])
    submission = write_submission(tmp_path / "sub.h5", ["subject_1", "subject_2", "subject_3"], moved, method="m",
                                  faces=faces, landmark_indices=li)
    protocol = get_protocol("micc-95mm")
    serial = _written(score(dataset, submission, protocol), tmp_path / "serial")
    assert serial[1]["n_scored"] == 3 and "mean_per_vertex" not in serial[2]
    sizes = np.diff(np.frombuffer(serial[2]["offsets"][2], np.int64))
    assert len(set(sizes.tolist())) == 3  # three scans, three sizes
    assert _written(score(dataset, submission, protocol, workers=2), tmp_path / "two") == serial


def test_a_facebench_error_in_a_worker_reaches_the_caller_whole(tmp_path):
    """InputFileError does not survive pickling (its __init__ takes two arguments): the worker
    relays it as a FacebenchError of the same message (exit 2), not a broken pool."""
    from facebench.benchmark.parallel_scoring import parallel_scan_samples
    from facebench.benchmark.scoring import _scan_params
    from facebench.errors import FacebenchError

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(FacebenchError, match="junk.h5: not a readable HDF5 file"):
        list(parallel_scan_samples(junk, junk, 2, _scan_params(get_protocol("synthetic-scan")), workers=2))


# ---------------------------------------------------------------------------- interrupted, killed
def _spawned_workers(parent: int) -> list[int]:
    """Process ids of the multiprocessing spawn workers whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie no one reaps is no longer running


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _start_scoring(files, tmp_path):
    """`facebench score --workers 2` under synthetic-scan (30 scans) in its own process group,
    returned once both workers are inside a shard (they hold the submission file open)."""
    dataset, noisy, _ = files
    out = tmp_path / "results"
    command = [sys.executable, "-m", "facebench", "score", "--dataset", str(dataset), "--submission", str(noisy),
               "--protocol", "synthetic-scan", "--workers", "2", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, cwd=Path(__file__).resolve().parents[1],
                               preexec_fn=_sigint_as_at_a_terminal)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    busy = False
    while not busy and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = _spawned_workers(process.pid)
        busy = len(workers) == 2 and all(_has_open(pid, Path(noisy).resolve()) for pid in workers)
    assert busy and process.poll() is None, f"no two busy workers seen:\n{process.stderr.read()}"
    return process, workers, out


@pytest.mark.skipif(sys.platform != "linux", reason="process groups, SIGINT and /proc as on Linux")
def test_ctrl_c_stops_the_workers_and_writes_nothing(files, tmp_path):
    process, workers, out = _start_scoring(files, tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert all(_gone(pid) for pid in workers)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.skipif(sys.platform != "linux", reason="process groups, SIGKILL and /proc as on Linux")
def test_a_killed_worker_is_one_clear_error_and_writes_nothing(files, tmp_path):
    process, workers, out = _start_scoring(files, tmp_path)
    os.kill(workers[0], signal.SIGKILL)  # what the out-of-memory killer does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert "scoring worker process ended abruptly" in last and "nothing was scored or written" in last, stderr
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in workers)
    assert not out.exists() or not any(out.iterdir())
