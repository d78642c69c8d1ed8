"""Bad options and bad files across the command groups: one ``error:`` line and exit 2, never an
``internal error`` (exit 1, which base.py reserves for bugs: a plain ValueError/KeyError/TypeError).

The cases hit the library sites that raise :class:`facebench.errors.InvalidInputError` for input
a user gave (coefficient strings, ``--set color_space``, mode counts, fit sizes), besides the ones
already raising FacebenchError/InputFileError, one or more per command group.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from facebench.benchmark.submission_writer import write_submission
from facebench.cli import main
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.generator import GeneratorSettings, generate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    dataset = root / "synth.h5"
    generate(GeneratorSettings(n=2, size=32, seed=3), dataset)
    other_size = root / "synth40.h5"
    generate(GeneratorSettings(n=2, size=40, seed=4), other_size)
    ds = FaceDataset(dataset)
    submission = write_submission(root / "gt.h5", ds.ids, ds.read("vertices"), method="gt", q=ds.read("q"),
                                  t=ds.read("t"), landmark_indices=ds.landmark_indices)
    empty = root / "empty.bin"
    empty.write_bytes(b"")
    results = root / "results"
    result = CliRunner().invoke(main, ["score", "--dataset", str(dataset), "--submission", str(submission),
                                       "--method", "gt", "--out", str(results)])
    assert result.exit_code == 0, result.output
    broken = root / "broken_results"
    broken.mkdir()
    (broken / "summary.json").write_text("{", encoding="utf-8")
    no_columns = root / "no_columns"
    no_columns.mkdir()
    (no_columns / "summary.json").write_text((results / "summary.json").read_text(encoding="utf-8"),
                                             encoding="utf-8")
    (no_columns / "per_sample.csv").write_text("a,b\n", encoding="utf-8")
    return {"dataset": dataset, "other_size": other_size, "submission": submission, "empty": empty,
            "results": results, "broken": broken, "no_columns": no_columns, "root": root}


MANY = ",".join(["1"] * 101)  # the procedural model has 100 identity modes

CASES = [
    # models: coefficient strings (models/sampling.py), loader options (models/bfm.py), unknown options
    ("export-letters", ["models", "export", "synthetic", "--out", "{root}/x.ply", "--identity", "1,a"],
     "comma-separated numbers"),
    ("export-inf", ["models", "export", "synthetic", "--out", "{root}/x.ply", "--expression", "inf"], "finite"),
    ("export-too-many", ["models", "export", "synthetic", "--out", "{root}/x.ply", "--identity", MANY],
     "101 coefficients"),
    ("bfm2009-color-space", ["models", "info", "bfm2009", "--path", "{empty}", "--set", "color_space=foo"],
     "color_space"),
    ("bfm2017-color-space", ["models", "info", "bfm2017", "--path", "{empty}", "--set", "color_space=foo"],
     "color_space"),
    ("models-unknown-option", ["models", "sample", "synthetic", "--out", "{root}/s", "--set", "foo=1"], "foo"),
    # synth
    ("synth-shard", ["synth", "generate", "--n", "4", "--shard", "5/4", "--out", "{root}/g.h5"], "--shard"),
    ("synth-info-empty", ["synth", "info", "{empty}"], "empty.bin"),
    # submission and score
    ("validate-empty-dataset", ["submission", "validate", "--dataset", "{empty}", "--submission", "{submission}"],
     "empty.bin"),
    ("score-protocol", ["score", "--dataset", "{dataset}", "--submission", "{submission}", "--protocol", "nope",
                        "--out", "{root}/r1"], "unknown protocol"),
    ("score-not-empty", ["score", "--dataset", "{dataset}", "--submission", "{submission}",
                         "--out", "{results}"], "--overwrite"),
    # baselines: fit sizes (baselines/landmark_fit.py)
    ("fit-landmarks-modes", ["baselines", "fit-landmarks", "--dataset", "{dataset}", "--out", "{root}/f.h5",
                             "--identity", "100000"], "cannot fit 100000"),
    # train regressor / multilevel, predict, hpo
    ("regressor-epochs", ["train", "regressor", "--dataset", "{dataset}", "--val", "{dataset}", "--out",
                          "{root}/run1", "--epochs", "0"], "--epochs"),
    ("regressor-val-size", ["train", "regressor", "--dataset", "{dataset}", "--val", "{other_size}", "--out",
                            "{root}/run2"], "synth40.h5"),
    ("multilevel-no-reflectance", ["train", "multilevel", "--dataset", "{dataset}", "--val", "{dataset}",
                                   "--out", "{root}/run3", "--n-reflectance", "0"], "n_reflectance"),
    ("multilevel-weight", ["train", "multilevel", "--dataset", "{dataset}", "--val", "{dataset}",
                           "--out", "{root}/run4", "--weight", "w_reg=abc"], "w_reg"),
    ("predict-empty-checkpoint", ["predict", "--checkpoint", "{empty}", "--dataset", "{dataset}",
                                  "--out", "{root}/p.h5"], "empty.bin"),
    ("hpo-loss", ["hpo", "--dataset", "{dataset}", "--val", "{dataset}", "--loss", "nope", "--out", "{root}/h"],
     "unknown loss"),
    # reproduce
    ("table2-loss", ["reproduce", "table2", "--quick", "--out", "{root}/t2", "--losses", "nope"], "unknown loss"),
    ("table3-runs", ["reproduce", "table3", "--micc", "{dataset}", "--runs", "{root}/nowhere", "--out",
                     "{root}/t3"], "nowhere"),
    # datasets
    ("prepare-micc-root", ["datasets", "prepare", "micc", "--root", "{root}/nowhere", "--out", "{root}/m.h5"],
     "nowhere"),
    ("datasets-info-empty", ["datasets", "info", "{empty}"], "empty.bin"),
    # leaderboard
    ("board-broken-summary", ["leaderboard", "build", "{broken}", "--out", "{root}/b"], "summary.json"),
    ("compare-no-columns", ["leaderboard", "compare", "{results}", "{no_columns}"], "per_sample.csv"),
]


@pytest.mark.parametrize("args, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_option_or_file_is_one_error_line_and_exit_2(files, args, fragment):
    argv = [a.format(**files) for a in args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    # only a progress label may precede it ('datasets prepare' draws its bar before reading)
    assert all(line.startswith("preparing") for line in lines[:-1]), result.output
    assert fragment in errors[0], result.output


def test_invalid_input_error_is_still_a_value_error():
    """Library callers that catch ValueError around the converted sites keep working."""
    from facebench.models import load
    from facebench.models.sampling import parse_coefficients

    with pytest.raises(ValueError, match="comma-separated"):
        parse_coefficients("1,x", 10, "identity")
    with pytest.raises(ValueError, match="cannot keep"):
        load("synthetic").truncated(identity=10_000)

