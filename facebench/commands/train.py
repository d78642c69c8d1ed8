"""``facebench train regressor|multilevel`` and ``facebench predict``: train Ramon et al. 2019's
regressor with one of the five losses (``train regressor``) or the multi-level face model of
Tewari et al. 2018 (``train multilevel``), each subcommand with only its own options, and write a
submission from either kind of checkpoint (``predict`` reads the checkpoint's kind). Under
``torchrun`` (``torchrun --nproc_per_node N -m facebench train regressor ...``) the regressor trains
distributed (DDP); only rank 0 prints and writes.

The old spelling ``facebench train [--model regressor|multilevel] ...`` (no ``--model``: the
regressor) still works for one release: it runs the same subcommand and prints one deprecation line
to stderr (:class:`TrainGroup`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import click

from facebench.commands.base import FacebenchGroup
from facebench.commands.threads_option import threads_option
from facebench.errors import FacebenchError

#: ``--model`` values of the deprecated spelling -> subcommand.
MODEL_KINDS = ("regressor", "multilevel")


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


class TrainGroup(FacebenchGroup):
    """``facebench train``: one subcommand per model. Arguments that start with an option instead of
    a subcommand are the deprecated spelling ``train [--model KIND] OPTIONS`` (no ``--model``: the
    regressor): rewritten to ``train KIND OPTIONS``, with one deprecation line on stderr (rank 0
    only under torchrun). Remove after one release."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ctx.help_option_names and args[0] != "--":
            kind, rest = _legacy_model(args)
            if os.environ.get("RANK", "0") == "0":
                old = f"facebench train --model {kind}" if len(rest) < len(args) else "facebench train"
                click.echo(f"warning: '{old} ...' is deprecated and will be removed in the next release; "
                           f"use 'facebench train {kind} ...'", err=True)
            args = [kind, *rest]
        return super().parse_args(ctx, args)


def _legacy_model(args: list[str]) -> tuple[str, list[str]]:
    """``(KIND, args without --model KIND)`` of the deprecated spelling; KIND is ``regressor`` when
    ``--model`` is absent. click.BadParameter (exit 2) for an unknown or missing KIND."""
    kind, rest, i = "regressor", [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--model" or arg.startswith("--model="):
            if arg == "--model":
                if i + 1 >= len(args):
                    raise click.BadParameter("needs a value: regressor or multilevel", param_hint="'--model'")
                kind, i = args[i + 1], i + 2
            else:
                kind, i = arg.partition("=")[2], i + 1
            if kind not in MODEL_KINDS:
                raise click.BadParameter(f"{kind!r} is not one of {', '.join(map(repr, MODEL_KINDS))}",
                                         param_hint="'--model'")
            continue
        rest.append(arg)
        i += 1
    return kind, rest


@click.group("train", cls=TrainGroup)
def train_command() -> None:
    """Train a learned baseline: 'regressor' (Ramon et al. 2019) or 'multilevel' (Tewari et al. 2018).

    'facebench train --model KIND ...' (and 'facebench train ...' for the regressor) still work for
    one release, with a deprecation warning."""


# ---------------------------------------------------------------------------------------- regressor
@train_command.command("regressor", short_help="Ramon et al. 2019's regressor, one of five losses.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Training set (.h5).")
@click.option("--val", type=click.Path(path_type=Path), required=True,
              help="Validation set (.h5): metrics per epoch, best.pt by its shape error.")
@click.option("--loss", default="gal", show_default=True, help="coarse, xqt, gal, srl or mrl.")
@click.option("--alpha", type=float, default=None, help="Coarse: weight of the pose term.")
@click.option("--beta", type=float, default=None, help="XQT: weight of the quaternion term.")
@click.option("--gamma", type=float, default=None, help="XQT: weight of the translation term.")
@click.option("--views", type=int, default=None, help="MRL: virtual views per sample and step (default 2).")
@click.option("--encoder", default="small", show_default=True, help="small (fast CNN for CPU) or vgg16 (the paper's).")
@click.option("--vgg16-weights", type=click.Path(path_type=Path), default=None,
              help="Optional local torchvision VGG-16 state dict (features.* keys) to start from.")
@click.option("--n-identity", type=int, default=None, help="Identity modes to regress (default min(100, model's)).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True, help="Global batch, split over DDP ranks.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: model.pt, best.pt, log.csv, config.json.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--workers", type=int, default=None,
              help="DataLoader worker processes, 1 thread each (default: none on up to 2 cores, else one per 4 "
                   "cores; 0: load in the training process).")
@threads_option()
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", default=None, help="Method name of the run (default regressor-LOSS-ENCODER).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch.")
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
def train_regressor_command(**options) -> None:
    """Train Ramon et al. 2019's regressor with one of the five losses (baselines/ramon2019.md);
    distributed (DDP) under torchrun. Every option is the TrainConfig field of its name."""
    from facebench.baselines.ramon2019.training import TrainConfig, train
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs
    from facebench.threads import loader_workers

    config = TrainConfig(**{**options, "device": _auto_device(options["device"]),
                            "workers": loader_workers(options["workers"])})
    bar = None

    def on_step(epoch: int, done: int, total: int, value: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=None, leave=False)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4g}", refresh=False)

    def on_epoch(row: dict) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        click.echo(f"epoch {row['epoch']}: loss {_fmt(row['train_loss'])}  val shape {_fmt(row.get('val_shape_mm'))} mm  "
                   f"trans {_fmt(row.get('val_translation_cm'))} cm  rot {_fmt(row.get('val_rotation_deg'))} deg  "
                   f"reproj {_fmt(row.get('val_reprojection_px'))} px  ({row['seconds']:.1f} s, "
                   f"{row['images_per_second']:.1f} img/s)" + _remaining(row, config.epochs))

    result = train(config, on_step=on_step, on_epoch=on_epoch)
    if bar is not None:
        bar.close()
    if result.rank != 0:
        return
    best = ("no best epoch" if result.best_epoch is None
            else f"best epoch {result.best_epoch} (lowest training loss)" if result.best_shape_mm is None
            else f"best epoch {result.best_epoch} (val shape {result.best_shape_mm:.3f} mm)")
    click.echo(f"trained {result.epochs_done} epochs in {result.seconds:.1f} s; {best}; run: {result.out}")


