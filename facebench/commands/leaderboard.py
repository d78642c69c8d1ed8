"""``facebench leaderboard ...``: build the board (CSV, plots, HTML) and compare two methods."""

from __future__ import annotations

import json
from pathlib import Path

import click

from facebench.commands.base import FacebenchGroup


def _printable(text: object) -> str:
    """``text`` without control characters (method names come from strangers: no terminal escapes)."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


@click.group(cls=FacebenchGroup)
def leaderboard() -> None:
    """Leaderboard: build the CSV, plots and index.html; paired comparisons."""


@leaderboard.command("build")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Board folder: leaderboard.csv, plots/, index.html.")
@click.option("--fresh", is_flag=True,
              help="Rebuild leaderboard.csv from the given results only (default: add/replace their rows).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the plots.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Seconds to wait for the board's lock.")
def leaderboard_build(results, out_dir, fresh, plots, timeout_s) -> None:
    """Build the board from RESULTS folders (or folders containing them)."""
    from facebench.leaderboard import build_leaderboard
    from facebench.leaderboard.results import metric_label

    board = build_leaderboard(results, out_dir, fresh=fresh, plots=plots, timeout_s=timeout_s)
    frame = board.frame
    for (protocol, version, dataset), rows in frame.groupby(["protocol", "protocol_version", "dataset"], sort=False):
        click.echo(f"{_printable(protocol)}@{_printable(version)} on {_printable(dataset)} — {metric_label('shape_mm')}, mean [95% CI]:")
        for rank, (_, row) in enumerate(rows.iterrows(), start=1):
            mean = row["shape_mm_mean"]
            score = "-" if mean != mean else f"{mean:.4g} [{row['shape_mm_ci95_low']:.4g}, {row['shape_mm_ci95_high']:.4g}]"
            click.echo(f"  {rank:2d}. {_printable(row['method']):<28} {score:<28} completion {row['completion']:.1%}")
    for warning in board.warnings:
        click.echo(f"warning: {_printable(warning)}", err=True)
    click.echo(f"wrote {board.csv} ({len(frame)} rows), {len(board.plots)} plots in {out_dir / 'plots'}"
               + (f", {board.html}" if board.html else ""))


@leaderboard.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--metric", default="shape_mm", show_default=True, help="Metric key (shape_mm, rotation_deg, ...).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--resamples", type=click.IntRange(100), default=10000, show_default=True,
              help="Bootstrap resamples of the mean difference.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def leaderboard_compare(a, b, metric, alpha, resamples, seed, as_json) -> None:
    """Paired test of results folders A and B (same protocol and dataset) over the ids scored in both."""
    from facebench.leaderboard.compare import compare_results

    comparison = compare_results(a, b, metric, alpha=alpha, resamples=resamples, seed=seed)
    if as_json:
        click.echo(json.dumps(comparison.to_dict(), indent=2))
        return
    for line in comparison.lines():
        click.echo(_printable(line))
