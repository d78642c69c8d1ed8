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

__all__ = ["correctives_command", "corrective_spaces_command", "reflectance_command", "ablation_command",
           "tewari2018_command"]


def _common(function):
    """The options every evaluation takes."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder."),
        click.option("--standard", is_flag=True,
                     help="The standard mode: out-of-span world, 500 training / 200 test images, 3 seeds, training "
                          "to the plateau rule, resumable (rerun the same command to continue); shares OUT with the "
                          "other experiments and 'reproduce tewari2018 --standard' (baselines/tewari2018.md)."),
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


#: Options the standard mode takes (as overrides of its budget): option -> STANDARD key.
_STANDARD_OVERRIDES = {"train_n": "train", "test_n": "test", "size": "size", "batch": "batch",
                       "pretrain_iters": "pretrain_max", "finetune_iters": "finetune_max", "seed": "seed"}
_NOT_STANDARD = ("data", "panels", "lr_scale", "optimizer", "corrective_weight_lr_mult")


def _standard_settings(options: dict, counts=None):
    """The :class:`StandardSettings` of ``--standard`` and the options given (refusing the ones it
    does not take)."""
    from facebench.baselines.tewari2018.standard import STANDARD, StandardSettings

    ctx = click.get_current_context()
    values = dict(STANDARD)
    for name in _NOT_STANDARD:
        if options.get(name) is not None:
            raise FacebenchError(f"--{name.replace('_', '-')} does not apply to --standard (its settings are fixed)")
    if options.get("weight"):
        raise FacebenchError("--weight does not apply to --standard (its settings are fixed)")
    if ctx.get_parameter_source("quick") == click.core.ParameterSource.COMMANDLINE:
        raise FacebenchError("give --standard or --quick/--full, not both")
    for option, key in _STANDARD_OVERRIDES.items():
        if options.get(option) is not None and ctx.get_parameter_source(option) == click.core.ParameterSource.COMMANDLINE:
            value = int(options[option])
            if value < (0 if option == "seed" else 1):
                raise FacebenchError(f"--{option.replace('_n', '').replace('_', '-')} must be >= 1, got {value}")
            values[key] = value
    if ctx.get_parameter_source("seeds") == click.core.ParameterSource.COMMANDLINE:
        if options["seeds"] < 1:
            raise FacebenchError(f"--seeds must be >= 1, got {options['seeds']}")
        values["seeds"] = int(options["seeds"])
    if counts is not None:
        values["counts"] = sorted(set(int(c) for c in counts))
    return StandardSettings(out=options["out"], values=values, threads=options.get("threads"),
                            device=options.get("device", "cpu"))


def _run_standard(options: dict, experiments, counts=None) -> None:
    from facebench.baselines.tewari2018.standard import run_standard

    progress = _Progress()
    try:
        files = run_standard(_standard_settings(options, counts), experiments, overwrite=options["overwrite"],
                             schedule=len(experiments) == 4, on_stage=progress.stage, on_step=progress.step)
    finally:
        progress.close()
    for key, path in files.items():
        if key.replace("_", "-") in experiments or key in ("comparisons",):
            import pandas as pd

            table = pd.read_csv(path)
            shown = [c for c in table.columns if not c.endswith(("_lo", "_hi"))][:12]
            click.echo(f"{path}:")
            click.echo(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo("files: " + ", ".join(str(p) for p in files.values()))


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

    if options["standard"]:
        return _run_standard(options, ("correctives",), _int_list(counts))
    result = _run(run_correctives, options, counts=_int_list(counts))
    _echo_table(result, _COLUMNS)


@click.command("corrective-spaces")
@_common
@click.option("--kinds", default="affine,relu1,relu2", show_default=True, help="Corrective spaces to compare.")
def corrective_spaces_command(kinds, **options) -> None:
    """Tewari et al. 2018, supplement Figs. 2-3: linear vs one vs two non-linearities."""
    from facebench.baselines.tewari2018.evaluations import run_corrective_spaces

    if options["standard"]:
        if kinds != "affine,relu1,relu2":
            raise FacebenchError("--kinds does not apply to --standard (affine, relu1, relu2)")
        return _run_standard(options, ("corrective-spaces",))
    result = _run(run_corrective_spaces, options, kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    _echo_table(result, _COLUMNS)


@click.command("reflectance")
@_common
@click.option("--base-reflectance", type=int, default=40, show_default=True,
              help="Reflectance modes of the base level (the test images hold all 80).")
def reflectance_command(base_reflectance, **options) -> None:
    """Synthetic reflectance test: base level with 40 modes, final level must learn the rest (paper: 0.072)."""
    from facebench.baselines.tewari2018.evaluations import run_reflectance

    if options["standard"]:
        return _run_standard(options, ("reflectance",))
    result = _run(run_reflectance, options, base_reflectance=base_reflectance)
    _echo_table(result, ["level", "description", "reflectance_error", "median", "std", "n_images", "paper"])


@click.command("ablation")
@_common
def ablation_command(**options) -> None:
    """Tewari et al. 2018, supplement Figs. 5-7: without the shape regularizers / reflectance priors vs full."""
    from facebench.baselines.tewari2018.evaluations import run_ablation

    if options["standard"]:
        return _run_standard(options, ("ablation",))
    result = _run(run_ablation, options)
    _echo_table(result, _COLUMNS)


@click.command("tewari2018")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (resumable).")
@click.option("--standard", is_flag=True, required=True,
              help="The standard mode of all four evaluations, sharing data and trainings (required: the only mode).")
@click.option("--train", "train_n", type=int, default=None, help="Training images (500).")
@click.option("--test", "test_n", type=int, default=None, help="Test images (200).")
@click.option("--size", type=int, default=None, help="Image size in px (64).")
@click.option("--batch", type=int, default=None, help="Images per iteration (5).")
@click.option("--pretrain-iters", type=int, default=None, help="Stage-1 iteration cap (600).")
@click.option("--finetune-iters", type=int, default=None, help="Stage-2 iteration cap per run (100).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds SEED ... SEED+N-1.")
@threads_option(expose=True)
@click.option("--overwrite", is_flag=True, help="Reuse a folder made with other settings.")
def tewari2018_command(standard, **options) -> None:
    """Tewari et al. 2018: correctives, corrective spaces, reflectance and ablation, standard mode, in one run."""
    if not standard:
        raise FacebenchError("give --standard")
    options.update({"quick": True, "weight": (), "data": None, "panels": None, "lr_scale": None, "optimizer": None,
                    "corrective_weight_lr_mult": None})
    from facebench.baselines.tewari2018.standard import EXPERIMENTS

    _run_standard(options, EXPERIMENTS)
