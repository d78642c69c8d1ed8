"""The HTTP API and the public leaderboard page (FastAPI on Starlette).

==========================================  ======  ===========================================================
``POST /api/submissions?method=&test_set=``  token   the submission file as the request body (``.h5`` or ``.zip``);
                                                      202 ``{id, status, report}`` or an error with its report
``GET /api/submissions``                     token   the team's own submissions
``GET /api/submissions/{id}``                token   one of the team's submissions: status, validation report,
                                                      aggregates overall and per |yaw| bin (never per sample)
``GET /api/leaderboard``                     public  every test set's ranked rows (JSON)
``GET /``                                    public  the leaderboard page, with a form to submit
``GET /healthz``                             public  ``{"ok": true}``
==========================================  ======  ===========================================================

Tokens go in ``Authorization: Bearer <token>``. Errors are JSON ``{"error": "...", ...}`` with a
4xx status; nothing of a refused upload is stored (:mod:`facebench.serve.intake`). The body is
read as a stream and written to disk block by block: an upload is never held in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from facebench.serve.db import Submission, Team, TestSet, make_engine
from facebench.serve.intake import (
    IntakeLimits,
    Refused,
    check_daily_limit,
    check_upload,
    detect_kind,
    queue_submission,
    receive,
)
from facebench.serve.tokens import team_of_token

__all__ = ["ServeConfig", "create_app", "leaderboard_rows"]


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The service's settings: database URL, data folder (uploads/, results/, tmp/), limits."""

    db_url: str
    data_dir: Path
    limits: IntakeLimits = IntakeLimits()
    title: str = "facebench scoring service"


def _error(refused: Refused) -> JSONResponse:
    return JSONResponse(refused.body(), status_code=refused.status)


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


def submission_view(row: Submission, test_set: TestSet) -> dict:
    """What the submitting team sees of one of its submissions."""
    return {
        "id": row.id, "method": row.method, "test_set": test_set.name, "protocol": test_set.protocol,
        "status": row.status, "attempts": row.attempts, "created": _iso(row.created_at),
        "finished": _iso(row.finished_at), "error": row.error, "upload_bytes": row.upload_bytes,
        "upload_sha256": row.upload_sha256, "report": json.loads(row.report_json),
        "result": json.loads(row.result_json) if row.result_json else None,
    }


def leaderboard_rows(session: Session) -> list[dict]:
    """Per test set: the latest scored submission of each (team, method), ranked by headline error."""
    boards = []
    for test_set in session.scalars(select(TestSet).order_by(TestSet.name)).all():
        rows = session.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id)
                               .where(Submission.test_set_id == test_set.id, Submission.status == "done")
                               .order_by(Submission.id)).all()
        latest: dict[tuple[str, str], tuple[Submission, str]] = {}
        for submission, team in rows:
            latest[(team, submission.method)] = (submission, team)
        entries = []
        for submission, team in latest.values():
            result = json.loads(submission.result_json)
            metrics = {k: {s: v.get(s) for s in ("mean", "ci95_low", "ci95_high")} for k, v in result["metrics"].items()}
            entries.append({"team": team, "method": submission.method, "submission": submission.id,
                            "headline": result.get("headline"), "n_scored": result["n_scored"],
                            "n_expected": result["n_expected"], "completion": result["completion"],
                            "metrics": metrics, "date": _iso(submission.finished_at)})
        entries.sort(key=lambda e: (e["headline"] is None or e["headline"].get("mean") is None,
                                    (e["headline"] or {}).get("mean") or 0.0, e["submission"]))
        for rank, entry in enumerate(entries, start=1):
            entry["rank"] = rank
        boards.append({"name": test_set.name, "protocol": test_set.protocol, "rows": entries})
    return boards


