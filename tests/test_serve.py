"""The scoring service over real HTTP: a `facebench serve` process on 127.0.0.1, a free port.

Upload → validate → score → leaderboard; hostile uploads refused with nothing stored; a headless
browser submitting through the page; 20 concurrent uploads each getting exactly one row; the
daily limit under concurrency; a restart resuming the queue and a worker killed by SIGKILL
mid-job leaving the job to be scored again. Every server is stopped by its fixture; every wait is
bounded.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
requests = pytest.importorskip("requests")

from facebench.serve import db  # noqa: E402
from facebench.serve.tokens import add_team, add_test_set  # noqa: E402

pytestmark = pytest.mark.slow

MAX_UPLOAD_MB = 4


class Server:
    """A `python -m facebench serve` process; ``url`` once it prints ``serving on``."""

    def __init__(self, data_dir: Path, dataset: Path, *extra: str):
        command = [sys.executable, "-m", "facebench", "serve", "--dataset", str(dataset), "--protocol", "synthetic",
                   "--data-dir", str(data_dir), "--port", "0", "--max-upload-mb", str(MAX_UPLOAD_MB),
                   "--max-unzipped-mb", "8", *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.url = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90) or self.url is None:
            self.stop()
            raise AssertionError("server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("serving on "):
                self.url = line.split()[2]
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _post(url: str, token: str | None, data, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url}/api/submissions", params=params, data=data, headers=headers, timeout=60)


def _wait_for(url: str, token: str, job: int, states=("done", "failed"), timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = requests.get(f"{url}/api/submissions/{job}", headers={"Authorization": f"Bearer {token}"},
                            timeout=60).json()
        if body["status"] in states:
            return body
        time.sleep(0.2)
    raise AssertionError(f"submission {job} not {states} after {timeout_s} s: {body}")


def _rows(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / "facebench-serve.db") as conn:
        return conn.execute("SELECT id, team_id, status, attempts, claimed_by, method FROM submissions ORDER BY id").fetchall()


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 12-sample synthetic test set (64 px) and the mean-face submission for it."""
    from facebench.benchmark.templates import write_template
    from facebench.datasets.generator import GeneratorSettings, generate

    folder = tmp_path_factory.mktemp("serve-files")
    dataset = folder / "test.h5"
    generate(GeneratorSettings(n=12, size=64, seed=0), dataset)
    mean = write_template(dataset, "mean", folder / "mean.h5")
    return {"dataset": dataset, "mean": mean, "folder": folder}


def _prepare(data_dir: Path, dataset: Path, teams: dict[str, int | None]) -> dict[str, str]:
    """Database upgraded, test set registered and teams created (what serve-admin does); tokens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = db.sqlite_url(data_dir / "facebench-serve.db")
    db.upgrade(url)
    engine = db.make_engine(url)
    add_test_set(engine, dataset.stem, dataset, "synthetic")
    tokens = {name: add_team(engine, name, daily_limit=limit) for name, limit in teams.items()}
    engine.dispose()
    return tokens


@pytest.fixture(scope="module")
def service(files, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("serve") / "srv"
    teams = {"alpha": None, "beta": None, "limited": 2, "browser": None, **{f"team{i:02d}": None for i in range(20)}}
    tokens = _prepare(data_dir, files["dataset"], teams)
    server = Server(data_dir, files["dataset"], "--workers", "2", "--daily-limit", "5")
    yield {"url": server.url, "tokens": tokens, "data_dir": data_dir, "server": server}
    server.stop()


# ---------------------------------------------------------------------------------------------- tests
def test_migrations_match_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = db.sqlite_url(tmp_path / "x.db")
    db.upgrade(url)
    db.upgrade(url)  # idempotent
    engine = db.make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.Base.metadata) == []
    engine.dispose()


def test_upload_validate_score_leaderboard(service, files):
    url, token = service["url"], service["tokens"]["alpha"]
    response = _post(url, token, files["mean"].read_bytes(), method="mean face")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["report"]["ok"] and body["report"]["n_scored"] == 12 and "dataset" not in body["report"]
    job = body["id"]
    done = _wait_for(url, token, job)
    assert done["status"] == "done", done
    result = done["result"]
    assert result["n_scored"] == 12 and result["metrics"]["shape_mm"]["mean"] > 0
    assert set(result["bins"]["shape_mm"]) and all(set(s) == {"n", "mean", "median", "std", "ci95_low", "ci95_high"}
                                                  for s in result["bins"]["shape_mm"].values())
    text = json.dumps(done)
    assert "0000003" not in text and "per_sample" not in text and str(service["data_dir"]) not in text
    # another team cannot see it; no token: refused
    other = requests.get(f"{url}/api/submissions/{job}", headers={"Authorization": f"Bearer {service['tokens']['beta']}"},
                         timeout=10)
    assert other.status_code == 404
    assert requests.get(f"{url}/api/submissions/{job}", timeout=10).status_code == 401
    board = requests.get(f"{url}/api/leaderboard", timeout=10).json()
    rows = board["test_sets"][0]["rows"]
    assert [(r["team"], r["method"], r["rank"]) for r in rows] == [("alpha", "mean face", 1)]
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and "mean face" in page.text and "alpha" in page.text
    results = service["data_dir"] / "results" / "synthetic" / "test" / f"{job:06d}"
    assert (results / "summary.json").is_file() and (results / "per_sample.csv").is_file()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["method"] == "mean face [alpha]"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_hostile_uploads_refused_and_nothing_stored(service, files):
    import h5py

    url, token, data_dir = service["url"], service["tokens"]["beta"], service["data_dir"]
    before = _rows(data_dir)
    good = files["mean"].read_bytes()
    bad_h5 = files["folder"] / "bad.h5"
    with h5py.File(bad_h5, "w") as f:
        f.attrs.update(format="facebench-submission", version=1, method="broken")
        f["ids"] = np.array([f"{i:07d}" for i in range(12)], dtype="S")
        f["vertices"] = np.zeros((12, 10, 3), np.float32)
    cases = {
        "wrong token": (_post(url, "fb_" + "x" * 43, good, method="m"), 401),
        "no token": (_post(url, None, good, method="m"), 401),
        "oversize": (_post(url, token, os.urandom(MAX_UPLOAD_MB * 1024**2 + 1), method="m"), 413),
        "oversize, chunked": (_post(url, token, (b"\0" * 1024**2 for _ in range(MAX_UPLOAD_MB + 2)), method="m"), 413),
        "not hdf5 or zip": (_post(url, token, b"<html>" * 100, method="m"), 415),
        "empty": (_post(url, token, b"", method="m"), 400),
        "zip bomb": (_post(url, token, _zip({"sub.h5": b"\0" * (20 * 1024**2)}), method="m"), 422),
        "zip slip": (_post(url, token, _zip({"../../evil.h5": good}), method="m"), 422),
        "invalid submission": (_post(url, token, bad_h5.read_bytes(), method="m"), 422),
        "html in method name": (_post(url, token, good, method="<script>alert(1)</script>"), 422),
        "control character in method name": (_post(url, token, good, method="a\x1b[31mb"), 422),
        "unknown test set": (_post(url, token, good, method="m", test_set="nope"), 404),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.json()["error"], name
    assert "unsafe-zip" in cases["zip bomb"][0].text and "exceeds" in cases["zip bomb"][0].text
    assert "leaves the archive root" in cases["zip slip"][0].text
    report = cases["invalid submission"][0].json()["report"]
    assert not report["ok"] and report["n_errors"] >= 1
    assert "method name" in cases["html in method name"][0].json()["error"]
    assert _rows(data_dir) == before
    assert not [p for p in (data_dir / "uploads").iterdir() if p.name.startswith(".incoming")]
    assert not list((data_dir / "tmp").glob("*")) if (data_dir / "tmp").exists() else True
    assert not list(files["folder"].parent.rglob("evil.h5"))


def test_browser_submits_through_the_page(service, files):
    """Headless Chromium (Debian's chromium + chromium-driver, selenium from PyPI) submits a file."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (scripts/setup.sh installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver installed (scripts/setup.sh installs Debian's chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=700,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(service["url"] + "/")
        driver.find_element(By.ID, "token").send_keys(service["tokens"]["browser"])
        Select(driver.find_element(By.ID, "test_set")).select_by_value("test")
        driver.find_element(By.ID, "method").send_keys("from the browser")
        driver.find_element(By.ID, "file").send_keys(str(files["mean"]))
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 60, poll_frequency=0.3).until(
            lambda d: "from the browser" in [c.text for c in d.find_elements(By.CSS_SELECTOR, "td.method")])
        assert "done" in driver.find_element(By.ID, "status").text
        # the page fits a 700 px window: the table scrolls inside its box, not the page
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 700
    finally:
        driver.quit()


