"""Subject-level bootstrap: identical to the image bootstrap without repeats, wider with subject
effects, nominal coverage in simulation; compare verdicts in words with their interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facebench.benchmark import metrics, statistics
from facebench.leaderboard.compare import compare_results


def _clustered(rng, subjects: int, images: int, subject_sd: float = 1.0, noise_sd: float = 0.5):
    effects = rng.normal(0.0, subject_sd, subjects)
    values = np.repeat(effects, images) + rng.normal(0.0, noise_sd, subjects * images)
    return values, np.repeat(np.arange(subjects), images)


def test_distinct_subjects_is_the_image_bootstrap_bit_for_bit():
    x = np.random.default_rng(0).uniform(0, 3, 50)
    x[4] = np.nan
    assert statistics.bootstrap_mean_ci(x, np.arange(50), resamples=500, seed=3) == \
        metrics.bootstrap_mean_ci(x, resamples=500, seed=3)
    assert statistics.resampling_unit(np.arange(5)) == "images"
    assert statistics.resampling_unit([1, 1, 2]) == "subjects" and statistics.resampling_unit(None) == "images"


def test_subject_resampling_is_wider_with_subject_effects():
    values, groups = _clustered(np.random.default_rng(1), 30, 10)
    lo_s, hi_s = statistics.bootstrap_mean_ci(values, groups, resamples=2000)
    lo_i, hi_i = statistics.bootstrap_mean_ci(values, None, resamples=2000)
    assert (hi_s - lo_s) > 1.5 * (hi_i - lo_i)
    assert lo_s < values.mean() < hi_s


def test_subject_bootstrap_coverage_is_nominal():
    """1,000 simulated test sets of 40 subjects x 5 images (true mean 0): the 95% subject-level
    interval covers 0 in 95 % +- 3 % of them; the image-level interval undercovers."""
    rng = np.random.default_rng(2026)
    covered_s = covered_i = 0
    repeats = 1000
    for r in range(repeats):
        values, groups = _clustered(rng, 40, 5)
        lo, hi = statistics.bootstrap_mean_ci(values, groups, resamples=1000, seed=r)
        covered_s += lo <= 0.0 <= hi
        if r < 200:
            lo, hi = statistics.bootstrap_mean_ci(values, None, resamples=1000, seed=r)
            covered_i += lo <= 0.0 <= hi
    assert 0.92 <= covered_s / repeats <= 0.98, covered_s / repeats
    assert covered_i / 200 < 0.85


def _results(folder: Path, method: str, values, subjects) -> Path:
    folder.mkdir(parents=True)
    n = len(values)
    frame = pd.DataFrame({"id": [f"s{i:04d}" for i in range(n)], "scored": True, "yaw": 0.0, "pitch": 0.0,
                          "roll": 0.0, "yaw_bin": "[0,15)", "subject": subjects, "shape_mm": values})
    frame.to_csv(folder / "per_sample.csv", index=False)
    summary = {
        "format": "facebench-results", "version": 1, "method": method,
        "protocol": {"name": "synthetic", "version": "1.0", "description": "x", "yaw_bins": [0, 15, 30, 45, 60, 90]},
        "protocol_id": "synthetic@1.0",
        "dataset": {"path": "x.h5", "name": "d", "sha256": "d" * 64, "n": n, "model": "synthetic"},
        "submission": {"path": "s.h5", "sha256": "ab" * 32, "format": "hdf5"},
        "facebench_version": "0.1.0", "created": "2026-11-21T12:00:00+00:00",
        "n_expected": n, "n_scored": n, "completion": 1.0,
        "metrics": {"shape_mm": metrics.describe(values, resamples=10)}, "bins": {},
        "bin_edges_yaw_deg": [0, 15, 30, 45, 60, 90], "timings_s": {"total": 0.1},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_compare_resamples_subjects_and_gives_a_verdict(tmp_path):
    rng = np.random.default_rng(5)
    base, groups = _clustered(rng, 12, 10, subject_sd=1.0, noise_sd=0.3)
    base = base + 3.0
    # B is worse by a subject-level effect: consistent within subjects, mean 0.15, +-0.5 across them
    shift = np.repeat(0.15 + 0.5 * np.array([1, -1] * 6), 10) + rng.normal(0, 0.02, 120)
    a = _results(tmp_path / "a", "A", base, groups)
    b = _results(tmp_path / "b", "B", base + shift, groups)
    by_subject = compare_results(a, b, resamples=2000)
    assert by_subject.resampling == "subjects" and by_subject.n_subjects == 12
    a_img = _results(tmp_path / "ai", "A", base, np.arange(120))
    b_img = _results(tmp_path / "bi", "B", base + shift, np.arange(120))
    by_image = compare_results(a_img, b_img, resamples=2000)
    assert by_image.resampling == "images"
    width = lambda c: c.ci95_high - c.ci95_low  # noqa: E731
    assert width(by_subject) > 2 * width(by_image)
    # images treated as independent resolve a difference the subjects do not support
    assert by_image.better == "A" and by_image.verdict.startswith("A lower than B")
    assert by_subject.better is None and by_subject.verdict.startswith("no difference resolved")
    assert f"[{by_subject.ci95_low:.4g}, {by_subject.ci95_high:.4g}]" in by_subject.verdict
    assert any("verdict: no difference resolved" in line for line in by_subject.lines())
    assert by_subject.to_dict()["verdict"] == by_subject.verdict


@pytest.mark.parametrize("groups", [None, np.repeat(np.arange(10), 3)])
def test_describe_keeps_keys(groups):
    x = np.random.default_rng(0).uniform(0, 1, 30)
    assert set(statistics.describe(x, groups, resamples=100)) == set(metrics.describe(x, resamples=100))
