"""Bit-exact reruns: the same small training twice (same seed, threads, device) gives byte-identical
checkpoints."""

from __future__ import annotations

import shutil

import pytest

from facebench.baselines.ramon2019.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_twice_gives_byte_identical_checkpoints(tmp_path):
    from facebench.datasets.generator import GeneratorSettings, generate
    from facebench.models import load

    model = load("synthetic")
    data = tmp_path / "train.h5"
    generate(GeneratorSettings(n=8, size=32, seed=0, identities=4), data)
    run = tmp_path / "run"
    checkpoints = []
    for attempt in range(2):
        train(TrainConfig(dataset=data, val=None, out=run, loss="mrl", views=2, epochs=2, batch=4, seed=11,
                          workers=1), model=model)
        checkpoints.append((run / "model.pt").read_bytes())
        log = (run / "log.csv").read_text()
        assert "seconds" in log.splitlines()[0]  # wall-clock columns stay in the log
        shutil.move(run, tmp_path / f"attempt{attempt}")
    assert checkpoints[0] == checkpoints[1]