def create_app(config: ServeConfig, on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The ASGI application of the service (the database must be upgraded already);
    ``on_ready`` is called once it accepts connections."""
    import facebench.benchmark.validation  # noqa: F401  (imported now, not by the first upload: torch takes seconds)

    engine = make_engine(config.db_url)
    uploads = Path(config.data_dir) / "uploads"
    scratch = Path(config.data_dir) / "tmp"
    limits = config.limits

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if on_ready is not None:
            on_ready()
        yield
        engine.dispose()

    app = FastAPI(title=config.title, docs_url="/api/docs", redoc_url=None, lifespan=lifespan)

    def authenticate(token: str | None) -> tuple[int, str]:
        with Session(engine) as session:
            team = team_of_token(session, token)
            if team is None:
                raise Refused(401, "missing or invalid API token (send 'Authorization: Bearer <token>')")
            return team.id, team.name

    def find_test_set(name: str | None) -> tuple[int, str, str]:
        with Session(engine) as session:
            sets = session.scalars(select(TestSet).order_by(TestSet.id)).all()
            if name is None and len(sets) == 1:
                chosen = sets[0]
            else:
                chosen = next((s for s in sets if s.name == name), None)
            if chosen is None:
                known = ", ".join(s.name for s in sets)
                raise Refused(404, f"unknown test set {name!r} (known: {known}); give ?test_set=NAME")
            return chosen.id, chosen.path, chosen.protocol

    def precheck_limit(team_id: int) -> None:
        with Session(engine) as session:
            check_daily_limit(session, session.get(Team, team_id), limits)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/api/submissions", status_code=202)
    async def upload(request: Request, method: str | None = None, test_set: str | None = None):
        incoming = None
        try:
            team_id, _ = await run_in_threadpool(authenticate, _bearer(request))
            test_set_id, dataset_path, protocol = await run_in_threadpool(find_test_set, test_set)
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
                raise Refused(413, f"upload of {declared} bytes is larger than the limit of "
                                   f"{limits.max_upload_bytes} bytes: refused, nothing stored")
            await run_in_threadpool(precheck_limit, team_id)
            incoming, size, sha256 = await receive(request.stream(), uploads, limits.max_upload_bytes)
            kind = await run_in_threadpool(detect_kind, incoming)
            if kind is None:
                raise Refused(415, "not an HDF5 file nor a zip archive (send the .h5 or .zip itself as the body)")
            incoming = incoming.rename(incoming.with_suffix(".h5" if kind == "hdf5" else ".zip"))
            name, report = await run_in_threadpool(check_upload, incoming, kind, dataset_path, protocol, limits,
                                                   scratch, method)
            job_id = await run_in_threadpool(queue_submission, engine, team_id, test_set_id, name, incoming, kind,
                                             size, sha256, report, uploads, limits)
            incoming = None
        except Refused as refused:
            return _error(refused)
        finally:
            if incoming is not None:
                incoming.unlink(missing_ok=True)
        return {"id": job_id, "status": "queued", "method": name, "report": report}

    @app.get("/api/submissions")
    def my_submissions(request: Request):
        try:
            team_id, team = authenticate(_bearer(request))
        except Refused as refused:
            return _error(refused)
        with Session(engine) as session:
            rows = session.execute(select(Submission, TestSet).join(TestSet, TestSet.id == Submission.test_set_id)
                                   .where(Submission.team_id == team_id).order_by(Submission.id)).all()
            return {"team": team, "submissions": [submission_view(s, t) for s, t in rows]}

    @app.get("/api/submissions/{submission_id}")
    def my_submission(submission_id: int, request: Request):
        try:
            team_id, _ = authenticate(_bearer(request))
        except Refused as refused:
            return _error(refused)
        with Session(engine) as session:
            row = session.get(Submission, submission_id)
            if row is None or row.team_id != team_id:  # another team's submission: as if absent
                return _error(Refused(404, f"no submission {submission_id} of your team"))
            return submission_view(row, session.get(TestSet, row.test_set_id))

    @app.get("/api/leaderboard")
    def leaderboard_json():
        with Session(engine) as session:
            return {"test_sets": leaderboard_rows(session)}

    @app.get("/", response_class=HTMLResponse)
    def page():
        from facebench.serve.page import render_page

        with Session(engine) as session:
            return render_page(config.title, leaderboard_rows(session), limits)

    return app

