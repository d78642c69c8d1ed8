"""``facebench reproduce ...``: reproduce papers' experiments — ``table2`` (Ramon et al. 2019 Table 2,
Fig. 5, Fig. 6; :mod:`facebench.baselines.ramon2019.table2`), ``table3`` (MICC / FaceWarehouse;
:mod:`facebench.commands.reproduce_table3`), and Tewari et al. 2018's supplement: ``correctives``,
``corrective-spaces``, ``reflectance``, ``ablation`` (:mod:`facebench.commands.reproduce_tewari2018`)."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import FacebenchGroup
from facebench.commands.seeds_option import echo_table, seeds_option
from facebench.commands.threads_option import threads_option
from facebench.errors import FacebenchError


@click.group(cls=FacebenchGroup)
def reproduce() -> None:
    """Reproduce the papers' tables and figures."""


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise FacebenchError(f"{option} expects integers separated by commas, got {text!r}") from None
    if not values:
        raise FacebenchError(f"{option} is empty")
    return values


@reproduce.command("table2")
@click.option("--quick", is_flag=True, help="Small encoder, 64 px, 2,000 training images, 5 epochs, "
                                           "scale-compensating weights (no search): under 15 min on 2 CPU cores.")
@click.option("--standard", is_flag=True, help="The paper's setting on CPU (neutral faces, ramon2019 world, "
                                              "symmetrized data; unit, scale and searched weights; plateau stopping; "
                                              "3 seeds), resumable: rerun the same command to continue "
                                              "(baselines/ramon2019.md).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="--standard: independent trainings in this many processes (one thread each).")
@click.option("--camera", type=click.Choice(["variable", "fixed"]), default="variable", show_default=True,
              help="--standard: the ramon2019 preset's variable camera, or a fixed one (the depth control).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder with *_train.h5, *_val.h5, *_test.h5 to use instead of generating them.")
@click.option("--train", "train_n", type=int, default=None, help="Training images to generate (quick 2000, full 20349).")
@click.option("--size", type=int, default=None, help="Image size in px (quick 64, full 224).")
@click.option("--epochs", type=int, default=None, help="Epochs per training (quick 5, full 20).")
@click.option("--encoder", default=None, help="small or vgg16 (quick small, full vgg16).")
@click.option("--batch", type=int, default=None, help="Batch size (32).")
@click.option("--lr", type=float, default=None, help="Learning rate of the non-searched trainings (quick 3e-4, full 1e-4).")
@click.option("--trials", type=int, default=None, help="Bayesian-search trials per multiterm loss (full 20).")
@click.option("--hpo-epochs", type=int, default=None, help="Epochs per search trial (full 5).")
@click.option("--views", default="1,2,4,8", show_default=True, help="Fig. 6: MRL view counts V.")
@click.option("--losses", default="coarse,xqt,gal,srl,mrl", show_default=True, help="Rows of Table 2.")
@click.option("--seed", type=int, default=0, show_default=True)
@seeds_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@threads_option(expose=True)
@click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="Score each loss after its last epoch, or at its epoch of lowest validation shape error.")
@click.option("--overwrite", is_flag=True, help="Reuse a non-empty --out.")
@click.pass_context
def table2_command(ctx, quick, standard, workers, camera, out, data, train_n, size, epochs, encoder, batch, lr, trials,
                   hpo_epochs, views, losses, seed, seeds, device, threads, checkpoint, overwrite) -> None:
    """Ramon et al. 2019: train the five losses, score them; write table2.csv, Fig. 5 plots, fig6.csv/png."""
    if standard:
        _standard(ctx, quick, workers, camera, out, data, train_n, size, epochs, encoder, batch, lr, trials, hpo_epochs,
                  views, seed, seeds, device, overwrite)
        return
    if workers != 1 or camera != "variable":
        raise FacebenchError("--workers and --camera apply to --standard")
    from facebench.baselines.ramon2019.table2 import ReproduceSettings, reproduce_table2
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs

    settings = ReproduceSettings(out=out, quick=quick, data=data, train=train_n, size=size, epochs=epochs,
                                 encoder=encoder, batch=batch, lr=lr, trials=trials, hpo_epochs=hpo_epochs,
                                 views=_int_list(views, "--views"),
                                 losses=tuple(v.strip() for v in losses.split(",") if v.strip()),
                                 seed=seed, device=device, threads=threads, checkpoint=checkpoint,
                                 overwrite=overwrite, seeds=seeds)
    bars: dict[str, tqdm] = {}

    def close() -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()

    def on_stage(message: str) -> None:
        close()
        click.echo(message)

    def on_step(epoch: int, done: int, total: int, value: float) -> None:
        if done == 1:
            close()
            bars["train"] = tqdm(total=total, desc=f"  epoch {epoch}", unit="batch", disable=None, leave=False)
        if "train" in bars:
            bars["train"].update(1)
            bars["train"].set_postfix(loss=f"{value:.4g}", refresh=False)

    def on_rows(count: int) -> None:
        if "data" not in bars:
            bars["data"] = tqdm(desc="  rendering", unit="img", disable=None, leave=False)
        bars["data"].update(count)

    try:
        result = reproduce_table2(settings, on_stage=on_stage, on_step=on_step, on_rows=on_rows)
    finally:
        close()
    echo_table(result.table2, ["loss", "reprojection_px", "shape_mm", "translation_cm", "rotation_deg",
                               "time_per_epoch_s", "n_seeds", "verdict"], digits=3)
    echo_table(result.fig6, ["views", "shape_mm", "reprojection_px"], digits=3)


