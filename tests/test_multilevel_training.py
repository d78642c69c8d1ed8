"""Two-stage training of the multi-level model: files, frozen correctives, bit-exact resume, option
checks, optimizer groups, and train -> predict -> score through the CLI, on tiny datasets."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facebench.baselines.tewari2018.data import batch_indices
from facebench.baselines.tewari2018.model import MultiLevelConfig, decode_reconstruction
from facebench.baselines.tewari2018.predict import CHECKPOINT_FORMAT, load_multilevel_checkpoint, model_from_checkpoint
from facebench.baselines.tewari2018.training import (
    MultiLevelTrainConfig,
    _param_groups,
    parse_weight_overrides,
    stage_weights,
    train_multilevel,
)
from facebench.commands.base import FacebenchGroup
from facebench.commands.train import predict_command, train_command
from facebench.errors import FacebenchError, InputFileError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = MultiLevelConfig(n_correctives=8, corrective_hidden=16, image_size=32, encoder_width=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from facebench.datasets.generator import GeneratorSettings, generate

    root = tmp_path_factory.mktemp("ml-data")
    generate(GeneratorSettings(n=6, size=32, seed=0), root / "train.h5")
    generate(GeneratorSettings(n=3, size=32, seed=1), root / "val.h5")
    return {"train": root / "train.h5", "val": root / "val.h5", "root": root}


@pytest.fixture(scope="module")
def face_model():
    from facebench.models import load

    return load("synthetic")


def _config(data, out, **changes) -> MultiLevelTrainConfig:
    base = dict(dataset=data["train"], val=data["val"], out=out, model=TINY, pretrain_iters=2, finetune_iters=2,
                batch=2, eval_every=0, checkpoint_every=1, log_every=1, val_limit=2)
    base.update(changes)
    return MultiLevelTrainConfig(**base)


def test_train_writes_files_and_freezes_correctives_in_stage_1(data, face_model, tmp_path):
    out = tmp_path / "run"
    seen = []
    result = train_multilevel(_config(data, out, pretrain_iters=3, finetune_iters=0), lambda *a: seen.append(a),
                              model=face_model)
    assert result.iterations_done == 3 and [s[1] for s in seen] == [1, 2, 3]
    assert {s[0] for s in seen} == {"pretrain"}
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["iteration"] == 3
    net = model_from_checkpoint(checkpoint, face_model)
    # stage 1 never touches the corrective spaces: their last layers are still the zero initialisation
    for space in (net.shape_corrective, net.reflectance_corrective):
        assert all(float(p.detach().abs().max()) == 0.0 for p in space.layers[-1].parameters())
    # ...but the base level moved away from its initialisation (zero head weights)
    assert float(net.heads["identity"].weight.detach().abs().max()) > 0
    with open(out / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in log] == [1, 2, 3] and {r["stage"] for r in log} == {"pretrain"}
    assert "base/photo" in log[0] and "final/photo" not in log[0]
    assert math.isfinite(float(log[-1]["val_photo_base"]))  # validated at the stage end
    assert (out / "config.json").is_file()


def test_resume_is_bit_exact(data, face_model, tmp_path):
    full = train_multilevel(_config(data, tmp_path / "full", pretrain_iters=2, finetune_iters=2, val=None),
                            model=face_model)
    assert full.iterations_done == 4
    # one run interrupted inside stage 1, at the stage boundary and inside stage 2, resumed each time
    out = tmp_path / "parts"
    for i, (pre, fine) in enumerate(((1, 0), (2, 0), (2, 1), (2, 2))):
        result = train_multilevel(_config(data, out, pretrain_iters=pre, finetune_iters=fine, val=None, resume=i > 0),
                                  model=face_model)
        assert result.iterations_done == pre + fine
    a = load_multilevel_checkpoint(tmp_path / "full" / "model.pt")
    b = load_multilevel_checkpoint(out / "model.pt")
    assert a["model"]["state_dict"].keys() == b["model"]["state_dict"].keys()
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key
    for key, value in a["optimizer"]["state"].items():  # AdaDelta's accumulators too
        assert all(torch.equal(v, b["optimizer"]["state"][key][k]) for k, v in value.items())
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


def test_bad_options_fail_before_training(data, face_model, tmp_path):
    out = tmp_path / "never"
    cases = [
        (dict(weights={"w_smo": -1.0}), "w_smo"),
        (dict(model=dataclasses.replace(TINY, n_correctives=face_model.n_vertices + 1)), "exceed"),
        (dict(model=dataclasses.replace(TINY, n_identity=face_model.n_identity + 1)), "fewer"),
        (dict(model=dataclasses.replace(TINY, image_size=64)), "image_size=64"),
        (dict(batch=0), "--batch"),
        (dict(pretrain_iters=0, finetune_iters=0), "nothing to train"),
        (dict(lr_scale=-1.0), "lr-scale"),
        (dict(optimizer="sgd"), "optimizer"),
    ]
    for changes, needle in cases:
        with pytest.raises(FacebenchError, match=needle):
            train_multilevel(_config(data, out, **changes), model=face_model)
        assert not out.exists()
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(InputFileError, match="not empty"):
        train_multilevel(_config(data, out), model=face_model)
    with pytest.raises(InputFileError, match="nothing to resume"):
        train_multilevel(_config(data, tmp_path / "empty", resume=True), model=face_model)


def test_weight_overrides_per_stage():
    assert parse_weight_overrides(["w_smo=0", "finetune.w_ref=2.5"]) == {"w_smo": 0.0, "finetune.w_ref": 2.5}
    for bad in (["w_smo"], ["w_nope=1"], ["middle.w_smo=1"], ["w_smo=abc"], ["w_smo=inf"]):
        with pytest.raises(FacebenchError):
            parse_weight_overrides(bad)
    overrides = {"w_photo": 7.0, "finetune.w_photo": 3.0, "pretrain.w_land": 0.5}
    pre, fine = stage_weights("pretrain", overrides), stage_weights("finetune", overrides)
    assert pre.w_photo == 7.0 and fine.w_photo == 3.0  # the stage-specific key wins
    assert pre.w_land == 0.5 and fine.w_land == stage_weights("finetune", {}).w_land
    assert fine.w_smo == stage_weights("finetune", {}).w_smo > 0 and pre.w_smo == 0


def test_batch_indices_are_epoch_permutations():
    n, batch = 7, 3
    positions = np.concatenate([batch_indices(n, batch, i, seed=5) for i in range(7)])  # 21 = 3 epochs
    for epoch in range(3):
        assert sorted(positions[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert np.array_equal(batch_indices(n, batch, 4, seed=5), batch_indices(n, batch, 4, seed=5))
    assert not np.array_equal(positions, np.concatenate([batch_indices(n, batch, i, seed=6) for i in range(7)]))


def test_param_groups_rates(data, face_model, tmp_path):
    from facebench.baselines.tewari2018.model import MultiLevelModel

    net = MultiLevelModel(face_model, TINY, K=np.eye(3) * [30, 30, 1] + [[0, 0, 15.5], [0, 0, 15.5], [0, 0, 0]],
                          mean_t=[0, 0, 600])
    config = _config(data, tmp_path, lr_scale=10.0, corrective_weight_lr_mult=100.0)
    pre = _param_groups(net, config, "pretrain")
    assert [g["name"] for g in pre] == ["base"] and pre[0]["lr"] == pytest.approx(0.01)
    fine = {g["name"]: g for g in _param_groups(net, config, "finetune")}
    assert fine["shape_corrective/weights"]["lr"] == pytest.approx(0.005 * 10 * 100)
    assert fine["reflectance_corrective"]["lr"] == pytest.approx(0.01 * 10)
    matrix = net.shape_corrective.layers[-1].weight
    assert any(p is matrix for p in fine["shape_corrective/weights"]["params"])
    head = net.delta_heads["delta_shape"].weight  # the δ head runs at the branch's rate
    assert any(p is head for p in fine["shape_corrective"]["params"])
    every = [p for g in fine.values() for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(net.parameters()))


def _cli():
    group = FacebenchGroup("facebench")
    group.add_command(train_command)
    group.add_command(predict_command)
    return group


def test_cli_train_predict_score_and_codes(data, tmp_path):
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score

    run = tmp_path / "run"
    args = ["train", "multilevel", "--dataset", str(data["train"]), "--val", str(data["val"]),
            "--out", str(run), "--correctives", "8", "--corrective-kind", "relu1", "--encoder-width", "8",
            "--pretrain-iters", "1", "--finetune-iters", "1", "--batch", "2", "--device", "cpu",
            "--weight", "w_sta=0.5", "--weight", "finetune.w_glo=0"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "trained 2 iterations" in result.output
    saved = load_multilevel_checkpoint(run / "model.pt")["config"]
    assert saved["model"]["corrective_kind"] == "relu1" and saved["weights"]["finetune"]["w_glo"] == 0.0
    assert saved["weights"]["pretrain"]["w_sta"] == 0.5
    sub, codes = tmp_path / "sub.h5", tmp_path / "codes.npz"
    result = CliRunner().invoke(_cli(), ["predict", "--checkpoint", str(run / "model.pt"), "--dataset",
                                         str(data["val"]), "--out", str(sub), "--codes", str(codes), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored = score(data["val"], sub, get_protocol("synthetic"))
    for key in ("shape_mm", "translation_cm", "rotation_deg", "reprojection_px"):
        assert math.isfinite(scored.summary["metrics"][key]["mean"]), key
    assert scored.summary["n_scored"] == 3
    ids, params, metadata = decode_reconstruction(codes)
    assert len(ids) == 3 and params.delta_shape.shape == (3, 8) and params.identity.dtype == torch.float32
    # the codes decode to the submitted vertices
    import h5py

    from facebench.models import load

    net = model_from_checkpoint(load_multilevel_checkpoint(run / "model.pt"), load("synthetic"))
    with torch.no_grad():
        vertices = net.decode(params).vertices_final.numpy()
    with h5py.File(sub) as f:
        np.testing.assert_allclose(f["vertices"][()], vertices, atol=1e-3)


def test_cli_rejects_options_of_the_other_model(data, tmp_path):
    common = ["--dataset", str(data["train"]), "--val", str(data["val"]), "--out", str(tmp_path / "r")]
    for args, option in ((["train", "multilevel", *common, "--loss", "srl"], "--loss"),
                         (["train", "regressor", *common, "--correctives", "5"], "--correctives"),
                         (["train", *common, "--correctives", "5"], "--correctives"),  # deprecated: the regressor
                         (["train", "--model", "multilevel", *common, "--epochs", "2"], "--epochs")):
        result = CliRunner().invoke(_cli(), args)
        assert result.exit_code == 2 and f"No such option '{option}'" in result.output, (args, result.output)
    for weight, needle in (("w_ref=-2", "w_ref"), ("w_nope=1", "w_nope"), ("w_smo", "KEY=VALUE")):
        result = CliRunner().invoke(_cli(), ["train", "multilevel", *common, "--weight", weight])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert needle in lines[0]
    assert not (tmp_path / "r").exists()


def test_deprecated_train_model_multilevel_still_trains(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--dataset", str(data["train"]), "--val", str(data["val"]), "--out", str(run), "--model",
            "multilevel", "--correctives", "8", "--encoder-width", "8", "--pretrain-iters", "1", "--finetune-iters",
            "0", "--batch", "2", "--device", "cpu"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "trained 1 iterations" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "'facebench train --model multilevel ...' is deprecated" in lines[0], lines
    assert "'facebench train multilevel ...'" in lines[0]
    assert load_multilevel_checkpoint(run / "model.pt")["config"]["model"]["n_correctives"] == 8


def test_multilevel_config_maps_options_onto_config_fields(data, tmp_path):
    from facebench.commands.train import multilevel_config

    options = {"dataset": data["train"], "val": data["val"], "out": tmp_path / "r", "n_identity": None,
               "n_correctives": 7, "corrective_kind": "relu2", "image_size": None, "pretrain_iters": 4,
               "lr_scale": None, "weight": ("finetune.w_smo=0",), "device": "cpu", "seed": 3, "threads": None,
               "init_from": None, "method": None, "resume": False, "overwrite": True}
    config = multilevel_config(options)
    defaults = MultiLevelTrainConfig(dataset=data["train"], val=data["val"], out=tmp_path / "r")
    assert config.model == MultiLevelConfig(n_correctives=7, corrective_kind="relu2", image_size=32)
    assert config.weights == {"finetune.w_smo": 0.0} and config.device == "cpu" and config.seed == 3
    assert config.pretrain_iters == 4 and config.overwrite and not config.resume
    assert config.lr_scale == defaults.lr_scale and config.finetune_iters == defaults.finetune_iters
