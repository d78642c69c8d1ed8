"""``facebench submission ...``: validate a submission, write example submissions."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import EXIT_INVALID_INPUT, FacebenchGroup
from facebench.safe_hdf5 import open_hdf5


@click.group(cls=FacebenchGroup)
def submission() -> None:
    """Submissions: validate them against a dataset, write example ones."""


@submission.command("validate")
@click.option("--dataset", "dataset_path", required=True, type=click.Path(path_type=Path),
              help="The dataset file (.h5) the predictions are for.")
@click.option("--submission", "submission_path", required=True, type=click.Path(path_type=Path),
              help="The submission: .h5, a folder with manifest.json, or a .zip of either.")
@click.option("--require-pose", is_flag=True, help="Poses (q, t) are required (pose/reprojection metrics).")
@click.option("--topology", type=click.Choice(["dataset", "any"]), default="dataset", show_default=True,
              help="'dataset': predictions on the dataset's vertices (corresponding-topology protocols); "
                   "'any': any mesh with landmarks (scan protocols).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (every id listed).")
@click.option("--max-ids", default=8, show_default=True, help="Ids shown per problem in the text report.")
@click.pass_context
def submission_validate(ctx, dataset_path, submission_path, require_pose, topology, as_json, max_ids) -> None:
    """Check a submission and print every problem; exit 0 when valid, 2 when not."""
    from facebench.benchmark.validation import validate_submission

    report = validate_submission(submission_path, dataset_path, require_pose=require_pose, topology=topology)
    click.echo(report.to_json() if as_json else report.to_text(max_ids=max_ids))
    if not report.ok:
        ctx.exit(EXIT_INVALID_INPUT)


@submission.command("template")
@click.option("--dataset", "dataset_path", required=True, type=click.Path(path_type=Path),
              help="The dataset file (.h5).")
@click.option("--kind", required=True, type=click.Choice(["gt", "mean", "noisy", "oracle"]),
              help="gt: the ground truth; mean: the mean shape at the true pose; noisy: ground truth + noise; "
                   "oracle: the least-squares fit of the ground truth in the model's span, at the true pose.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="The submission .h5 to write (a folder for scan datasets).")
@click.option("--noise-mm", default=1.0, show_default=True, help="noisy: vertex noise std per coordinate, mm.")
@click.option("--pose-noise-deg", default=2.0, show_default=True, help="noisy: rotation error of every sample, degrees.")
@click.option("--translation-noise-mm", default=0.0, show_default=True,
              help="noisy: translation noise std per coordinate, mm.")
@click.option("--seed", default=0, show_default=True, help="noisy: random seed.")
@click.option("--identity-dims", type=int, default=None,
              help="oracle: identity modes of the span (default: the dataset's predictor span, else all).")
@click.option("--expression-dims", type=int, default=None,
              help="oracle: expression modes of the span (0 for an identity-only regressor).")
def submission_template(dataset_path, kind, out_path, noise_mm, pose_noise_deg, translation_noise_mm, seed,
                        identity_dims, expression_dims) -> None:
    """Write an example submission (a golden fixture) for a dataset."""

    from facebench.benchmark.templates import METHODS, write_template

    path = write_template(dataset_path, kind, out_path, noise_mm=noise_mm, pose_noise_deg=pose_noise_deg,
                          translation_noise_mm=translation_noise_mm, seed=seed, identity_dims=identity_dims,
                          expression_dims=expression_dims)
    if path.is_dir():  # scan datasets: a folder of meshes with manifest.json
        meshes = sorted(path.glob("*.ply"))
        click.echo(f"wrote {path}/ ({len(meshes)} meshes + manifest.json, method {METHODS[kind]}, each scan placed "
                   "by a random similarity)")
        return
    with open_hdf5(path) as f:
        n, method = f["ids"].shape[0], f.attrs["method"]
        source = f.attrs.get("mean_source")
    extra = f", mean from {source}" if source else ""
    click.echo(f"wrote {path} ({n} samples, method {method}{extra})")