def _standard(ctx, quick, workers, camera, out, data, train_n, size, epochs, encoder, batch, lr, trials, hpo_epochs, views,
              seed, seeds, device, overwrite) -> None:
    """``--standard`` (facebench.baselines.ramon2019.standard)."""
    from click.core import ParameterSource

    from facebench.baselines.ramon2019.standard import StandardSettings, reproduce_standard

    if quick:
        raise FacebenchError("give --quick or --standard, not both")
    for name, value in (("--data", data), ("--overwrite", overwrite or None)):
        if value is not None:
            raise FacebenchError(f"{name} does not apply to --standard (it generates its data and resumes)")
    if device != "cpu":
        raise FacebenchError("--standard runs on CPU; the full mode (no --quick/--standard) is for a GPU")
    given = {"train": train_n, "size": size, "max_epochs": epochs, "encoder": encoder, "batch": batch, "lr": lr,
             "trials": trials, "search_epochs": hpo_epochs}
    options = {k: v for k, v in given.items() if v is not None}
    if ctx.get_parameter_source("seeds") != ParameterSource.DEFAULT:
        options["seeds"] = seeds
    settings = StandardSettings(out=out, seed=seed, workers=workers, views=_int_list(views, "--views"), camera=camera,
                                **options)
    result = reproduce_standard(settings, on_stage=click.echo)
    echo_table(result.table2, ["loss", "shape_mm_mean", "shape_mm_sd", "shape_mm_ci_low", "shape_mm_ci_high",
                               "reprojection_px_mean", "reprojection_px_sd", "epochs_mean", "verdict"], digits=3)
    echo_table(result.fig6, ["views", "shape_mm_mean", "shape_mm_sd", "reprojection_px_mean",
                             "reprojection_px_sd"], digits=3)


def _register_experiments() -> None:
    """Experiments living in their own modules (one concept per module)."""
    from facebench.commands.reproduce_table3 import table3_command
    from facebench.commands.reproduce_tewari2018 import (
        ablation_command,
        corrective_spaces_command,
        correctives_command,
        reflectance_command,
        tewari2018_command,
    )

    for command in (table3_command, correctives_command, corrective_spaces_command, reflectance_command,
                    ablation_command, tewari2018_command):
        reproduce.add_command(command)


_register_experiments()
