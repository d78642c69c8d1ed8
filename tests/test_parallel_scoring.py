"""`score --workers N` and `--dask ADDRESS`: the same results, byte for byte, as one process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score, write_results
from facebench.errors import FacebenchError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from facebench.benchmark.templates import write_template
    from facebench.datasets.generator import GeneratorSettings, generate

    folder = tmp_path_factory.mktemp("parallel")
    dataset = folder / "test.h5"
    generate(GeneratorSettings(n=30, size=32, seed=1), dataset)
    noisy = write_template(dataset, "noisy", folder / "noisy.h5", noise_mm=1.0, pose_noise_deg=2.0, seed=3)
    return dataset, noisy, folder


def _written(result, folder):
    paths = write_results(result, folder)
    summary = json.loads(paths["summary"].read_text())
    for key in ("created", "timings_s"):
        summary.pop(key)
    with np.load(paths["per_vertex"]) as npz:
        arrays = {k: (npz[k].dtype.str, npz[k].shape, npz[k].tobytes()) for k in npz.files}
    return paths["per_sample"].read_bytes(), summary, arrays


def test_workers_and_dask_give_the_same_bytes(files):
    dataset, submission, folder = files
    protocol = get_protocol("synthetic")
    serial = _written(score(dataset, submission, protocol, chunk_size=4), folder / "serial")
    assert serial[1]["metrics"]["rotation_deg"]["n"] == 30  # the pose path is exercised
    two = _written(score(dataset, submission, protocol, chunk_size=4, workers=2), folder / "two")
    assert two == serial

    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_port=0, host="127.0.0.1") as cluster:
        on_dask = _written(score(dataset, submission, protocol, chunk_size=4, dask_address=cluster.scheduler_address),
                           folder / "dask")
    assert on_dask == serial


def test_scan_protocols_refuse_parallel_scoring(files):
    dataset, submission, _ = files
    with pytest.raises(FacebenchError, match="one worker"):
        score(dataset, submission, get_protocol("synthetic-scan"), workers=2)
