"""``facebench reproduce table3`` end to end on tiny scan datasets, a 1-epoch run and a submission."""

from __future__ import annotations

import json
from pathlib import Path

import click
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import facebench.models as fm
from facebench.baselines.ramon2019.table3 import find_entries, reproduce_table3, table3_columns, table3_protocols
from facebench.baselines.ramon2019.training import TrainConfig, train
from facebench.baselines.scan_images import scan_dataset_images
from facebench.benchmark.landmark_sets import landmark_indices_for
from facebench.benchmark.submission_writer import write_submission
from facebench.commands.base import FacebenchGroup
from facebench.commands.reproduce_table3 import table3_command
from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample
from facebench.errors import FacebenchError, InputFileError
from facebench.landmarks import SCAN_LANDMARK_SETS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 48  # scan crops; the run's regressor takes 32 px: predictions resize


@pytest.fixture(scope="module")
def model():
    return fm.load("synthetic")


@pytest.fixture(scope="module")
def world(tmp_path_factory, model) -> dict[str, Path]:
    """Tiny MICC and FaceWarehouse files, a 1-epoch GAL run, and a MICC submission (the scans)."""
    from facebench.datasets.generator import GeneratorSettings, generate

    root = tmp_path_factory.mktemp("table3")
    generate(GeneratorSettings(n=8, size=32, seed=0), root / "train.h5")
    runs = root / "runs"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the one_torch_thread fixture
    try:
        train(TrainConfig(dataset=root / "train.h5", val=None, out=runs / "gal", loss="gal", epochs=1, batch=4),
              model=model)
    finally:
        torch.set_num_threads(before)
    rng = np.random.default_rng(4)
    faces = np.asarray(model.faces, np.int64)
    shapes = [np.array(model.shape(rng.standard_normal(model.n_identity)), np.float64) for _ in range(2)]
    paths = {}
    for kind, lm_set, prefix in (("micc", "micc4", "subject_"), ("facewarehouse", "facewarehouse6", "Tester_")):
        li = landmark_indices_for(model, lm_set)
        path = root / f"{kind}.h5"
        with ScanDatasetWriter(path, kind=kind, landmark_names=list(SCAN_LANDMARK_SETS[lm_set]), image_size=SIZE,
                               landmark_set=lm_set, mm_per_unit=1.0 if kind == "micc" else 10.0,
                               shared_landmark_indices=li if kind == "facewarehouse" else None) as writer:
            for i, x in enumerate(shapes):
                image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                writer.add(ScanSample(id=f"{prefix}{i + 1}", image=image, face_box=np.array([0, 0, 99, 99]),
                                      frame_size=(100, 100), vertices=x, faces=faces, landmark_indices=li))
        paths[kind] = path
    (root / "given").mkdir()
    write_submission(root / "given" / "oracle.h5", ["subject_1", "subject_2"], 1.05 * np.stack(shapes) + 7.0, method="oracle",
                     faces=faces, landmark_indices=landmark_indices_for(model, "micc4"))
    return {**paths, "runs": runs, "root": root, "oracle": root / "given" / "oracle.h5"}


def _cli(args):
    @click.group(cls=FacebenchGroup)
    def group() -> None:
        pass

    group.add_command(table3_command)
    return CliRunner().invoke(group, ["table3", *args])


def test_srgb_decoding_and_resize():
    codes = np.array([0, 128, 255], np.uint8)
    images = np.broadcast_to(codes[:, None, None, None], (3, 40, 40, 3)).copy()
    out = scan_dataset_images(images, (32, 32))
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    np.testing.assert_allclose(out.amin(dim=(1, 2, 3)), [0.0, 0.2158605, 1.0], atol=1e-6)
    np.testing.assert_allclose(out.amax(dim=(1, 2, 3)), [0.0, 0.2158605, 1.0], atol=1e-6)  # constant stays constant
    same = scan_dataset_images(images[:1], (40, 40))
    assert same.shape == (1, 3, 40, 40)
    with pytest.raises(ValueError, match="uint8"):
        scan_dataset_images(images.astype(np.float32), (32, 32))


