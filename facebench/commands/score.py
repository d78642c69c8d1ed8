"""``facebench score``: score a submission against a dataset under a protocol."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import EXIT_INVALID_INPUT
from facebench.commands.threads_option import threads_option


@click.command("score")
@click.option("--dataset", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Dataset file (.h5).")
@click.option("--submission", type=click.Path(path_type=Path, exists=True), required=True,
              help="Submission: .h5, a folder with manifest.json, or a .zip of either.")
@click.option("--protocol", "protocol_name", default="synthetic", show_default=True,
              help="Protocol preset (synthetic, synthetic-scan, micc-ramon2019, micc-95mm, facewarehouse-ramon2019, "
                   "now, now-metrical), or NAME@VERSION for an earlier version (e.g. micc-95mm@1.0).")
@click.option("--method", default=None, help="Method name (default: the submission's 'method' attribute).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Results folder (per_sample.csv, summary.json, per_vertex.npz).")
@click.option("--leaderboard", "board", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also add/replace this result's row in BOARD/leaderboard.csv (locked, atomic).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Score in this many processes on this machine, one thread each, under any protocol "
                   "(scan protocols included); same results, byte for byte.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Score on the workers of this dask.distributed scheduler (tcp://host:8786); they must see "
                   "the same dataset and submission paths.")
@threads_option()
@click.option("--overwrite", is_flag=True, help="Replace the results in an existing non-empty --out.")
@click.pass_context
def score_command(ctx, dataset, submission, protocol_name, method, out, board, workers, dask_address,
                  overwrite) -> None:
    """Score SUBMISSION against DATASET; exit 0 scored, 2 invalid submission, 1 internal error."""
    if out.is_dir() and any(out.iterdir()) and not overwrite:  # like predict and generate: never silently
        from facebench.errors import FacebenchError

        raise FacebenchError(f"{out}: results folder exists and is not empty; pass --overwrite to replace it")
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results
    from facebench.benchmark.validation_report import InvalidSubmission
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs

    protocol = get_protocol(protocol_name)
    with tqdm(desc=f"scoring ({protocol.id})", unit="sample", disable=None, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = score(dataset, submission, protocol, method=method, progress=progress, workers=workers,
                           dask_address=dask_address)
        except InvalidSubmission as error:
            bar.close()
            click.echo(f"error: {error.report.refusal_line()}; not scored", err=True)  # first line: why
            click.echo(error.report.to_text(), err=True)
            ctx.exit(EXIT_INVALID_INPUT)
    paths = write_results(result, out)
    summary = result.summary
    click.echo(f"{summary['method']} on {summary['dataset']['name']} under {summary['protocol_id']}: "
               f"{summary['n_scored']}/{summary['n_expected']} scored (completion {summary['completion']:.1%})")
    click.echo(f"  {'metric':<16}{'mean':>10}{'median':>10}{'95% CI of mean':>24}")
    for key, d in summary["metrics"].items():
        if d["n"]:
            ci = f"[{d['ci95_low']:.3f}, {d['ci95_high']:.3f}]"
            click.echo(f"  {key:<16}{d['mean']:>10.3f}{d['median']:>10.3f}{ci:>24}")
    if summary.get("n_failed"):
        click.echo(f"  {summary['n_failed']} predictions could not be aligned (see 'error' in per_sample.csv)")
    pooled = summary.get("pooled") or {}
    if pooled.get("n_distances"):
        click.echo(f"  pooled (NoW): median {pooled['median_mm']:.3f}, mean {pooled['mean_mm']:.3f}, "
                   f"std {pooled['std_mm']:.3f} mm over {pooled['n_distances']} distances of {pooled['n_sets']} scans")
    if summary.get("n_warnings"):
        click.echo(f"  warning: {summary['n_warnings']} predictions have a suspect landmark fit (a reflection: left and "
                   f"right swapped, or an implausible residual); see 'warning' in per_sample.csv", err=True)
    click.echo(f"results: {paths['summary'].parent}")
    if board is not None:
        from facebench.leaderboard.results import read_results
        from facebench.leaderboard.table import upsert_rows

        upsert_rows(board, [read_results(out)])
        click.echo(f"leaderboard row updated: {board / 'leaderboard.csv'}")
