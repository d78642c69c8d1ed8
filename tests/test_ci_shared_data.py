"""Under CI=true, tests that need ``../shared/data`` fail when it is absent instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_TESTS = '''
import pytest
from conftest import SHARED_DATA

def test_with_fixture(shared_data):
    assert shared_data.is_dir()

@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"not found at {SHARED_DATA} (../shared/data beside the repository)")
def test_with_skipif():
    pass
'''


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path / "repo" /
                           "tests")], cwd=tmp_path / "repo", env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo_without_shared_data(tmp_path):
    tests = tmp_path / "repo" / "tests"  # conftest's ../shared/data is then tmp_path/shared/data: absent
    tests.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "test_needs_data.py").write_text(_TESTS)
    return tmp_path


def test_missing_shared_data_fails_under_ci(repo_without_shared_data):
    result = _run(repo_without_shared_data, "true")
    assert result.returncode == 1 and "skipped" not in result.stdout.splitlines()[-1], result.stdout + result.stderr
    assert "2 errors" in result.stdout or "2 failed" in result.stdout, result.stdout  # red, both of them


def test_missing_shared_data_skips_outside_ci(repo_without_shared_data):
    result = _run(repo_without_shared_data, None)
    assert result.returncode == 0 and "2 skipped" in result.stdout, result.stdout + result.stderr
