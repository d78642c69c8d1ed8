"""Synthetic dataset generation: content, landmark projection, determinism, mirroring, shards,
splits, merge, bad input, info/show."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facebench import conventions as cv
from facebench.commands.synth import synth
from facebench.datasets.generator import FaceDataset, GeneratorSettings, generate
from facebench.datasets.merge import merge_shards
from facebench.datasets.mirror import mirror_sh
from facebench.landmarks import IBUG68_MIRROR
from facebench.models import load
from facebench.models.procedural import mirror_permutation

SIZE = 40
ARRAYS = ("ids", "images", "masks", "reflectance_images", "vertices", "landmarks_2d", "q", "t", "sh",
          "yaw", "pitch", "roll", "subject", "mirror_of", "coefficients/identity", "coefficients/expression",
          "coefficients/reflectance", "K", "faces", "landmark_indices")


@pytest.fixture(scope="module")
def model():
    return load("synthetic")


def _settings(**changes) -> GeneratorSettings:
    base = dict(n=5, size=SIZE, seed=7, symmetrize=True, expression_dims=10, reflectance_dims=20,
                yaw_max=80.0, background="noise")
    base.update(changes)
    return GeneratorSettings(**base)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    generate(_settings(), path, model=model, batch_size=4)
    return path


def _arrays(path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in ARRAYS}


def _assert_identical(a, b) -> None:
    for name in ARRAYS:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_content_and_landmark_projection(reference, model):
    ds = FaceDataset(reference)
    assert len(ds) == 10 and ds.attrs["model_digest"] == model.digest() and ds.attrs["seed"] == 7
    assert ds.attrs["settings"]["expression_dims"] == 10 and ds.attrs["split"] == "all"
    li = ds.landmark_indices
    np.testing.assert_array_equal(li, model.landmark_indices)
    for i in range(len(ds)):
        s = ds[i]
        assert s["images"].dtype == np.uint8 and s["masks"].dtype == bool
        assert 0.05 < s["masks"].mean() < 0.9  # the face fills a good part of the image
        expected = cv.project(s["vertices"][li].astype(np.float64), s["q"], s["t"], s["K"]).astype(np.float32)
        np.testing.assert_array_equal(s["landmarks_2d"], expected)  # exactly
        assert s["q"][0] >= 0 and abs(np.linalg.norm(s["q"]) - 1) < 1e-12
        np.testing.assert_allclose(np.array([s["yaw"], s["pitch"], s["roll"]]),
                                   np.array(cv.head_angles(s["q"])), atol=0, rtol=0)
        assert abs(s["yaw"]) <= 80 + 1e-9 and abs(s["pitch"]) <= 20 + 1e-9
        # reflectance image: no shading, zero background; image background is noise
        assert not s["reflectance_images"][~s["masks"]].any()
        assert s["images"][~s["masks"]].std() > 5
        if s["mirror_of"] < 0:
            c = s["coefficients"]
            assert not c["expression"][10:].any() and c["expression"][:10].any()
            assert not c["reflectance"][20:].any() and c["identity"].all()
            np.testing.assert_allclose(s["vertices"], model.shape(c["identity"], c["expression"]), atol=2e-3)
    # the camera looks at the centre of the mean shape: the nose tip projects near the image centre
    s0 = ds[0]
    assert abs(s0["K"][0, 2] - (SIZE - 1) / 2) < 1e-12


def test_mirror_rows(reference, model):
    ds = FaceDataset(reference)
    perm = mirror_permutation()
    for i in range(0, len(ds), 2):
        a, m = ds[i], ds[i + 1]
        assert m["mirror_of"] == i and a["mirror_of"] == -1 and m["subject"] == a["subject"]
        assert m["id"] == a["id"] + "m"
        np.testing.assert_array_equal(m["images"], a["images"][:, ::-1])
        np.testing.assert_array_equal(m["masks"], a["masks"][:, ::-1])
        np.testing.assert_array_equal(m["reflectance_images"], a["reflectance_images"][:, ::-1])
        np.testing.assert_array_equal(m["vertices"], a["vertices"][perm] * np.float32([-1, 1, 1]))
        flipped = a["landmarks_2d"][IBUG68_MIRROR].copy()
        flipped[:, 0] = SIZE - 1 - flipped[:, 0]
        np.testing.assert_allclose(m["landmarks_2d"], flipped, atol=1e-3)
        np.testing.assert_allclose([m["yaw"], m["pitch"], m["roll"]], [-a["yaw"], a["pitch"], -a["roll"]], atol=1e-9)
        assert np.isnan(m["coefficients"]["identity"]).all()
        # the stored flip is a render of the mirrored scene (pose, light, reflectance)
        from facebench.render import render

        albedo = np.clip(model.reflectance(a["coefficients"]["reflectance"]), 0, 1)[perm]
        out = render(torch.tensor(m["vertices"])[None], torch.tensor(model.faces).long(),
                     torch.tensor(m["q"], dtype=torch.float32)[None], torch.tensor(m["t"], dtype=torch.float32)[None],
                     m["K"], SIZE, SIZE, reflectance=torch.tensor(albedo)[None],
                     sh=torch.tensor(m["sh"])[None])
        mask = out.mask[0].numpy()
        assert (mask == m["masks"]).mean() > 0.98
        both = mask & m["masks"]
        rendered = np.rint(np.clip(out.image[0].numpy(), 0, 1) * 255)
        assert np.abs(rendered[both] - m["images"][both]).mean() < 3.0
    np.testing.assert_array_equal(mirror_sh(mirror_sh(ds[0]["sh"])), ds[0]["sh"])


def test_same_bits_for_batch_size_workers_and_shards(reference, model, tmp_path):
    ref = _arrays(reference)
    generate(_settings(), tmp_path / "b1.h5", model=model, batch_size=1)
    _assert_identical(ref, _arrays(tmp_path / "b1.h5"))
    generate(_settings(), tmp_path / "w2.h5", model=model, workers=2, batch_size=2)
    _assert_identical(ref, _arrays(tmp_path / "w2.h5"))
    for i in (1, 0):
        generate(_settings(), tmp_path / f"s{i}.h5", model=model, shard=(i, 2), batch_size=3)
    assert FaceDataset(tmp_path / "s0.h5").attrs["rows"] == [0, 4]  # samples 0-1 and their mirrors
    merge_shards([tmp_path / "s1.h5", tmp_path / "s0.h5"], tmp_path / "merged.h5")
    _assert_identical(ref, _arrays(tmp_path / "merged.h5"))
    generate(_settings(seed=8), tmp_path / "other.h5", model=model)
    other = _arrays(tmp_path / "other.h5")
    assert not np.array_equal(other["images"], ref["images"])
    assert not np.array_equal(other["coefficients/identity"], ref["coefficients/identity"])


def test_merge_refuses_incomplete_or_foreign_shards(model, tmp_path):
    for i in range(3):
        generate(_settings(n=3, symmetrize=False), tmp_path / f"s{i}.h5", model=model, shard=(i, 3))
    generate(_settings(n=3, symmetrize=False, seed=1), tmp_path / "x.h5", model=model, shard=(2, 3))
    runner = CliRunner()
    result = runner.invoke(synth, ["merge", str(tmp_path / "s0.h5"), str(tmp_path / "s2.h5"),
                                   "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2 and "rows [1, 2) missing" in result.output
    result = runner.invoke(synth, ["merge", str(tmp_path / "s0.h5"), str(tmp_path / "s1.h5"),
                                   str(tmp_path / "x.h5"), "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2 and "attributes differ" in result.output and "seed" in result.output
    result = runner.invoke(synth, ["merge", str(tmp_path / "s0.h5"), str(tmp_path / "s1.h5"),
                                   str(tmp_path / "s1.h5"), "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2 and "overlaps" in result.output
    assert not (tmp_path / "m.h5").exists()
    result = runner.invoke(synth, ["merge", *(str(tmp_path / f"s{i}.h5") for i in (2, 0, 1)),
                                   "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 0, result.output
    assert FaceDataset(tmp_path / "m.h5").ids == ["0000000", "0000001", "0000002"]


def test_splits_have_disjoint_subjects(model, tmp_path):
    settings = _settings(n=10, identities=5, split="60/20/20", symmetrize=False, size=16)
    generate(settings, tmp_path / "d.h5", model=model)
    subjects, ids = {}, []
    for name in ("train", "val", "test"):
        ds = FaceDataset(tmp_path / f"d_{name}.h5")
        assert ds.attrs["split"] == name
        subjects[name] = set(ds.array("subject").tolist())
        ids += ds.ids
        coefficients = ds.array("identity")
        for s in subjects[name]:  # one identity per subject, several poses
            rows = coefficients[ds.array("subject") == s]
            assert len(rows) == 2 and np.array_equal(rows[0], rows[1])
            yaw = ds.array("yaw")[ds.array("subject") == s]
            assert yaw[0] != yaw[1]
    assert subjects == {"train": {0, 1, 2}, "val": {3}, "test": {4}}
    assert sorted(ids) == [f"{i:07d}" for i in range(10)]


def test_cli_generate_info_show(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.h5"
    result = runner.invoke(synth, ["generate", "--n", "2", "--size", "32", "--out", str(out), "--seed", "1",
                                   "--angles", "frontal", "--neutral", "--background", "plain:0.2,0.3,0.4"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 images" in result.output and "images/s" in result.output
    ds = FaceDataset(out)
    assert np.all(ds.array("yaw") == 0) and not ds.array("expression").any()
    corner = ds[0]["images"][0, 0]
    np.testing.assert_array_equal(corner, np.rint(np.array([0.2, 0.3, 0.4]) * 255).astype(np.uint8))
    result = runner.invoke(synth, ["info", str(out)])
    assert result.exit_code == 0 and "samples        2" in result.output and "|yaw| histogram" in result.output
    assert "[   0.0,   15.0)       2" in result.output
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(synth, ["show", str(out), "--out", str(sheet)])
    assert result.exit_code == 0, result.output
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(synth, ["show", str(tmp_path / "nope.h5"), "--out", str(sheet)])
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be >= 1"),
    (["--n", "2", "--size", "-4"], "--size must be >= 8"),
    (["--n", "2", "--distance", "100"], "behind the camera"),
    (["--n", "2", "--identity-dims", "101"], "has 100 identity modes"),
    (["--n", "2", "--angles", "frontal", "--yaw-max", "10"], "apply to --angles uniform"),
    (["--n", "2", "--background", "plain:2,0,0"], "--background"),
    (["--n", "2", "--split", "70/30", "--identities", "1"], "at least 2 identities"),
    (["--n", "2", "--shard", "2/2"], "0 <= I < N"),
    (["--n", "2", "--model", "nosuch"], "unknown model"),
])
def test_bad_input_fails_before_any_work(tmp_path, args, message):
    out = tmp_path / "d.h5"
    result = CliRunner().invoke(synth, ["generate", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_existing_output_and_interruption(model, tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"keep")
    result = CliRunner().invoke(synth, ["generate", "--n", "1", "--size", "16", "--out", str(out)])
    assert result.exit_code == 2 and "exists already" in result.output and out.read_bytes() == b"keep"

    def interrupt(_count):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_settings(n=3, size=16), tmp_path / "new.h5", model=model, batch_size=1, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_shards_option_writes_every_shard(model, tmp_path):
    settings = _settings(n=3, size=16, symmetrize=False)
    generate(settings, tmp_path / "one.h5", model=model)
    summary = generate(settings, tmp_path / "d.h5", model=model, shards=2)
    assert [p.name for p in summary.paths] == ["d-000-of-002.h5", "d-001-of-002.h5"]
    merge_shards(summary.paths, tmp_path / "m.h5")
    _assert_identical(_arrays(tmp_path / "one.h5"), _arrays(tmp_path / "m.h5"))
