"""``facebench reproduce correctives | corrective-spaces | reflectance | ablation``: the evaluations of
Tewari et al. 2018's supplement (:mod:`facebench.baselines.tewari2018.evaluations`).

Plain click commands, added to the ``reproduce`` group by :mod:`facebench.cli` (whose group turns
FacebenchError / ValueError / OSError into one ``error:`` line and exit 2)."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.seeds_option import echo_table, seeds_option
from facebench.commands.threads_option import threads_option
from facebench.errors import FacebenchError

__all__ = ["correctives_command", "corrective_spaces_command", "reflectance_command", "ablation_command"]


def _common(function):
    """The options every evaluation takes."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder."),
        click.option("--quick/--full", default=True, show_default=True,
                     help="quick: 64 px, 300 training images, 300 + 150 iterations, Adam (CPU minutes); full: GPU "
                          "scale (128 px, 20,000 images, 1,000 test images, 20k + 20k iterations, AdaDelta)."),
        click.option("--data", type=click.Path(path_type=Path), default=None,
                     help="Folder with train.h5 and test.h5 to reuse (e.g. OUT/data of an earlier run)."),
        click.option("--train", "train_n", type=int, default=None, help="Training images to generate."),
        click.option("--test", "test_n", type=int, default=None, help="Held-out test images to generate."),
        click.option("--size", type=int, default=None, help="Image size in px."),
        click.option("--pretrain-iters", type=int, default=None, help="Stage-1 iterations (shared by all variants)."),
        click.option("--finetune-iters", type=int, default=None, help="Stage-2 iterations per variant."),
        click.option("--batch", type=int, default=None, help="Images per iteration (5)."),
        click.option("--panels", type=int, default=None, help="Test images shown in panels.png."),
        click.option("--weight", multiple=True, metavar="KEY=VALUE", help="Loss weight override for every run."),
        click.option("--lr-scale", type=float, default=None,
                     help="Multiplier of the paper's rates (quick: 0.1 with Adam; full: the training default with AdaDelta)."),
        click.option("--optimizer", type=click.Choice(["adam", "adadelta"]), default=None,
                     help="quick: adam (CPU minutes); full: adadelta (the paper's)."),
        click.option("--corrective-weight-lr-mult", type=float, default=None,
                     help="Rate multiplier of the corrective spaces' matrices (quick: 0.1 with Adam; full: 1)."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--seed", type=int, default=0, show_default=True),
        seeds_option,
        threads_option(expose=True),
        click.option("--overwrite", is_flag=True, help="Reuse a non-empty --out."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _settings(options: dict):
    from facebench.baselines.tewari2018.evaluations import EvalSettings
    from facebench.baselines.tewari2018.training import parse_weight_overrides

    return EvalSettings(out=options["out"], quick=options["quick"], data=options["data"], train=options["train_n"],
                        test=options["test_n"], size=options["size"], pretrain_iters=options["pretrain_iters"],
                        finetune_iters=options["finetune_iters"], batch=options["batch"], panels=options["panels"],
                        weights=parse_weight_overrides(options["weight"]), lr_scale=options["lr_scale"],
                        optimizer=options["optimizer"],
                        corrective_weight_lr_mult=options["corrective_weight_lr_mult"],
                        device=options["device"], seed=options["seed"], threads=options["threads"],
                        overwrite=options["overwrite"], seeds=options["seeds"])


class _Progress:
    """Stage lines and one tqdm bar per training."""

    def __init__(self):
        self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def stage(self, message: str) -> None:
        self.close()
        click.echo(message)

    def step(self, stage: str, done: int, total: int, value: float) -> None:
        from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs

        if self.bar is None or done == 1:
            self.close()
            self.bar = tqdm(total=total, unit="it", disable=None, leave=False)
        self.bar.set_description(f"  {stage}", refresh=False)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{value:.4g}", refresh=False)


def _run(function, options: dict, **kwargs):
    progress = _Progress()
    try:
        result = function(_settings(options), on_stage=progress.stage, on_step=progress.step, **kwargs)
    finally:
        progress.close()
    return result


def _echo_table(result, columns) -> None:
    echo_table(result.table, [*columns, "n_seeds", "verdict"], digits=4)
    click.echo(f"done in {result.seconds:.0f} s: " + ", ".join(str(p) for p in result.files.values()))


_COLUMNS = ["variant", "photo_base", "photo_final", "refl_final", "land_px", "shape_mm", "offset_mm", "refl_offset",
            "train_seconds"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise FacebenchError(f"--counts expects integers separated by commas, got {text!r}") from None
    if not values:
        raise FacebenchError("--counts is empty")
    return values


@click.command("correctives")
@_common
@click.option("--counts", default="0,100,250,500", show_default=True, help="Numbers of correctives C to compare.")
def correctives_command(counts, **options) -> None:
    """Tewari et al. 2018, supplement Fig. 4: held-out photometric error for C = 0, 100, 250, 500."""
    from facebench.baselines.tewari2018.evaluations import run_correctives

    result = _run(run_correctives, options, counts=_int_list(counts))
    _echo_table(result, _COLUMNS)


@click.command("corrective-spaces")
@_common
@click.option("--kinds", default="affine,relu1,relu2", show_default=True, help="Corrective spaces to compare.")
def corrective_spaces_command(kinds, **options) -> None:
    """Tewari et al. 2018, supplement Figs. 2-3: linear vs one vs two non-linearities."""
    from facebench.baselines.tewari2018.evaluations import run_corrective_spaces

    result = _run(run_corrective_spaces, options, kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    _echo_table(result, _COLUMNS)


@click.command("reflectance")
@_common
@click.option("--base-reflectance", type=int, default=40, show_default=True,
              help="Reflectance modes of the base level (the test images hold all 80).")
def reflectance_command(base_reflectance, **options) -> None:
    """Synthetic reflectance test: base level with 40 modes, final level must learn the rest (paper: 0.072)."""
    from facebench.baselines.tewari2018.evaluations import run_reflectance

    result = _run(run_reflectance, options, base_reflectance=base_reflectance)
    _echo_table(result, ["level", "description", "reflectance_error", "median", "std", "n_images", "paper"])


@click.command("ablation")
@_common
def ablation_command(**options) -> None:
    """Tewari et al. 2018, supplement Figs. 5-7: without the shape regularizers / reflectance priors vs full."""
    from facebench.baselines.tewari2018.evaluations import run_ablation

    result = _run(run_ablation, options)
    _echo_table(result, _COLUMNS)
