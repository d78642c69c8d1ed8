"""``facebench hpo``: Bayesian search (optuna TPE) of the learning rate and weights of the multiterm
losses (coarse, xqt) of Ramon et al. 2019; see :mod:`facebench.baselines.ramon2019.hpo`."""

from __future__ import annotations

import math
from pathlib import Path

import click

from facebench.commands.threads_option import threads_option


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else "-"


@click.command("hpo")
@click.option("--loss", required=True, help="Multiterm loss to search: coarse (alpha) or xqt (beta, gamma).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Training set (.h5).")
@click.option("--val", type=click.Path(path_type=Path), required=True, help="Validation set (.h5): the objective.")
@click.option("--trials", type=int, default=20, show_default=True, help="Optuna trials.")
@click.option("--epochs", type=int, default=5, show_default=True, help="Training epochs per trial.")
@click.option("--encoder", default="small", show_default=True, help="small or vgg16.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the TPE sampler and every trial.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@threads_option(expose=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder: trials.csv, best.json, trial_NNN/.")
@click.option("--overwrite", is_flag=True, help="Reuse a non-empty --out.")
def hpo_command(loss, dataset, val, trials, epochs, encoder, batch, seed, device, threads, out, overwrite) -> None:
    """Search lr in (1e-5, 1e-3) and the loss weights in 0.1x..10x of the scale-compensating values;
    objective: validation shape error (mm) at each trial's best epoch."""
    import torch
    from tqdm import tqdm

    from facebench.baselines.ramon2019.hpo import run_hpo
    from facebench.errors import FacebenchError

    if threads < 1:
        raise FacebenchError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    bar = tqdm(total=trials, desc=f"hpo {loss}", unit="trial", disable=None)

    def on_trial(row: dict) -> None:
        bar.update(1)
        weights = "  ".join(f"{k} {_fmt(row[k])}" for k in ("alpha", "beta", "gamma") if row.get(k) is not None)
        tqdm.write(f"trial {row['trial']:3d}: lr {_fmt(row['lr'])}  {weights}  -> val shape "
                   f"{_fmt(row.get('objective_shape_mm'))} mm, reprojection {_fmt(row.get('val_reprojection_px'))} px "
                   f"[{row['state']}, {_fmt(row['seconds'])} s]")

    try:
        result = run_hpo(loss, dataset, val, out, trials=trials, epochs=epochs, encoder=encoder, batch=batch,
                         seed=seed, device=device, overwrite=overwrite, on_trial=on_trial)
    finally:
        bar.close()
    params = "  ".join(f"{k} {_fmt(v)}" for k, v in result.best_params.items())
    click.echo(f"best trial {result.best['trial']}: {params}  val shape {_fmt(result.best['objective_shape_mm'])} mm "
               f"({len(result.trials)} trials in {result.seconds:.0f} s); table: {out / 'trials.csv'}")
