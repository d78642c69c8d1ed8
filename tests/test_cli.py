"""The facebench CLI: commands work end to end; bad input gives one error line and exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tetra_model_arrays

from facebench import __version__
from facebench.cli import main
from facebench.meshio import read_mesh
from facebench.models import MorphableModel


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_models_list_names_every_loader(runner):
    result = invoke(runner, "models", "list")
    assert result.exit_code == 0
    for name in ("synthetic", "ict", "bfm2009", "bfm2017", "sfm", "flame", "npz"):
        assert name in result.output


def test_models_info_synthetic_json(runner):
    result = invoke(runner, "models", "info", "synthetic", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["summary"]["name"] == "synthetic"
    assert data["summary"]["identity_modes"] >= 80 and data["summary"]["expression_modes"] == 64
    assert 130 <= data["summary"]["extent_mm"]["width_x"] <= 160
    assert len(data["landmarks"]) == 68 and data["landmarks"][30]["name"] == "nose tip"


def test_models_info_text_has_landmark_table(runner):
    result = invoke(runner, "models", "info")
    assert result.exit_code == 0
    assert "nose tip" in result.output and "origin" in result.output


def test_export_applies_coefficients(runner, tmp_path):
    from facebench.models import load

    model = load("synthetic")
    out = tmp_path / "face.ply"
    result = invoke(runner, "models", "export", "synthetic", "--out", out, "--identity", "2,0,-1",
                    "--expression", "0,1.5")
    assert result.exit_code == 0, result.output
    mesh = read_mesh(out)
    expected = model.shape(np.array([2, 0, -1], np.float32), np.array([0, 1.5], np.float32))
    np.testing.assert_allclose(mesh.vertices, expected, atol=1e-4)
    np.testing.assert_array_equal(mesh.faces, model.faces)


def test_export_rejects_too_many_coefficients(runner, tmp_path):
    result = invoke(runner, "models", "export", "npz", "--path", MorphableModel(**tetra_model_arrays()).save(
        tmp_path / "t.npz"), "--out", tmp_path / "x.obj", "--identity", "1,2,3")
    assert_one_line_error(result, "identity", "2 modes")


def test_sample_writes_meshes_coefficients_and_preview(runner, tmp_path):
    out = tmp_path / "faces"
    result = invoke(runner, "models", "sample", "synthetic", "--n", 3, "--seed", 7, "--out", out)
    assert result.exit_code == 0, result.output
    meshes = sorted(out.glob("face_*.obj"))
    assert len(meshes) == 3
    coefficients = np.load(out / "coefficients.npz", allow_pickle=False)
    from facebench.models import load

    model = load("synthetic")
    expected = model.shape(coefficients["identity"][1], coefficients["expression"][1])
    np.testing.assert_allclose(read_mesh(meshes[1]).vertices, expected, atol=1e-3)
    assert (out / "preview.png").stat().st_size > 10_000
    # the same seed gives the same faces
    out2 = tmp_path / "again"
    invoke(runner, "models", "sample", "synthetic", "--n", 3, "--seed", 7, "--out", out2, "--no-preview")
    np.testing.assert_array_equal(np.load(out2 / "coefficients.npz")["identity"], coefficients["identity"])


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["models", "info", "bogus"], ["unknown model"]),
        (["models", "info", "bfm2009"], ["give its path"]),
        (["models", "info", "bfm2009", "--path", "{tmp}/absent.mat"], ["absent.mat"]),
        (["models", "info", "npz", "--path", "{tmp}/garbage.npz"], ["garbage.npz"]),
        (["models", "info", "flame", "--path", "{tmp}/garbage.npz"], ["garbage.npz"]),
        (["models", "info", "sfm", "--path", "{tmp}/garbage.npz"], ["garbage.npz"]),
        (["models", "info", "bfm2017", "--path", "{tmp}/garbage.npz"], ["garbage.npz"]),
        (["models", "info", "bfm2009", "--path", "{tmp}/garbage.npz"], ["garbage.npz"]),
        (["models", "info", "ict", "--path", "{tmp}"], [""]),
        (["models", "info", "synthetic", "--landmarks", "{tmp}/absent.txt"], ["takes no option"]),
        (["models", "info", "synthetic", "--set", "bogus"], ["KEY=VALUE"]),
        (["models", "info", "ict", "--set", "region=nowhere", "--path", "{tmp}"], [""]),
    ],
)
def test_bad_model_files_give_one_error_line(runner, tmp_path, args, fragments):
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage" * 100)
    result = invoke(runner, *[a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(result, *fragments)


def test_console_script_exit_code_without_traceback(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, "-m", "facebench.cli", "models", "info", "npz", "--path", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr


def test_models_info_reads_every_format(runner, tmp_path, shared_data):
    """`models info` on a file of each format: BFM/FLAME files written in their real layouts by the
    loader tests' writers, ICT and SFM from the real files in ../shared/data."""
    from test_bfm_model import bfm2009_fields, save_bfm2017, save_mat
    from test_flame_model import flame_dict, write_pickle

    eos = shared_data / "eos-share"
    cases = {
        "bfm2009": ["--path", save_mat(tmp_path / "01_MorphableModel.mat", bfm2009_fields())],
        "bfm2017": ["--path", save_bfm2017(tmp_path / "model2017.h5")],
        "flame": ["--path", write_pickle(tmp_path / "generic_model.pkl", flame_dict()), "--set", "n_shape=6"],
        "sfm": ["--path", eos / "sfm_shape_3448.bin", "--landmarks", eos / "ibug_to_sfm.txt",
                "--expressions", eos / "expression_blendshapes_3448.bin"],
        "ict": ["--path", shared_data / "ict-facekit" / "FaceXModel"],
    }
    for name, args in cases.items():
        result = invoke(runner, "models", "info", name, *args, "--json")
        assert result.exit_code == 0, (name, result.output)
        summary = json.loads(result.output)["summary"]
        assert summary["name"] == name and summary["vertices"] > 3 and summary["faces"] > 0
        width = summary["extent_mm"]["width_x"]
        assert (100 < width < 400) if name in ("sfm", "ict") else width > 0, (name, width)
    sfm = json.loads(invoke(runner, "models", "info", "sfm", *cases["sfm"], "--json").output)["summary"]
    assert (sfm["vertices"], sfm["identity_modes"], sfm["expression_modes"]) == (3448, 63, 6)
    assert sfm["landmarks_defined"] == 50


