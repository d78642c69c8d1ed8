"""Training, resume, DDP (2 gloo processes), predict → score, and bad input, on tiny datasets."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facebench.baselines.ramon2019.predict import load_checkpoint, predict
from facebench.baselines.ramon2019.training import LOG_COLUMNS, TrainConfig, train
from facebench.commands.base import FacebenchGroup
from facebench.commands.train import predict_command, train_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from facebench.datasets.generator import GeneratorSettings, generate

    root = tmp_path_factory.mktemp("train-data")
    generate(GeneratorSettings(n=8, size=32, seed=0), root / "train.h5")
    generate(GeneratorSettings(n=4, size=32, seed=1), root / "val.h5")
    return {"train": root / "train.h5", "val": root / "val.h5", "root": root}


@pytest.fixture(scope="module")
def model():
    from facebench.models import load

    return load("synthetic")


def _cli():
    group = FacebenchGroup("facebench")
    group.add_command(train_command)
    group.add_command(predict_command)
    return group


def _run(args):
    return CliRunner().invoke(_cli(), args)


def _params(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_train_writes_checkpoints_log_and_config(data, model, tmp_path):
    out = tmp_path / "run"
    rows = []
    result = train(TrainConfig(dataset=data["train"], val=data["val"], out=out, loss="srl", epochs=2, batch=4),
                   model=model, on_epoch=rows.append)
    assert result.epochs_done == 2 and len(rows) == 2 and result.best_epoch in (1, 2)
    checkpoint = torch.load(out / "model.pt", weights_only=True)  # plain data + tensors only
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["regressor"]["encoder"] == "small"
    assert checkpoint["config"]["method"] == "regressor-srl-small"
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == result.best_epoch
    assert min(r["val_shape_mm"] for r in rows) == pytest.approx(result.best_shape_mm)
    with open(out / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    assert tuple(log[0]) == LOG_COLUMNS and [int(r["epoch"]) for r in log] == [1, 2]
    for row in log:
        assert all(math.isfinite(float(row[k])) for k in LOG_COLUMNS), row
    assert (out / "config.json").is_file()
    # training moved the weights, starting from the paper's init (zero last-layer weights)
    assert checkpoint["regressor"]["translation_head.2.weight"].abs().sum() > 0


def test_resume_equals_an_uninterrupted_run(data, model, tmp_path):
    common = dict(dataset=data["train"], val=None, loss="mrl", views=2, batch=4, seed=3)
    straight = train(TrainConfig(out=tmp_path / "a", epochs=2, **common), model=model)
    train(TrainConfig(out=tmp_path / "b", epochs=1, **common), model=model)
    resumed = train(TrainConfig(out=tmp_path / "b", epochs=2, resume=True, **common), model=model)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    for key, value in a["regressor"].items():
        assert torch.equal(value, b["regressor"][key]), key
    assert straight.history[-1]["train_loss"] == resumed.history[-1]["train_loss"]
    # no validation set: no shape error was measured (best_shape_mm once held the training loss)
    assert straight.best_shape_mm is None and resumed.best_shape_mm is None
    assert straight.best_epoch in (1, 2)


def test_ddp_two_gloo_processes_match_a_single_process_run(data, model, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent("""
        import sys
        import torch
        from facebench.baselines.ramon2019.training import TrainConfig, train
        torch.set_num_threads(1)
        result = train(TrainConfig(dataset=sys.argv[1], val=None, out=sys.argv[2], loss="gal", epochs=1, batch=4))
        assert result.world_size == 2
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(data["train"]), str(tmp_path / "ddp")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(TrainConfig(dataset=data["train"], val=None, out=tmp_path / "single", loss="gal", epochs=1, batch=4),
          model=model)
    ddp = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "model.pt", weights_only=True)
    assert ddp["config"]["world_size"] == 2 and single["config"]["world_size"] == 1
    assert ddp["history"][0]["train_loss"] == pytest.approx(single["history"][0]["train_loss"], rel=1e-5)
    # Adam's first steps move each weight by about lr = 1e-4 whatever the gradient's scale, so weights whose
    # gradient is ~0 may differ by float rounding of the all-reduce; a rank that trained on its half batch
    # alone (no gradient averaging) would differ by ~lr in most weights.
    for key, value in _params(single["regressor"]).items():
        torch.testing.assert_close(ddp["regressor"][key], value, rtol=0, atol=1e-5, msg=key)
        close = (ddp["regressor"][key] - value).abs() <= 1e-6
        assert close.float().mean() > 0.999, key
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "config.json", "log.csv", "model.pt"]


