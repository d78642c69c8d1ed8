"""``facebench demo``: the main job on the built-in default (no download, no dataset)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from facebench.commands.threads_option import threads_option


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("out/demo"),
              show_default=True, help="Folder for the dataset, submissions, results and leaderboard.")
@click.option("--n", "count", type=click.IntRange(4, 100000), default=48, show_default=True,
              help="Test samples to generate.")
@click.option("--size", type=click.IntRange(32, 2048), default=224, show_default=True, help="Image size (px).")
@click.option("--seed", type=int, default=0, show_default=True)
@threads_option()
def demo_command(out, count, size, seed) -> None:
    """Generate a synthetic test set, write three baseline submissions, score them under the
    synthetic and synthetic-scan protocols, and build the leaderboard (CSV, plots, HTML)."""
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs
    from facebench.demo import run_demo

    bar = None

    def step(name: str) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
        click.echo(f"- {name}")
        bar = tqdm(unit="step", disable=None, leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    summary = run_demo(out, n=count, size=size, seed=seed, step=step, progress=progress)
    if bar is not None:
        bar.close()
    width = max([len("method"), *(len(row["method"]) for row in summary.headline)]) + 2
    click.echo(f"\n{'method':<{width}}{'protocol':<16}{'shape mm':>10}{'rot deg':>9}{'trans cm':>10}{'reproj px':>11}")

    def cell(value, width: int) -> str:
        return f"{value:>{width}.3f}" if isinstance(value, float) and math.isfinite(value) else f"{'-':>{width}}"

    for row in summary.headline:
        click.echo(f"{row['method']:<{width}}{row['protocol']:<16}{cell(row.get('shape_mm_mean'), 10)}"
                   f"{cell(row.get('rotation_deg_mean'), 9)}{cell(row.get('translation_cm_mean'), 10)}"
                   f"{cell(row.get('reprojection_px_mean'), 11)}")
    t = summary.timings_s
    click.echo(f"\nleaderboard: {summary.leaderboard_csv}")
    if summary.index_html is not None:
        click.echo(f"open in a browser: {summary.index_html}")
    click.echo(f"plots: {len(summary.plots)} in {summary.leaderboard_csv.parent / 'plots'}")
    click.echo(f"done in {t['total']:.0f} s (generate {t['generate']:.0f}, submissions {t['submissions']:.0f}, "
               f"score {t['score']:.0f}, leaderboard {t['leaderboard']:.0f})")