# ---------------------------------------------------------------------------------------- train
def _help_options(runner, *args) -> set[str]:
    result = invoke(runner, *args, "--help")
    assert result.exit_code == 0, result.output
    return set(re.findall(r"(?m)^  (--[\w-]+)", result.stdout))


def test_train_subcommands_list_only_their_own_options(runner):
    shared = {"--dataset", "--val", "--out", "--n-identity", "--batch", "--device", "--seed", "--method", "--resume",
              "--overwrite", "--help", "--threads"}
    regressor_only = {"--loss", "--alpha", "--beta", "--gamma", "--views", "--encoder", "--vgg16-weights", "--epochs",
                      "--lr", "--workers"}
    multilevel_only = {"--correctives", "--corrective-kind", "--corrective-hidden", "--n-expression",
                       "--n-reflectance", "--image-size", "--encoder-width", "--pretrain-iters", "--finetune-iters",
                       "--optimizer", "--lr-scale", "--lr-base", "--lr-shape", "--lr-reflectance",
                       "--corrective-weight-lr-mult", "--weight", "--eval-every", "--checkpoint-every",
                       "--init-from"}
    assert _help_options(runner, "train", "regressor") == shared | regressor_only
    assert _help_options(runner, "train", "multilevel") == shared | multilevel_only
    group = invoke(runner, "train", "--help").stdout
    assert "regressor" in group and "multilevel" in group and "--loss" not in group


@pytest.mark.parametrize("args, option", [
    (["train", "regressor", "--correctives", "5"], "--correctives"),
    (["train", "regressor", "--weight", "w_smo=0"], "--weight"),
    (["train", "multilevel", "--loss", "srl"], "--loss"),
    (["train", "multilevel", "--model", "multilevel"], "--model"),
])
def test_train_subcommand_refuses_options_of_the_other_model(runner, tmp_path, args, option):
    result = invoke(runner, *args, "--dataset", tmp_path / "t.h5", "--val", tmp_path / "v.h5", "--out", tmp_path / "r")
    assert result.exit_code == 2 and f"No such option '{option}'" in result.output, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("old, new", [(["--model", "multilevel"], "multilevel"), (["--model=regressor"], "regressor"),
                                      ([], "regressor")])
def test_old_train_spelling_runs_the_subcommand_with_one_deprecation_line(runner, monkeypatch, old, new):
    monkeypatch.delenv("RANK", raising=False)
    result = invoke(runner, "train", "--seed", "1", *old, "--help")
    assert result.exit_code == 0, result.output
    assert f"train {new} [OPTIONS]" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "deprecated" in lines[0], lines
    assert f"use 'facebench train {new} ...'" in lines[0]
    # under torchrun only rank 0 warns
    monkeypatch.setenv("RANK", "1")
    result = invoke(runner, "train", "--seed", "1", *old, "--help")
    assert result.exit_code == 0 and result.stderr == ""


def test_old_train_spelling_with_an_unknown_model_exits_2(runner):
    for args in (["--model", "both"], ["--model=both"], ["--seed", "1", "--model"]):
        result = invoke(runner, "train", *args)
        assert result.exit_code == 2 and "'--model'" in result.output and "Traceback" not in result.output
