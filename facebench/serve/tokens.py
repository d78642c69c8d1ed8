"""Teams and their API tokens: random, shown once, stored as SHA-256 only.

A token is ``fb_`` + 32 random bytes (URL-safe base64); its SHA-256 identifies it in the
``tokens`` table (a high-entropy random secret needs no slow password hash). Rotating revokes
every live token of the team and returns a new one. Test sets are registered here too.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from facebench.errors import InvalidInputError
from facebench.serve.db import Team, TestSet, Token, utcnow

__all__ = ["token_sha256", "new_token", "add_team", "rotate_token", "team_of_token", "add_test_set", "list_teams",
           "TEAM_NAME"]

#: Team and test-set names: short identifiers (they appear in URLs, folders and the page).
TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOKEN_PREFIX = "fb_"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _check_name(name: str, what: str) -> str:
    if not TEAM_NAME.fullmatch(name or ""):
        raise InvalidInputError(f"{what} {name!r}: use 1-64 letters, digits, '_', '.', '-' (starting with a letter "
                                "or digit)")
    return name


def add_team(engine: Engine, name: str, *, daily_limit: int | None = None) -> str:
    """Create team ``name`` and return its first token (the only time it is shown)."""
    _check_name(name, "team name")
    token = new_token()
    with Session(engine) as session, session.begin():
        if session.scalar(select(Team.id).where(Team.name == name)) is not None:
            raise InvalidInputError(f"team {name!r} exists (rotate its token with 'facebench serve-admin rotate-token')")
        team = Team(name=name, daily_limit=daily_limit, created_at=utcnow())
        session.add(team)
        session.flush()
        session.add(Token(team_id=team.id, token_sha256=token_sha256(token), created_at=utcnow()))
    return token


def rotate_token(engine: Engine, name: str) -> str:
    """Revoke every live token of team ``name`` and return a new one."""
    token = new_token()
    with Session(engine) as session, session.begin():
        team_id = session.scalar(select(Team.id).where(Team.name == name))
        if team_id is None:
            raise InvalidInputError(f"no team {name!r}")
        session.execute(update(Token).where(Token.team_id == team_id, Token.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))
        session.add(Token(team_id=team_id, token_sha256=token_sha256(token), created_at=utcnow()))
    return token


def team_of_token(session: Session, token: str | None) -> Team | None:
    """The team holding the live ``token``, or None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return session.scalar(select(Team).join(Token, Token.team_id == Team.id)
                          .where(Token.token_sha256 == token_sha256(token), Token.revoked_at.is_(None)))


def list_teams(engine: Engine) -> list[dict]:
    with Session(engine) as session:
        teams = session.scalars(select(Team).order_by(Team.name)).all()
        out = []
        for team in teams:
            live = session.scalars(select(Token).where(Token.team_id == team.id, Token.revoked_at.is_(None))).all()
            out.append({"name": team.name, "daily_limit": team.daily_limit, "live_tokens": len(live),
                        "created": team.created_at.isoformat(timespec="seconds")})
        return out


def add_test_set(engine: Engine, name: str, path: str | Path, protocol: str) -> bool:
    """Register (or update the path/protocol of) test set ``name``; True when it was new.

    The dataset must open and suit the protocol (checked here, before any upload)."""
    from facebench.benchmark.protocols import get_protocol
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.hashing import file_sha256

    _check_name(name, "test set name")
    path = Path(path).resolve()
    spec = get_protocol(protocol)
    dataset = FaceDataset(path)
    if dataset.kind != spec.dataset_kind:
        raise InvalidInputError(f"protocol {protocol} scores {spec.dataset_kind} datasets, but {path} is {dataset.kind!r}")
    digest = file_sha256(path)
    with Session(engine) as session, session.begin():
        existing = session.scalar(select(TestSet).where(TestSet.name == name))
        if existing is None:
            session.add(TestSet(name=name, path=str(path), protocol=protocol, sha256=digest, created_at=utcnow()))
            return True
        existing.path, existing.protocol, existing.sha256 = str(path), protocol, digest
        return False
