"""``facebench serve`` (the scoring service) and ``facebench serve-admin`` (teams, tokens, test sets)."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import FacebenchGroup

_DB_HELP = "SQLAlchemy database URL (default: sqlite:///DATA_DIR/facebench-serve.db)."


def _db_url(db: str | None, data_dir: Path) -> str:
    from facebench.serve.db import sqlite_url

    data_dir.mkdir(parents=True, exist_ok=True)
    return db or sqlite_url(data_dir / "facebench-serve.db")


@click.command("serve")
@click.option("--dataset", "datasets", multiple=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A test set (.h5) to score against, registered under its file stem (repeatable).")
@click.option("--protocol", "protocols", multiple=True, default=("synthetic",), show_default=True,
              help="Protocol of each --dataset (one for all, or one per --dataset).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for the SQLite database (default), uploads/ and results/.")
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Scoring processes.")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=512.0, show_default=True)
@click.option("--max-unzipped-mb", type=click.FloatRange(0, min_open=True), default=2048.0, show_default=True,
              help="Bytes a zip upload may unpack to (counted while unpacking).")
@click.option("--daily-limit", type=click.IntRange(0), default=5, show_default=True,
              help="Submissions per team per UTC day (a team's own limit overrides it).")
@click.option("--lease-s", type=click.FloatRange(1), default=300.0, show_default=True,
              help="A job whose worker stops renewing its lease this long is scored again.")
@click.option("--job-delay", type=float, default=0.0, hidden=True, help="Tests: seconds each job waits.")
def serve_command(datasets, protocols, data_dir, db, host, port, workers, max_upload_mb, max_unzipped_mb,
                  daily_limit, lease_s, job_delay) -> None:
    """Run the scoring service: upload, validate, score, leaderboard (see docs/serve.md)."""
    from facebench.serve.app import ServeConfig
    from facebench.serve.db import make_engine, upgrade
    from facebench.serve.intake import IntakeLimits
    from facebench.serve.runner import serve
    from facebench.serve.tokens import add_test_set

    if len(protocols) not in (1, len(datasets)) and datasets:
        raise click.UsageError("give one --protocol for all datasets or one per --dataset")
    url = _db_url(db, data_dir)
    upgrade(url)
    engine = make_engine(url)
    for i, path in enumerate(datasets):
        protocol = protocols[i] if len(protocols) > 1 else protocols[0]
        added = add_test_set(engine, path.stem, path, protocol)
        click.echo(f"test set {path.stem}: {path} under {protocol} ({'added' if added else 'updated'})")
    engine.dispose()
    limits = IntakeLimits(max_upload_bytes=int(max_upload_mb * 1024**2),
                          max_unzipped_bytes=int(max_unzipped_mb * 1024**2), daily_limit=daily_limit)
    config = ServeConfig(db_url=url, data_dir=data_dir.resolve(), limits=limits)
    serve(config, host=host, port=port, workers=workers, lease_s=lease_s, job_delay_s=job_delay,
          log=lambda line: click.echo(line, err=False))


@click.group("serve-admin", cls=FacebenchGroup)
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The service's data folder.")
@click.option("--db", default=None, help=_DB_HELP)
@click.pass_context
def serve_admin(ctx, data_dir, db) -> None:
    """Administer the scoring service: teams, tokens, test sets, database upgrades."""
    from facebench.serve.db import make_engine, upgrade

    url = _db_url(db, data_dir)
    upgrade(url)
    ctx.obj = make_engine(url)
    ctx.call_on_close(ctx.obj.dispose)


@serve_admin.command("add-team")
@click.argument("name")
@click.option("--daily-limit", type=click.IntRange(0), default=None, help="This team's submissions per UTC day.")
@click.pass_obj
def add_team_command(engine, name, daily_limit) -> None:
    """Create team NAME and print its API token (shown only now)."""
    from facebench.serve.tokens import add_team

    click.echo(add_team(engine, name, daily_limit=daily_limit))


@serve_admin.command("rotate-token")
@click.argument("name")
@click.pass_obj
def rotate_token_command(engine, name) -> None:
    """Revoke every token of team NAME and print a new one."""
    from facebench.serve.tokens import rotate_token

    click.echo(rotate_token(engine, name))


@serve_admin.command("teams")
@click.pass_obj
def teams_command(engine) -> None:
    """List the teams."""
    from facebench.serve.tokens import list_teams

    for team in list_teams(engine):
        limit = "default" if team["daily_limit"] is None else team["daily_limit"]
        click.echo(f"{team['name']:<24} live tokens {team['live_tokens']}  daily limit {limit}  since {team['created']}")


@serve_admin.command("add-test-set")
@click.argument("name")
@click.option("--dataset", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True)
@click.option("--protocol", required=True)
@click.pass_obj
def add_test_set_command(engine, name, dataset, protocol) -> None:
    """Register test set NAME (or change its file/protocol); no restart needed."""
    from facebench.serve.tokens import add_test_set

    added = add_test_set(engine, name, dataset, protocol)
    click.echo(f"test set {name}: {dataset} under {protocol} ({'added' if added else 'updated'})")