# ---------------------------------------------------------------------------------------- multi-level
@train_command.command("multilevel", short_help="Tewari et al. 2018's multi-level face model.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Training set (.h5).")
@click.option("--val", type=click.Path(path_type=Path), required=True,
              help="Validation set (.h5): metrics every --eval-every iterations and at stage ends.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder: model.pt, log.csv, config.json.")
@click.option("--n-identity", type=int, default=None, help="Identity coefficients (80).")
@click.option("--n-expression", type=int, default=None, help="Expression coefficients (64).")
@click.option("--n-reflectance", type=int, default=None, help="Base-level reflectance coefficients (80).")
@click.option("--correctives", "n_correctives", type=int, default=None,
              help="Corrective parameters C (500; 0 = base level only).")
@click.option("--corrective-kind", type=click.Choice(["affine", "relu1", "relu2"]), default=None,
              help="Corrective space M d + b (affine, default) or one/two hidden ReLU layers.")
@click.option("--corrective-hidden", type=int, default=None, help="Hidden width of relu1/relu2 (256).")
@click.option("--image-size", type=int, default=None, help="Input size in px (default: the dataset's).")
@click.option("--encoder-width", type=int, default=None, help="Channels of the first conv (32).")
@click.option("--pretrain-iters", type=int, default=None, help="Stage-1 iterations, base level only (300).")
@click.option("--finetune-iters", type=int, default=None, help="Stage-2 iterations, all levels (300).")
@click.option("--batch", type=int, default=None, help="Images per iteration (5).")
@click.option("--optimizer", type=click.Choice(["adadelta", "adam"]), default=None, help="adadelta (default) or adam.")
@click.option("--lr-scale", type=float, default=None,
              help="Multiplier of the paper's rates (default 300 for short CPU runs; 1 = the paper's).")
@click.option("--lr-base", type=float, default=None, help="Base-branch rate before --lr-scale (0.001).")
@click.option("--lr-shape", type=float, default=None, help="Shape-corrective rate before --lr-scale (0.005).")
@click.option("--lr-reflectance", type=float, default=None, help="Reflectance-corrective rate before --lr-scale (0.01).")
@click.option("--corrective-weight-lr-mult", type=float, default=None,
              help="Rate multiplier of the corrective spaces' weight matrices (1; the paper's reading: 100).")
