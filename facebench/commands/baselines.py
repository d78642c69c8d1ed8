"""``facebench baselines ...``: reference methods that write submissions (no training needed)."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import FacebenchGroup
from facebench.commands.threads_option import threads_option
from facebench.safe_hdf5 import open_hdf5


@click.group(cls=FacebenchGroup)
def baselines() -> None:
    """Reference baselines: write submissions to score."""


@baselines.command("fit-landmarks")
@click.option("--dataset", "dataset_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="facebench dataset file (.h5) with landmarks_2d and K.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Submission to write (.h5).")
@click.option("--identity", "n_identity", type=click.IntRange(0), default=40, show_default=True,
              help="Identity modes to fit.")
@click.option("--expression", "n_expression", type=click.IntRange(0), default=20, show_default=True,
              help="Expression modes to fit.")
@click.option("--w-identity", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Prior weight of identity coefficients (≈ landmark noise in pixels).")
@click.option("--w-expression", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Prior weight of expression coefficients.")
@click.option("--contour-weight", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Weight of the jaw contour landmarks (iBUG 1-17); lower it for real detections.")
@click.option("--iterations", type=click.IntRange(1), default=50, show_default=True,
              help="Maximum Levenberg-Marquardt iterations.")
@click.option("--batch", "batch_size", type=click.IntRange(1), default=256, show_default=True,
              help="Samples fitted at once.")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1...).")
@threads_option(expose=True)
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="File of the dataset's face model when it is user-obtained (bfm2009, sfm...).")
def fit_landmarks_command(dataset_path, out_path, n_identity, n_expression, w_identity, w_expression,
                          contour_weight, iterations, batch_size, device, threads, model_path) -> None:
    """Fit the dataset's 3DMM to each sample's 68 2D landmarks; write an HDF5 submission."""
    import torch

    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs

    if threads:
        torch.set_num_threads(threads)
    from facebench.baselines.landmark_fit import fit_dataset

    with tqdm(desc="fitting", unit="sample", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        written = fit_dataset(
            dataset_path, out_path, n_identity=n_identity, n_expression=n_expression, batch_size=batch_size,
            device=device, model_path=model_path, progress=progress, w_identity=w_identity,
            w_expression=w_expression, contour_weight=contour_weight, iterations=iterations,
        )
    with open_hdf5(written) as f:
        n, seconds = int(f["ids"].shape[0]), float(f.attrs["seconds"])
        mean_px, failed = float(f.attrs["mean_reprojection_px"]), int(f.attrs["failed_samples"])
    note = f", {failed} samples with < 4 usable landmarks" if failed else ""
    click.echo(f"wrote {written}: {n} samples, mean landmark reprojection {mean_px:.3f} px, "
               f"{seconds:.1f} s ({n / max(seconds, 1e-9):.0f} samples/s){note}")