def test_cli_train_predict_then_score_end_to_end(data, model, tmp_path):
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score

    out = tmp_path / "run"
    result = _run(["train", "regressor", "--dataset", str(data["train"]), "--val", str(data["val"]), "--loss",
                   "xqt", "--beta", "100", "--gamma", "0.01", "--epochs", "1", "--batch", "4", "--device", "cpu",
                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "epoch 1:" in result.output and "best epoch 1" in result.output
    sub = tmp_path / "sub.h5"
    result = _run(["predict", "--checkpoint", str(out / "model.pt"), "--dataset", str(data["val"]),
                   "--out", str(sub), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored = score(data["val"], sub, get_protocol("synthetic"))
    assert scored.summary["method"] == "regressor-xqt-small" and scored.summary["n_scored"] == 4
    means = {k: v["mean"] for k, v in scored.summary["metrics"].items()}
    for key in ("shape_mm", "translation_cm", "rotation_deg", "reprojection_px"):
        assert math.isfinite(means[key]), means
    # predict's numbers are the validation metrics the training log recorded for that epoch
    row = load_checkpoint(out / "model.pt")["history"][0]
    assert means["shape_mm"] == pytest.approx(row["val_shape_mm"], rel=1e-5)
    assert means["reprojection_px"] == pytest.approx(row["val_reprojection_px"], rel=1e-4)
    # an existing submission is refused, --overwrite replaces it
    assert _run(["predict", "--checkpoint", str(out / "model.pt"), "--dataset", str(data["val"]),
                 "--out", str(sub), "--device", "cpu"]).exit_code == 2


@pytest.mark.parametrize("legacy", [(), ("--model", "regressor")], ids=["no-model", "model-regressor"])
def test_deprecated_train_spelling_still_trains_the_regressor(data, tmp_path, legacy):
    out = tmp_path / "run"
    result = _run(["train", "--dataset", str(data["train"]), *legacy, "--val", str(data["val"]), "--epochs", "1",
                   "--batch", "4", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained 1 epochs" in result.stdout and (out / "model.pt").is_file()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "deprecated" in lines[0] and "'facebench train regressor ...'" in lines[0], lines
    assert torch.load(out / "model.pt", weights_only=True)["config"]["train"]["loss"] == "gal"


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_bad_input_fails_with_one_line_before_training(data, model, tmp_path):
    base = ["train", "regressor", "--dataset", str(data["train"]), "--val", str(data["val"]), "--epochs", "1",
            "--batch", "4", "--device", "cpu"]
    not_dataset = tmp_path / "notes.h5"
    not_dataset.write_text("hello")
    assert "notes.h5" in _error_line(_run(["train", "regressor", "--dataset", str(not_dataset), "--val",
                                           str(data["val"]), "--out", str(tmp_path / "r0")]))
    assert "unknown loss 'l2'" in _error_line(_run([*base, "--loss", "l2", "--out", str(tmp_path / "r1")]))
    assert "--alpha" in _error_line(_run([*base, "--loss", "coarse", "--out", str(tmp_path / "r2")]))
    assert "--gamma" in _error_line(_run([*base, "--loss", "xqt", "--beta", "1", "--out", str(tmp_path / "r3")]))
    assert "takes no alpha" in _error_line(_run([*base, "--loss", "gal", "--alpha", "1", "--out", str(tmp_path / "r4")]))
    assert not any((tmp_path / f"r{i}").exists() for i in range(5))  # nothing written

    run = tmp_path / "run"
    run.mkdir()
    (run / "something.txt").write_text("x")
    assert "--resume" in _error_line(_run([*base, "--out", str(run)]))
    assert "nothing to resume" in _error_line(_run([*base, "--out", str(run), "--resume"]))

    good = tmp_path / "good"
    train(TrainConfig(dataset=data["train"], val=None, out=good, epochs=1, batch=4), model=model)
    assert "vgg16" in _error_line(_run([*base, "--out", str(good), "--resume", "--encoder", "vgg16"]))
    assert "loss" in _error_line(_run([*base, "--out", str(good), "--resume", "--loss", "srl"]))

    # a checkpoint whose weights are of another architecture than its config says
    checkpoint = torch.load(good / "model.pt", weights_only=True)
    checkpoint["config"]["regressor"]["encoder"] = "vgg16"
    torch.save(checkpoint, tmp_path / "other.pt")
    line = _error_line(_run(["predict", "--checkpoint", str(tmp_path / "other.pt"), "--dataset", str(data["val"]),
                             "--out", str(tmp_path / "s.h5"), "--device", "cpu"]))
    assert "other.pt" in line and "architecture" in line
    # a checkpoint made for another face model
    checkpoint["config"]["regressor"].update(encoder="small", model_digest="0" * 64)
    torch.save(checkpoint, tmp_path / "model2.pt")
    assert "face model" in _error_line(_run(["predict", "--checkpoint", str(tmp_path / "model2.pt"), "--dataset",
                                             str(data["val"]), "--out", str(tmp_path / "s.h5"), "--device", "cpu"]))
    assert "not a checkpoint" in _error_line(_run(
        ["predict", "--checkpoint", str(not_dataset), "--dataset", str(data["val"]), "--out", str(tmp_path / "s.h5")]))
    assert not (tmp_path / "s.h5").exists()


def test_predict_library_writes_unit_quaternions(data, model, tmp_path):
    import h5py

    train(TrainConfig(dataset=data["train"], val=None, out=tmp_path / "run", epochs=1, batch=8), model=model)
    sub = predict(tmp_path / "run" / "model.pt", data["val"], tmp_path / "sub.h5", model=model, batch_size=3)
    with h5py.File(sub, "r") as f:
        assert f.attrs["format"] == "facebench-submission" and f.attrs["method"] == "regressor-gal-small"
        assert f["vertices"].shape == (4, model.n_vertices, 3)
        np.testing.assert_allclose(np.linalg.norm(f["q"][()], axis=1), 1.0, atol=1e-6)
        assert [i.decode() for i in f["ids"][()]] == [str(i) for i in _ids(data["val"])]


def _ids(path):
    from facebench.datasets.dataset_file import FaceDataset

    return FaceDataset(path).ids