@click.option("--weight", multiple=True, metavar="KEY=VALUE",
              help="Loss weight override, e.g. w_smo=0 (both stages) or finetune.w_ref=2 (repeatable).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@threads_option(expose=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=None, help="Validate every N iterations (100).")
@click.option("--checkpoint-every", type=int, default=None, help="Write model.pt every N iterations (100).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Copy matching weights from another run's model.pt first.")
@click.option("--method", default=None, help="Method name of the run (default multilevel-KIND-CN, e.g. multilevel-affine-C500).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
def train_multilevel_command(**options) -> None:
    """Train Tewari et al. 2018's self-supervised multi-level face model (baselines/tewari2018.md):
    stage 1 the base level, stage 2 everything."""
    from facebench.baselines.tewari2018.training import train_multilevel
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs

    config = multilevel_config(options)
    bar = None

    def progress(stage: str, done: int, total: int, value: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=done - 1, unit="it", disable=None, leave=False)
        bar.set_description(stage, refresh=False)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4g}", refresh=False)

    def on_log(row: dict) -> None:
        if "val_photo_final" in row:
            message = (f"{row['stage']} iteration {row['iteration']}: loss {_fmt(row.get('loss'))}  val photometric "
                       f"base {_fmt(row.get('val_photo_base'))} final {_fmt(row.get('val_photo_final'))}  landmarks "
                       f"{_fmt(row.get('val_land_px'))} px  ({_fmt(row.get('images_per_second'))} img/s)")
            (bar.write if bar is not None else click.echo)(message)

    try:
        result = train_multilevel(config, progress, on_log=on_log)
    finally:
        if bar is not None:
            bar.close()
    rates = ", ".join(f"{stage} {v:.1f} img/s" for stage, v in result.images_per_second.items() if math.isfinite(v))
    val = (f"; val photometric final {result.val['photo_final']:.4f}" if "photo_final" in result.val else "")
    click.echo(f"trained {result.iterations_done} iterations in {result.seconds:.1f} s ({rates or 'nothing to do'})"
               f"{val}; run: {result.out}")


def _remaining(row: dict, epochs: int) -> str:
    """``; about 3 min left`` from this epoch's training and validation time, or ``""``."""
    left = epochs - int(row["epoch"])
    seconds = left * (float(row.get("seconds") or 0.0) + float(row.get("val_seconds") or 0.0))
    if left <= 0 or not math.isfinite(seconds):
        return ""
    return f"; about {seconds / 60:.1f} min left" if seconds >= 90 else f"; about {seconds:.0f} s left"


def multilevel_config(options: dict[str, Any]):
    """The :class:`MultiLevelTrainConfig` of ``facebench train multilevel``'s options. Each option is
    named as a field of :class:`MultiLevelConfig` (the architecture) or of
    :class:`MultiLevelTrainConfig`, and None leaves that field's default; besides, ``weight``
    (``--weight KEY=VALUE`` items) becomes ``weights``, ``device`` ``auto`` becomes cuda or cpu, and
    without ``image_size`` the training set's image size is used. FacebenchError (one line) for a
    malformed ``--weight`` or an unreadable training set."""
    import dataclasses

    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig, parse_weight_overrides
    from facebench.datasets.dataset_file import FaceDataset

    given = {k: v for k, v in options.items() if v is not None}
    weights = parse_weight_overrides(given.pop("weight", ()))
    model = {f.name: given.pop(f.name) for f in dataclasses.fields(MultiLevelConfig) if f.name in given}
    if "image_size" not in model:
        size = FaceDataset(given["dataset"]).attrs.get("image_size") or [MultiLevelConfig.image_size]
        model["image_size"] = int(size[0])
    return MultiLevelTrainConfig(model=MultiLevelConfig(**model), weights=weights,
                                 **{**given, "device": _auto_device(given["device"])})


@click.command("predict")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="RUN/model.pt or RUN/best.pt.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Dataset (.h5) to predict.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Submission file (.h5).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=None,
              help="DataLoader worker processes (default: none on up to 2 cores, else one per 4 cores).")
@threads_option()
@click.option("--method", default=None, help="Method name (default: the run's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--codes", type=click.Path(path_type=Path), default=None,
              help="Multi-level checkpoints: also write the compact coefficient file (.npz) of every reconstruction.")
def predict_command(checkpoint, dataset, out, device, batch, workers, method, overwrite, codes) -> None:
    """Write a submission (vertices, q, t) of a trained regressor or multi-level model on DATASET for
    'facebench score' (the checkpoint's kind decides)."""
    from facebench.baselines.ramon2019.predict import predict
    from facebench.baselines.tewari2018.predict import is_multilevel_checkpoint, predict_multilevel

    if is_multilevel_checkpoint(checkpoint):
        written = predict_multilevel(checkpoint, dataset, out, codes=codes, device=_auto_device(device),
                                     batch_size=batch, method=method, overwrite=overwrite)
        click.echo("wrote " + " and ".join(str(p) for p in written.values()))
        return
    if codes is not None:
        raise FacebenchError(f"{checkpoint}: --codes needs a multi-level checkpoint (facebench train multilevel)")

    from facebench.threads import loader_workers

    path = predict(checkpoint, dataset, out, device=_auto_device(device), batch_size=batch,
                   workers=loader_workers(workers),
                   method=method, overwrite=overwrite)
    click.echo(f"wrote {path}")
