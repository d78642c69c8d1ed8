"""Ctrl-C during a parallel `synth generate`: one line, exit 130, no worker traceback, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _sigint_as_at_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default. A shell starts background jobs with SIGINT
    ignored and the child would inherit that (Python then installs no KeyboardInterrupt handler), so
    the test would not be the Ctrl-C of a terminal when the suite itself runs in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and SIGINT as on a Linux terminal")
def test_ctrl_c_leaves_no_partial_files_and_a_rerun_succeeds(tmp_path):
    out = tmp_path / "set.h5"
    command = [sys.executable, "-m", "facebench", "synth", "generate", "--n", "32", "--size", "32", "--seed", "0",
               "--shards", "4", "--workers", "2", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=_sigint_as_at_a_terminal)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".*.partial")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"finished before any shard was being written:\n{process.stderr.read()}"
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert not list(tmp_path.glob(".*.partial"))
    rerun = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(tmp_path.glob("set*.h5"))) == 4 and not list(tmp_path.glob(".*.partial"))


def test_stale_partials_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    from facebench.datasets.generator import remove_stale_partials

    target = tmp_path / "set.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".set.h5.{int(dead.stdout)}.partial"
    live = tmp_path / f".set.h5.{os.getpid()}.partial"
    other = tmp_path / f".other.h5.{int(dead.stdout)}.partial"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    assert remove_stale_partials([target]) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
