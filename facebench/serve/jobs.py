"""The database as the job queue: claim with a lease, heartbeat, finish.

A worker claims the oldest ``queued`` submission, or a ``running`` one whose lease expired (its
worker died), with one compare-and-set ``UPDATE ... WHERE id = ? AND <still claimable>``: of two
workers racing for a row exactly one updates it. While scoring, the worker renews the lease
(:func:`heartbeat`); a worker killed mid-job stops renewing, and the job is claimed again after
``lease_s``. A job claimed :data:`MAX_ATTEMPTS` times without finishing is marked ``failed``.
:func:`finish` only succeeds for the worker that holds the claim, so a late finisher whose
lease was taken over cannot overwrite the newer attempt.
"""

from __future__ import annotations

import datetime
import json

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Engine

from facebench.serve.db import Submission, utcnow

__all__ = ["MAX_ATTEMPTS", "claim", "heartbeat", "finish", "fail", "Claim"]

#: A job is given up (status ``failed``) after this many claims that never finished.
MAX_ATTEMPTS = 3


class Claim:
    """A claimed job: the submission id, its attempt number and the fields a worker needs."""

    def __init__(self, row):
        self.id, self.attempts = row.id, row.attempts
        self.upload_path, self.method, self.test_set_id, self.team_id = (row.upload_path, row.method,
                                                                          row.test_set_id, row.team_id)


def _claimable(now: datetime.datetime):
    return or_(Submission.status == "queued",
               and_(Submission.status == "running", Submission.lease_until < now))


def claim(engine: Engine, worker: str, lease_s: float) -> Claim | None:
    """Claim the next job for ``worker`` (None when there is none)."""
    for _ in range(5):  # another worker may win the compare-and-set; try the next row
        now = utcnow()
        with engine.begin() as conn:
            # jobs whose workers died too often: give up on them
            conn.execute(update(Submission)
                         .where(Submission.status == "running", Submission.lease_until < now,
                                Submission.attempts >= MAX_ATTEMPTS)
                         .values(status="failed", finished_at=now,
                                 error=f"scoring did not finish in {MAX_ATTEMPTS} attempts (worker died each time)"))
            job_id = conn.scalar(select(Submission.id).where(_claimable(now)).order_by(Submission.id).limit(1))
            if job_id is None:
                return None
            done = conn.execute(update(Submission).where(Submission.id == job_id, _claimable(now))
                                .values(status="running", claimed_by=worker, attempts=Submission.attempts + 1,
                                        lease_until=now + datetime.timedelta(seconds=lease_s), started_at=now))
            if done.rowcount == 1:
                row = conn.execute(select(Submission).where(Submission.id == job_id)).one()
                return Claim(row)
    return None


def heartbeat(engine: Engine, job_id: int, worker: str, lease_s: float) -> bool:
    """Renew the lease; False when the job is no longer ours."""
    with engine.begin() as conn:
        done = conn.execute(update(Submission)
                            .where(Submission.id == job_id, Submission.claimed_by == worker,
                                   Submission.status == "running")
                            .values(lease_until=utcnow() + datetime.timedelta(seconds=lease_s)))
    return done.rowcount == 1


def finish(engine: Engine, job_id: int, worker: str, *, results_dir: str, result: dict, headline: float | None) -> bool:
    """Mark the job done with its public result; False when the claim was lost meanwhile."""
    with engine.begin() as conn:
        done = conn.execute(update(Submission)
                            .where(Submission.id == job_id, Submission.claimed_by == worker,
                                   Submission.status == "running")
                            .values(status="done", finished_at=utcnow(), results_dir=results_dir,
                                    result_json=json.dumps(result, allow_nan=False), headline=headline,
                                    error=None, lease_until=None))
    return done.rowcount == 1


def fail(engine: Engine, job_id: int, worker: str, error: str) -> bool:
    """Mark the job failed (scoring raised: retrying would fail again)."""
    with engine.begin() as conn:
        done = conn.execute(update(Submission)
                            .where(Submission.id == job_id, Submission.claimed_by == worker,
                                   Submission.status == "running")
                            .values(status="failed", finished_at=utcnow(), error=error[:2000], lease_until=None))
    return done.rowcount == 1
