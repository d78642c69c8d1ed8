"""Scoring: the issue's pinned numbers, scan protocol invariance, golden summaries, CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from facebench import conventions as cv
from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score, write_results
from facebench.benchmark.submission_writer import write_submission
from facebench.benchmark.templates import write_template
from facebench.benchmark.validation_report import InvalidSubmission
from facebench.cli import main
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.generator import GeneratorSettings, generate
from facebench.landmarks import IBUG68_MIRROR

GOLDEN = Path(__file__).parent / "fixtures" / "golden_summaries.json"
GOLDEN_DATASET = GeneratorSettings(n=6, size=32, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scoring") / "synth.h5"
    generate(GOLDEN_DATASET, path)
    return path


@pytest.fixture(scope="module")
def truth(dataset):
    ds = FaceDataset(dataset)
    return {
        "ids": ds.ids,
        "vertices": ds.read("vertices").astype(np.float64),
        "q": ds.read("q"),
        "t": ds.read("t"),
        "faces": ds.faces,
        "landmark_indices": ds.landmark_indices,
    }


def _submit(path, truth, vertices=None, q=None, t=None, **kw):
    return write_submission(path, truth["ids"], truth["vertices"] if vertices is None else vertices,
                            method=kw.pop("method", "test"), q=truth["q"] if q is None else q,
                            t=truth["t"] if t is None else t, **kw)


def test_ground_truth_scores_zero_on_every_metric(dataset, truth, tmp_path):
    result = score(dataset, _submit(tmp_path / "gt.h5", truth), get_protocol("synthetic"))
    assert set(result.metric_keys) == {"shape_mm", "translation_cm", "rotation_deg", "reprojection_px"}
    for key, d in result.summary["metrics"].items():
        assert d["n"] == 6 and d["mean"] == pytest.approx(0.0, abs=1e-9), key
    assert result.summary["completion"] == 1.0


def test_pinned_values_rotation_translation_vertices(dataset, truth, tmp_path):
    rng = np.random.default_rng(0)
    axis = rng.normal(size=(6, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    delta = np.concatenate([np.full((6, 1), np.cos(np.radians(2.5))), np.sin(np.radians(2.5)) * axis], axis=1)
    q_hat = cv.quat_multiply(truth["q"], delta)  # rotated by exactly 5 degrees
    t_hat = truth["t"] + np.array([30.0, 40.0, 0.0])  # 50 mm = 5 cm
    unit = rng.normal(size=truth["vertices"].shape)
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    moved = truth["vertices"] + unit  # every vertex moved by 1 mm
    result = score(dataset, _submit(tmp_path / "p.h5", truth, moved, q_hat, t_hat), get_protocol("synthetic"))
    table = result.per_sample
    np.testing.assert_allclose(table["rotation_deg"], 5.0, atol=1e-6)
    np.testing.assert_allclose(table["translation_cm"], 5.0, atol=1e-9)
    np.testing.assert_allclose(table["shape_mm"], 1.0, atol=1e-5)
    assert result.summary["metrics"]["rotation_deg"]["mean"] == pytest.approx(5.0, abs=1e-6)


def test_missing_ids_lower_completion_and_are_never_zero(dataset, truth, tmp_path):
    keep = [0, 2, 3, 5]
    path = write_submission(tmp_path / "part.h5", [truth["ids"][i] for i in keep], truth["vertices"][keep] + 0.5,
                            method="partial")
    result = score(dataset, path, get_protocol("synthetic"))
    assert result.summary["n_scored"] == 4 and result.summary["completion"] == pytest.approx(4 / 6)
    assert result.per_sample["scored"].tolist() == [True, False, True, True, False, True]
    assert result.per_sample["shape_mm"].isna().sum() == 2
    assert "rotation_deg" not in result.summary["metrics"]  # no poses submitted


def _random_similarity(rng):
    angle = np.radians(rng.uniform(5, 30))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    shift = rng.normal(size=3)
    return rng.uniform(0.8, 1.2), R, 100.0 * shift / np.linalg.norm(shift)


def test_scan_protocol_is_invariant_to_similarity_and_refuses_mirrors(dataset, truth, tmp_path):
    rng = np.random.default_rng(5)
    moved = np.empty_like(truth["vertices"])
    for i in range(len(moved)):
        s, R, t = _random_similarity(rng)
        moved[i] = s * truth["vertices"][i] @ R.T + t
    result = score(dataset, _submit(tmp_path / "sim.h5", truth, moved), get_protocol("synthetic-scan"))
    assert result.summary["n_scored"] == 6
    assert result.per_sample["shape_mm"].max() < 0.01
    # the mirror image (x -> -x, faces re-wound, landmarks swapped left/right) does not score well
    mirrored = truth["vertices"] * np.array([-1.0, 1.0, 1.0])
    lm = truth["landmark_indices"][IBUG68_MIRROR]
    mirror_path = _submit(tmp_path / "mirror.h5", truth, mirrored, faces=truth["faces"][:, ::-1],
                          landmark_indices=lm, method="mirror")
    mirror = score(dataset, mirror_path, get_protocol("synthetic-scan"))
    assert mirror.per_sample["shape_mm"].min() > 0.3  # asymmetric faces: a reflection is not undone


def test_failed_alignment_marks_one_sample_and_scores_the_rest(dataset, truth, tmp_path):
    landmarks = truth["vertices"][:, truth["landmark_indices"]].copy()
    landmarks[2, :, :] = landmarks[2, :1, :]  # sample 2: all landmarks at one point -> degenerate
    path = _submit(tmp_path / "lm.h5", truth, landmarks=landmarks)
    result = score(dataset, path, get_protocol("synthetic-scan"))
    table = result.per_sample
    assert not table.loc[2, "scored"] and table.loc[2, "error"]
    assert table["scored"].sum() == 5 and table.loc[table["scored"], "shape_mm"].max() < 0.01
    assert result.summary["completion"] == pytest.approx(5 / 6) and result.summary["n_failed"] == 1


def test_invalid_submission_raises_with_report(dataset, truth, tmp_path):
    bad = truth["vertices"].copy()
    bad[1, 5] = np.nan
    with pytest.raises(InvalidSubmission) as info:
        score(dataset, write_submission(tmp_path / "nan.h5", truth["ids"], bad, method="bad"), get_protocol("synthetic"))
    assert not info.value.report.ok


def test_results_files_round_trip(dataset, truth, tmp_path):
    result = score(dataset, _submit(tmp_path / "gt.h5", truth), get_protocol("synthetic"))
    paths = write_results(result, tmp_path / "results")
    summary = json.loads(paths["summary"].read_text())
    assert summary["protocol"]["name"] == "synthetic" and summary["protocol_id"] == "synthetic@1.0"
    assert summary["submission"]["sha256"] and summary["dataset"]["sha256"]
    table = pd.read_csv(paths["per_sample"], dtype={"id": str})
    assert table["id"].tolist() == truth["ids"]
    with np.load(paths["per_vertex"], allow_pickle=False) as per_vertex:
        assert per_vertex["mean_per_vertex"].shape == (truth["vertices"].shape[1],)
        assert per_vertex["distances"].shape == truth["vertices"].shape[:2]
    assert not list((tmp_path / "results").glob(".*partial*"))


def golden_summaries(dataset: Path, work: Path) -> dict:
    """Scores of the template submissions on the golden dataset (what the fixture pins)."""
    out = {}
    for kind in ("gt", "mean", "noisy"):
        sub = write_template(dataset, kind, work / f"{kind}.h5", noise_mm=1.0, pose_noise_deg=2.0, seed=3)
        for name in ("synthetic", "synthetic-scan", "synthetic-scan@1.1", "synthetic-scan@1.0"):  # old: pinned
            summary = score(dataset, sub, get_protocol(name)).summary
            out[f"{kind}/{name}"] = {k: v["mean"] for k, v in summary["metrics"].items()}
    return out


def test_golden_summaries(dataset, tmp_path):
    """Regression fixture (as pycocotools keeps fake results with expected output): the scores of
    the gt/mean/noisy templates on a fixed synthetic dataset. Regenerate with
    ``python tests/fixtures/regenerate_golden.py`` only when a change is meant to move them."""
    expected = json.loads(GOLDEN.read_text())
    got = golden_summaries(dataset, tmp_path)
    assert set(got) == set(expected)
    for key, metrics_expected in expected.items():
        assert set(got[key]) == set(metrics_expected), key
        for metric, value in metrics_expected.items():
            tolerance = 2e-3 if "synthetic-scan" in key else 1e-6
            assert got[key][metric] == pytest.approx(value, abs=tolerance), (key, metric)


def test_cli_exit_codes(dataset, truth, tmp_path):
    runner = CliRunner()
    good = _submit(tmp_path / "gt.h5", truth)
    result = runner.invoke(main, ["score", "--dataset", str(dataset), "--submission", str(good),
                                  "--out", str(tmp_path / "r"), "--leaderboard", str(tmp_path / "board")])
    assert result.exit_code == 0, result.output
    assert "shape_mm" in result.output and (tmp_path / "board" / "leaderboard.csv").is_file()
    bad = truth["vertices"].copy()
    bad[0, 0] = np.inf
    bad_path = write_submission(tmp_path / "bad.h5", truth["ids"], bad, method="bad")
    result = runner.invoke(main, ["score", "--dataset", str(dataset), "--submission", str(bad_path),
                                  "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "invalid submission" in result.output and not (tmp_path / "r2" / "summary.json").exists()
    result = runner.invoke(main, ["score", "--dataset", str(dataset), "--submission", str(good),
                                  "--protocol", "micc-95mm", "--out", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "micc" in result.output