def test_twenty_concurrent_uploads_one_row_each(service, files):
    url, tokens, data_dir = service["url"], service["tokens"], service["data_dir"]
    before = {row[0] for row in _rows(data_dir)}
    data = files["mean"].read_bytes()
    teams = [f"team{i:02d}" for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda team: _post(url, tokens[team], data, method=f"m-{team}"), teams))
    assert [r.status_code for r in responses] == [202] * 20, [r.text[:200] for r in responses if r.status_code != 202]
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 20
    new = [row for row in _rows(data_dir) if row[0] not in before]
    assert sorted(row[0] for row in new) == sorted(ids)
    assert sorted(row[5] for row in new) == sorted(f"m-{team}" for team in teams)
    # the daily limit holds under concurrency: a team allowed 2 a day sending 4 at once gets 2 in
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        limited = list(pool.map(lambda i: _post(url, tokens["limited"], data, method=f"try {i}"), range(4)))
    assert sorted(r.status_code for r in limited) == [202, 202, 429, 429]
    assert "limit" in next(r for r in limited if r.status_code == 429).json()["error"]


def test_restart_resumes_queue_and_killed_worker_is_retried(files, tmp_path):
    """Queued with no worker, server stopped; restarted: a worker claims it, is killed by SIGKILL
    mid-job; its lease expires; a restarted worker scores it (attempt 2); one row, one result."""
    data_dir = tmp_path / "srv"
    token = _prepare(data_dir, files["dataset"], {"gamma": None})["gamma"]
    first = Server(data_dir, files["dataset"], "--workers", "0")
    try:
        response = _post(first.url, token, files["mean"].read_bytes(), method="survivor")
        assert response.status_code == 202, response.text
        job = response.json()["id"]
    finally:
        first.stop()
    assert [row[2] for row in _rows(data_dir)] == ["queued"]
    second = Server(data_dir, files["dataset"], "--workers", "1", "--lease-s", "2", "--job-delay", "2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _rows(data_dir)[0][2] != "running":
            time.sleep(0.1)
        _, _, status, attempts, claimed_by, _ = _rows(data_dir)[0]
        assert status == "running" and attempts == 1
        os.kill(int(claimed_by.rsplit(":", 1)[1]), signal.SIGKILL)
        done = _wait_for(second.url, token, job, timeout_s=90)
    finally:
        second.stop()
    assert done["status"] == "done" and done["attempts"] == 2, done
    rows = _rows(data_dir)
    assert len(rows) == 1 and rows[0][4] != claimed_by
    assert [p.name for p in (data_dir / "results" / "synthetic" / "test").iterdir()] == [f"{job:06d}"]
    assert any("exited" in line for line in second.lines)