def test_cli_writes_table_plot_results_and_submissions(world, tmp_path):
    out = tmp_path / "t3"
    result = _cli(["--micc", str(world["micc"]), "--facewarehouse", str(world["facewarehouse"]),
                   "--runs", str(world["runs"]), "--run", f"oracle={world['oracle']}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ids = table3_protocols()  # the current versions: Table 3's presets score the face region (1.2 on)
    assert ids["micc"].startswith("micc-ramon2019@") and ids["micc"] != "micc-ramon2019@1.1"
    assert "[1/2] gal" in result.output and f"score {ids['micc']}" in result.output
    # the output says which versions scored the table, and what region they count
    assert (f"Table 3 scored under: micc = {ids['micc']} (face region: scan vertices within 95 mm of the "
            f"scan's nose tip); facewarehouse = {ids['facewarehouse']} (face region") in result.output
    table = pd.read_csv(out / "table3.csv")
    assert list(table.columns) == table3_columns(extra=True)
    assert table["method"].tolist() == ["gal", "oracle", "mean-shape"]  # then the reference row
    gal = table.set_index("method").loc["gal"]
    assert gal["loss"] == "gal" and gal["kind"] == "run"
    for key, protocol_id in ids.items():
        assert gal[f"{key}_protocol"] == protocol_id
        assert np.isfinite(gal[f"{key}_mm"]) and gal[f"{key}_mm"] > 0
        assert gal[f"{key}_ci_low_mm"] <= gal[f"{key}_mm"] <= gal[f"{key}_ci_high_mm"]
        assert gal[f"{key}_n_scored"] == 2 and gal[f"{key}_completion"] == 1.0
    oracle = table.set_index("method").loc["oracle"]
    assert oracle["micc_mm"] < 0.05 and oracle["micc95_mm"] < 0.05  # the scans under a similarity
    assert np.isnan(oracle["facewarehouse_mm"]) and oracle["kind"] == "submission"
    mean = table.set_index("method").loc["mean-shape"]
    assert mean["kind"] == "reference" and mean["source"] == "model:synthetic"
    for key in ("micc", "facewarehouse", "micc95"):  # the model's mean face is not the scans: a real error
        assert mean[f"{key}_mm"] > 0.1 and mean[f"{key}_completion"] == 1.0
    assert (out / "table3.png").stat().st_size > 1000
    summary = json.loads((out / "results" / "gal" / "facewarehouse-ramon2019" / "summary.json").read_text())
    assert summary["dataset"]["mm_per_unit"] == 10.0 and summary["protocol_id"] == ids["facewarehouse"]
    top = json.loads((out / "summary.json").read_text())
    assert top["datasets"]["facewarehouse"]["mm_per_unit"] == 10.0
    assert top["protocols"] == ids
    with h5py.File(out / "submissions" / "gal_micc.h5", "r") as f:
        assert f["landmark_indices"].shape == (4,) and "faces" in f and "q" not in f
        assert f.attrs["image_conversion"].startswith("sRGB 48x48 -> linear RGB 32x32")
    with h5py.File(out / "submissions" / "gal_facewarehouse.h5", "r") as f:
        assert f["landmark_indices"].shape == (6,)


def test_library_progress_one_dataset_no_extra(world, tmp_path):
    messages = []
    ckpt = world["runs"] / "gal" / "model.pt"
    entries = find_entries(None, [("gal", ckpt), ("oracle", world["oracle"])])
    assert [(e.kind, e.loss) for e in entries] == [("run", "gal"), ("submission", "")]
    result = reproduce_table3(tmp_path / "lib", entries, facewarehouse=world["facewarehouse"], extra=False,
                              progress=messages.append)
    assert list(result.table.columns) == table3_columns(extra=False)
    assert "micc_mm" in result.table.columns and result.table["micc_mm"].isna().all()
    assert result.table.set_index("method").loc["gal", "facewarehouse_n_scored"] == 2
    assert "oracle" in result.errors and "match no given dataset" in result.errors["oracle"]
    assert any(m.startswith("[1/2] gal") for m in messages) and any("predict on facewarehouse" in m for m in messages)


def test_bad_input_gives_one_line(world, tmp_path):
    result = _cli(["--micc", str(world["micc"]), "--run", f"x={tmp_path / 'nope'}", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    result = _cli(["--runs", str(world["runs"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--micc and/or --facewarehouse" in result.output
    result = _cli(["--micc", str(world["facewarehouse"]), "--runs", str(world["runs"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not 'micc'" in result.output
    result = _cli(["--micc", str(world["micc"]), "--run", "no-equals-sign", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "NAME=PATH" in result.output
    with pytest.raises(FacebenchError, match="more than once"):
        find_entries(world["runs"], [("gal", world["runs"] / "gal")])
    with pytest.raises(InputFileError, match="runs folder not found"):
        find_entries(tmp_path / "missing")
    # nothing scorable at all: an error, not an empty table
    with pytest.raises(FacebenchError, match="nothing was scored"):
        reproduce_table3(tmp_path / "none", find_entries(None, [("o", world["oracle"])]),
                         facewarehouse=world["facewarehouse"])


def test_a_multilevel_run_is_a_row_too(world, model, tmp_path):
    """A Tewari et al. multi-level run in RUNS is predicted on the scan crops (its final level, the
    model's faces and the protocol's landmark vertices) and scored like the regressor runs."""
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.baselines.tewari2018.predict import predict_multilevel
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig, train_multilevel

    run = tmp_path / "runs" / "ml"
    config = MultiLevelTrainConfig(dataset=world["root"] / "train.h5", val=None, out=run, batch=2,
                                   model=MultiLevelConfig(n_correctives=4, corrective_hidden=8, image_size=32,
                                                          encoder_width=8),
                                   pretrain_iters=2, finetune_iters=1, eval_every=0, checkpoint_every=3, log_every=1)
    train_multilevel(config, model=model)
    entries = find_entries(tmp_path / "runs")
    assert [(e.name, e.loss) for e in entries] == [("ml", "multilevel")]
    result = reproduce_table3(tmp_path / "t3", entries, micc=world["micc"], extra=False)
    row = result.table.set_index("method").loc["ml"]
    assert row["micc_n_scored"] == 2 and row["loss"] == "multilevel"
    assert np.isfinite(row["micc_mm"]) and row["micc_mm"] > 0
    assert pd.isna(row["error"]) or row["error"] == ""
    with h5py.File(tmp_path / "t3" / "submissions" / "ml_micc.h5") as f:
        np.testing.assert_array_equal(f["faces"][()], np.asarray(model.faces))
        np.testing.assert_array_equal(f["landmark_indices"][()], landmark_indices_for(model, "micc4"))
        assert "q" not in f and f["vertices"].shape == (2, model.n_vertices, 3)
    # the same vertices as the model's own reconstruction of the decoded crops
    from facebench.baselines.tewari2018.predict import load_multilevel_checkpoint, model_from_checkpoint
    from facebench.datasets.dataset_file import FaceDataset

    net = model_from_checkpoint(load_multilevel_checkpoint(run / "model.pt"), model).eval()
    with torch.no_grad():
        images = scan_dataset_images(FaceDataset(world["micc"]).read("images", 0, 2), (32, 32))
        expected = net.reconstruct(images).vertices_final.double().numpy()
    predict_multilevel(run / "model.pt", world["micc"], tmp_path / "again.h5")
    with h5py.File(tmp_path / "again.h5") as f:
        np.testing.assert_allclose(f["vertices"][()], expected, atol=1e-3)


def test_seeds_read_each_seeds_runs(world, tmp_path):
    """--seeds 2: the runs of RUNS/seed<S>/ (here the same run twice), mean/sd across seeds, verdicts."""
    import shutil

    runs = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(world["runs"] / "gal", runs / f"seed{seed}" / "gal")
    out = tmp_path / "t3s"
    result = _cli(["--micc", str(world["micc"]), "--runs", str(runs), "--no-95mm", "--seeds", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "table3.csv", keep_default_na=False, na_values=[""])
    assert table["method"].tolist() == ["gal", "mean-shape"]
    assert {"micc_mm_mean", "micc_mm_sd", "n_seeds", "verdict"} <= set(table.columns)
    assert table["micc_mm_sd"].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)  # the same run and scans
    per_seed = pd.read_csv(out / "seed1" / "table3.csv").set_index("method")
    assert table.set_index("method").loc["mean-shape", "micc_mm_mean"] == pytest.approx(per_seed.loc["mean-shape",
                                                                                                  "micc_mm"])
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert verdicts["a"].tolist() == ["gal"] and verdicts["b"].tolist() == ["mean-shape"]
    assert verdicts["verdict"].iloc[0] in ("not resolved", "gal lower than mean-shape", "mean-shape lower than gal")
    bad = _cli(["--micc", str(world["micc"]), "--runs", str(world["runs"]), "--seeds", "2", "--out",
                str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "seed0" in bad.output and "Traceback" not in bad.output


def test_previous_protocol_version_scores_the_whole_scan(world, tmp_path):
    """--protocol-version 1.1: Table 3's presets without the face-region crop (every scan vertex);
    micc-95mm keeps its own version. On these scans (whole procedural heads) the mean face scores
    1.195 mm under 1.1 and 1.098 mm under 1.2 (measured): the version changes which vertices count."""
    out_new, out_old = tmp_path / "new", tmp_path / "old"
    args = ["--micc", str(world["micc"]), "--run", f"oracle={world['oracle']}", "--run",
            f"gal={world['runs'] / 'gal'}"]
    assert _cli([*args, "--out", str(out_new)]).exit_code == 0
    result = _cli([*args, "--protocol-version", "1.1", "--out", str(out_old)])
    assert result.exit_code == 0, result.output
    assert "micc = micc-ramon2019@1.1 (whole scan, no crop)" in result.output
    assert f"micc95 = {table3_protocols()['micc95']} (face region" in result.output
    old = pd.read_csv(out_old / "table3.csv").set_index("method")
    new = pd.read_csv(out_new / "table3.csv").set_index("method")
    assert (old["micc_protocol"] == "micc-ramon2019@1.1").all()
    assert (new["micc_protocol"] == table3_protocols()["micc"]).all()
    assert old.loc["oracle", "micc_mm"] < 0.05 and new.loc["oracle", "micc_mm"] < 0.05  # the scans themselves
    assert old.loc["mean-shape", "micc95_mm"] == pytest.approx(new.loc["mean-shape", "micc95_mm"], rel=1e-9)
    assert abs(old.loc["mean-shape", "micc_mm"] - new.loc["mean-shape", "micc_mm"]) > 0.05
    summary = json.loads((out_old / "results" / "gal" / "micc-ramon2019" / "summary.json").read_text())
    assert summary["protocol_id"] == "micc-ramon2019@1.1" and summary["protocol"]["crop_radius_mm"] is None
    bad = _cli([*args, "--protocol-version", "9.9", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown protocol version 'micc-ramon2019@9.9'" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "bad").exists()
