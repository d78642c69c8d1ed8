"""Every failure attributed to the right party: bad input exits 2, a bug exits 1 (never blamed on
the submitter, never swallowed as a per-sample failure)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from facebench.benchmark.submission_writer import write_submission
from facebench.cli import main
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.generator import GeneratorSettings, generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("attribution") / "synth.h5"
    generate(GeneratorSettings(n=2, size=32, seed=3), path)
    return path


@pytest.fixture(scope="module")
def good(dataset, tmp_path_factory):
    ds = FaceDataset(dataset)
    path = tmp_path_factory.mktemp("attribution_sub") / "gt.h5"
    return write_submission(path, ds.ids, ds.read("vertices"), method="gt", q=ds.read("q"), t=ds.read("t"),
                            landmark_indices=ds.landmark_indices)


@pytest.mark.parametrize("bug", [ValueError("injected"), KeyError("injected"), TypeError("injected"),
                                 OSError(5, "injected I/O error")])
def test_a_bug_in_the_alignment_is_an_internal_error(dataset, good, tmp_path, monkeypatch, bug):
    import facebench.benchmark.align as align

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(align, "align_and_measure", broken)
    result = CliRunner().invoke(main, ["score", "--dataset", str(dataset), "--submission", str(good),
                                       "--protocol", "synthetic-scan", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert "internal error" in result.output and "could not be aligned" not in result.output
    assert not (tmp_path / "r" / "summary.json").exists()


def test_a_bug_in_corresponding_scoring_is_an_internal_error(dataset, good, tmp_path, monkeypatch):
    import facebench.benchmark.metrics as metrics

    def broken(*args, **kwargs):
        raise ValueError("injected")

    monkeypatch.setattr(metrics, "per_vertex_error_mm", broken)
    result = CliRunner().invoke(main, ["score", "--dataset", str(dataset), "--submission", str(good),
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "internal error: ValueError: injected" in result.output, result.output


def test_debug_shows_the_traceback_of_a_bug(dataset, good, tmp_path, monkeypatch):
    import facebench.benchmark.align as align

    def broken(*args, **kwargs):
        raise ValueError("injected")

    monkeypatch.setattr(align, "align_and_measure", broken)
    result = CliRunner().invoke(main, ["--debug", "score", "--dataset", str(dataset), "--submission", str(good),
                                       "--protocol", "synthetic-scan", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_bad_input_is_exit_2(dataset, tmp_path):
    result = CliRunner().invoke(main, ["score", "--dataset", str(dataset), "--submission", str(tmp_path),
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_score_refuses_an_existing_results_folder_unless_overwrite(dataset, good, tmp_path):
    runner = CliRunner()
    args = ["score", "--dataset", str(dataset), "--submission", str(good), "--out", str(tmp_path / "r")]
    assert runner.invoke(main, args).exit_code == 0
    before = (tmp_path / "r" / "summary.json").read_bytes()
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output.splitlines()[0], refused.output
    assert (tmp_path / "r" / "summary.json").read_bytes() == before
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0
