"""The scoring worker: a process that claims jobs from the database and scores them.

``python -m facebench.serve.worker --db URL --data-dir DIR`` (started by ``facebench serve``,
one process per ``--workers``) loops: claim a job (:func:`facebench.serve.jobs.claim`), score
the stored upload with :func:`facebench.benchmark.scoring.score` under the test set's protocol
while a thread renews the lease, write the usual results folder
(``DIR/results/<protocol>/<test set>/<submission id>/``) and store the public result in the
row. It exits when its parent (the server) is gone, so a killed server leaves no orphan.

The public result (:func:`public_result`) holds aggregates only: per metric and per |yaw| bin
n, mean, median, std and the bootstrap 95 % CI of the mean. Never a per-sample value (those stay
in ``per_sample.csv`` on the server), nor min/max (which a bin of one sample would reveal).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from sqlalchemy.orm import Session

from facebench.serve import jobs
from facebench.serve.db import Team, TestSet, make_engine

__all__ = ["public_result", "run_worker", "results_folder"]

_PUBLIC_STATS = ("n", "mean", "median", "std", "ci95_low", "ci95_high")


def _public_stats(stats: dict) -> dict:
    return {k: stats.get(k) for k in _PUBLIC_STATS}


def public_result(summary: dict) -> dict:
    """What a submitter may see of a ``summary.json``: aggregates overall and per bin."""
    return {
        "protocol": summary["protocol_id"],
        "n_expected": summary["n_expected"],
        "n_scored": summary["n_scored"],
        "completion": summary["completion"],
        "n_failed": summary.get("n_failed", 0),
        "headline": summary.get("headline"),
        "metrics": {key: _public_stats(stats) for key, stats in summary["metrics"].items()},
        "bins": {key: {label: _public_stats(stats) for label, stats in per_bin.items()}
                 for key, per_bin in summary.get("bins", {}).items()},
        "bin_edges_yaw_deg": summary.get("bin_edges_yaw_deg"),
        "warnings": summary.get("submission", {}).get("warnings", [])[:20],
        "facebench_version": summary.get("facebench_version"),
    }


def results_folder(data_dir: Path, protocol: str, test_set: str, job_id: int) -> Path:
    return Path(data_dir) / "results" / protocol / test_set / f"{job_id:06d}"


class _Heartbeat(threading.Thread):
    """Renews a job's lease every lease/3 seconds until stopped."""

    def __init__(self, engine, job_id: int, worker: str, lease_s: float):
        super().__init__(daemon=True)
        self.engine, self.job_id, self.worker, self.lease_s = engine, job_id, worker, lease_s
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stop.wait(self.lease_s / 3):
            try:
                if not jobs.heartbeat(self.engine, self.job_id, self.worker, self.lease_s):
                    self.lost = True
                    return
            except Exception:  # a busy database: try again at the next beat
                continue


def score_job(engine, claim: jobs.Claim, data_dir: Path, worker: str, lease_s: float, delay_s: float = 0.0) -> str:
    """Score one claimed job; returns its final status (``done``, ``failed`` or ``lost``)."""
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results

    with Session(engine) as session:
        test_set = session.get(TestSet, claim.test_set_id)
        team = session.get(Team, claim.team_id)
        test_name, dataset_path, protocol_name, team_name = test_set.name, test_set.path, test_set.protocol, team.name
    beat = _Heartbeat(engine, claim.id, worker, lease_s)
    beat.start()
    try:
        if delay_s and claim.attempts == 1:
            time.sleep(delay_s)  # --job-delay: tests (a first attempt long enough to kill its worker)
        result = score(dataset_path, claim.upload_path, get_protocol(protocol_name),
                       method=f"{claim.method} [{team_name}]")
        out = results_folder(data_dir, protocol_name, test_name, claim.id)
        write_results(result, out)
    except Exception as error:  # an invalid or unscorable upload: report it, never retry
        beat.stop.set()
        message = f"{type(error).__name__}: {error}".replace(str(data_dir), "<data>")
        return "failed" if jobs.fail(engine, claim.id, worker, message) else "lost"
    finally:
        beat.stop.set()
    public = public_result(result.summary)
    headline = (public.get("headline") or {}).get("mean")
    ok = jobs.finish(engine, claim.id, worker, results_dir=str(out), result=public, headline=headline)
    return "done" if ok else "lost"


def run_worker(db_url: str, data_dir: str | Path, *, lease_s: float = 300.0, poll_s: float = 0.5,
               parent: int | None = None, delay_s: float = 0.0, max_jobs: int | None = None) -> int:
    """Claim and score jobs until the parent process is gone (or ``max_jobs`` were done)."""
    engine = make_engine(db_url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    done = 0
    while max_jobs is None or done < max_jobs:
        if parent is not None and os.getppid() != parent:
            break
        try:
            claim = jobs.claim(engine, worker, lease_s)
        except Exception:
            traceback.print_exc()
            time.sleep(poll_s)
            continue
        if claim is None:
            time.sleep(poll_s)
            continue
        status = score_job(engine, claim, Path(data_dir), worker, lease_s, delay_s)
        print(f"worker {worker}: submission {claim.id} (attempt {claim.attempts}) {status}", file=sys.stderr, flush=True)
        done += 1
    engine.dispose()
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facebench.serve.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--lease-s", type=float, default=300.0)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--job-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one process per core: no intra-op threads fighting each other
    run_worker(args.db, args.data_dir, lease_s=args.lease_s, parent=args.parent, delay_s=args.job_delay)


if __name__ == "__main__":
    main()
