"""The thread policy (facebench/threads.py) and the shared --threads option of the heavy commands."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from facebench import threads as policy
from facebench.cli import main
from facebench.errors import FacebenchError


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", policy.ENV_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_default_is_one_thread_and_env_overrides(monkeypatch):
    assert policy.resolve_threads(None) == policy.DEFAULT_THREADS == 1
    monkeypatch.setenv(policy.ENV_VARIABLE, "3")
    assert policy.resolve_threads(None) == 3
    assert policy.resolve_threads("2") == 2 and policy.resolve_threads(4) == 4


def test_auto_is_between_one_and_the_usable_cores():
    assert 1 <= policy.resolve_threads("auto") <= policy.usable_cores()
    assert 0.0 <= policy.idle_cores(0.05) <= policy.usable_cores()


@pytest.mark.parametrize("bad", ["0", "-1", "many", 0])
def test_bad_values_are_one_line_errors(bad):
    with pytest.raises(FacebenchError, match="--threads"):
        policy.resolve_threads(bad)


def test_apply_sets_torch_and_the_worker_environment():
    import os

    assert policy.apply_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"


def test_worker_counts(monkeypatch):
    monkeypatch.setattr(policy, "usable_cores", lambda: 4)
    assert policy.auto_workers(100, 500) == 1
    assert policy.auto_workers(1200, 500) == 2
    assert policy.auto_workers(10**6, 500) == 4
    assert policy.auto_workers(10**6, 500, threads=2) == 2
    assert policy.loader_workers() == 1
    assert policy.loader_workers(batches=3) == 0
    monkeypatch.setattr(policy, "usable_cores", lambda: 2)
    assert policy.loader_workers() == 0
    monkeypatch.setattr(policy, "usable_cores", lambda: 32)
    assert policy.loader_workers() == 4
    assert policy.loader_workers(2) == 2 and policy.loader_workers(0) == 0
    with pytest.raises(FacebenchError):
        policy.loader_workers(-1)


HEAVY = [["synth", "generate"], ["train", "regressor"], ["train", "multilevel"], ["predict"], ["score"], ["demo"],
         ["hpo"], ["baselines", "fit-landmarks"], ["reproduce", "table2"], ["reproduce", "table3"],
         ["reproduce", "correctives"], ["reproduce", "corrective-spaces"], ["reproduce", "reflectance"],
         ["reproduce", "ablation"]]


@pytest.mark.parametrize("command", HEAVY, ids=" ".join)
def test_every_heavy_command_has_the_threads_option(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--threads N|auto" in result.output


def test_a_bad_threads_value_is_refused_before_work(tmp_path):
    result = CliRunner().invoke(main, ["synth", "generate", "--n", "2", "--out", str(tmp_path / "x.h5"),
                                       "--threads", "zero"])
    assert result.exit_code == 2
    assert "--threads" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_apply_before_torch_is_loaded_does_not_import_it_and_still_sets_its_threads():
    """`score` on scans needs no torch: the option must not import it, yet torch imported later
    (by a command that needs it) gets the chosen intra-op threads."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from facebench.threads import apply_threads\n"
            "apply_threads(1)\n"
            "assert 'torch' not in sys.modules\n"
            "import torch\n"
            "assert torch.get_num_threads() == 1, torch.get_num_threads()\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
