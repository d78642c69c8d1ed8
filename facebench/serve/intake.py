"""Accepting an upload: stream it to disk under a size limit, check it, validate it, queue it.

Nothing of a refused upload is kept: the partial file is removed and no row is written. An
accepted upload is one row of ``submissions`` (status ``queued``) written in one transaction that
also checks the team's daily limit, so concurrent uploads each get exactly one row and the limit
holds under concurrency (SQLite: ``BEGIN IMMEDIATE``; other databases: the team row locked with
``SELECT ... FOR UPDATE``).

Checks, in order: token (401), test set (404), declared size (413, before reading), daily
limit (429), streamed size (413), file type by its first bytes (HDF5 or zip, else 415), for a zip
every member and the bytes it really unpacks to (:func:`facebench.benchmark.submission_zip.
safe_extract_zip` with the server's limit; 422), then the validation of ``facebench submission
validate`` (422 with its report), then the method name (:mod:`facebench.benchmark.method_name`,
plus no ``<``/``>`` on this public page; 422).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from facebench.serve.db import Submission, Team, utcnow

__all__ = ["Refused", "IntakeLimits", "receive", "detect_kind", "check_upload", "queue_submission",
           "submissions_today"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
_BLOCK = 1 << 20


class Refused(Exception):
    """An upload refused with an HTTP status, a one-line message and optional details."""

    def __init__(self, status: int, message: str, **details):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details

    def body(self) -> dict:
        return {"error": self.message, **self.details}


@dataclasses.dataclass(frozen=True)
class IntakeLimits:
    """Upload limits: bytes received, bytes a zip may unpack to, submissions per team per UTC day."""

    max_upload_bytes: int = 512 * 1024**2
    max_unzipped_bytes: int = 2 * 1024**3
    daily_limit: int = 5


async def receive(chunks: AsyncIterator[bytes], folder: Path, max_bytes: int) -> tuple[Path, int, str]:
    """Write the body to ``folder/.incoming-<uuid>`` block by block; (path, size, sha256).

    Raises Refused(413) past ``max_bytes`` (the partial file removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".incoming-{uuid.uuid4().hex}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as sink:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise Refused(413, f"upload larger than the limit of {max_bytes} bytes: refused, nothing stored")
                digest.update(chunk)
                sink.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise Refused(400, "empty upload: send the submission file (.h5 or .zip) as the request body")
    return path, size, digest.hexdigest()


def detect_kind(path: Path) -> str | None:
    """``"hdf5"`` or ``"zip"`` from the file's first bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    return None


def _public_report(report, upload: Path, dataset_path: str) -> dict:
    """The validation report without server paths (the upload is called ``upload``)."""
    data = report.to_dict()
    data.pop("submission", None)
    data.pop("dataset", None)
    text = json.dumps(data).replace(json.dumps(str(upload))[1:-1], "upload")
    return json.loads(text.replace(json.dumps(str(dataset_path))[1:-1], "test set"))


def check_upload(path: Path, kind: str, dataset_path: str, protocol_name: str, limits: IntakeLimits,
                 scratch: Path, method: str | None) -> tuple[str, dict]:
    """Zip safety, validation and the method name; (method, public report) or Refused(422)."""
    from facebench.benchmark.method_name import method_name_problem
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.submission_zip import safe_extract_zip
    from facebench.benchmark.validation import validate_submission
    from facebench.errors import InputFileError

    if kind == "zip":  # unpack once under the server's limit, counting real bytes (zip bombs, zip slip)
        scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="zipcheck-", dir=scratch))
        try:
            safe_extract_zip(path, folder, max_bytes=limits.max_unzipped_bytes)
        except InputFileError as error:
            message = str(error.message).replace(str(path), "upload")
            raise Refused(422, f"zip refused: {message}", code="unsafe-zip") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    protocol = get_protocol(protocol_name)
    topology = "dataset" if protocol.topology == "corresponding" else "any"
    report = validate_submission(path, dataset_path, topology=topology)
    public = _public_report(report, path, dataset_path)
    if not report.ok:
        raise Refused(422, f"invalid submission ({len(report.errors)} errors): not stored, not scored",
                      report=public)
    name = method if method is not None else report.method
    if name is None or not str(name).strip():
        raise Refused(422, "no method name: give ?method=NAME or the submission's 'method' attribute", report=public)
    problem = method_name_problem(name)
    if problem is None and any(c in str(name) for c in "<>"):
        problem = "holds '<' or '>' (no markup in names on the public leaderboard)"
    if problem is not None:
        raise Refused(422, f"method name {problem}", report=public)
    return str(name).strip(), public


def _day_start(now: datetime.datetime) -> datetime.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def submissions_today(session: Session, team_id: int, now: datetime.datetime | None = None) -> int:
    now = now or utcnow()
    return session.scalar(select(func.count(Submission.id))
                          .where(Submission.team_id == team_id, Submission.created_at >= _day_start(now)))


def check_daily_limit(session: Session, team: Team, limits: IntakeLimits) -> None:
    limit = team.daily_limit if team.daily_limit is not None else limits.daily_limit
    used = submissions_today(session, team.id)
    if used >= limit:
        raise Refused(429, f"team {team.name} reached its limit of {limit} submissions per UTC day; try tomorrow")


def queue_submission(engine: Engine, team_id: int, test_set_id: int, method: str, incoming: Path, kind: str,
                     size: int, sha256: str, report: dict, uploads: Path, limits: IntakeLimits) -> int:
    """Move the checked upload into place and insert its row (daily limit re-checked atomically)."""
    final = uploads / f"{uuid.uuid4().hex}{'.h5' if kind == 'hdf5' else '.zip'}"
    os.replace(incoming, final)
    try:
        with Session(engine) as session, session.begin():
            team = session.scalar(select(Team).where(Team.id == team_id).with_for_update())
            check_daily_limit(session, team, limits)
            row = Submission(team_id=team_id, test_set_id=test_set_id, method=method, status="queued",
                             upload_path=str(final), upload_sha256=sha256, upload_bytes=size,
                             report_json=json.dumps(report), created_at=utcnow(), attempts=0)
            session.add(row)
            session.flush()
            return row.id
    except BaseException:
        final.unlink(missing_ok=True)
        raise
