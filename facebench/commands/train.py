"""``facebench train`` and ``facebench predict``: train the regressor with one of the five losses
(``--model regressor``, the default) or the multi-level face model of Tewari et al. 2018
(``--model multilevel``), and write a submission from either kind of checkpoint. Under ``torchrun``
(``torchrun --nproc_per_node N -m facebench train ...``) the regressor trains distributed (DDP);
only rank 0 prints and writes."""

from __future__ import annotations

import math
from pathlib import Path

import click
from click.core import ParameterSource

from facebench.errors import FacebenchError

#: Options that only the regressor uses, and options that only the multi-level model uses.
REGRESSOR_ONLY = ("loss", "alpha", "beta", "gamma", "views", "encoder", "vgg16_weights", "epochs", "lr", "workers")
MULTILEVEL_ONLY = ("correctives", "corrective_kind", "corrective_hidden", "n_expression", "n_reflectance",
                   "image_size", "encoder_width", "pretrain_iters", "finetune_iters", "optimizer", "lr_scale",
                   "lr_base", "lr_shape", "lr_reflectance", "corrective_weight_lr_mult", "weight", "threads", "eval_every", "checkpoint_every",
                   "init_from")


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


@click.command("train")
@click.option("--model", "model_kind", type=click.Choice(["regressor", "multilevel"]), default="regressor",
              show_default=True, help="regressor: Ramon et al. 2019's regressor and losses; multilevel: Tewari et "
                                      "al. 2018's self-supervised multi-level model (baselines/tewari2018.md).")
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
@click.option("--n-identity", type=int, default=None,
              help="Identity modes to regress (regressor: default min(100, model's); multilevel: 80).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch", type=int, default=None,
              help="Batch: regressor 32 (global, split over DDP ranks), multilevel 5.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: model.pt, best.pt, log.csv, config.json.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", default=None, help="Method name of the run (default regressor-LOSS-ENCODER).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch (iteration).")
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
@click.option("--correctives", type=int, default=None, help="multilevel: corrective parameters C (default 500; 0 = base only).")
@click.option("--corrective-kind", type=click.Choice(["affine", "relu1", "relu2"]), default=None,
              help="multilevel: corrective space M d + b (affine, default) or one/two hidden ReLU layers.")
@click.option("--corrective-hidden", type=int, default=None, help="multilevel: hidden width of relu1/relu2 (256).")
@click.option("--n-expression", type=int, default=None, help="multilevel: expression coefficients (64).")
@click.option("--n-reflectance", type=int, default=None, help="multilevel: base-level reflectance coefficients (80).")
@click.option("--image-size", type=int, default=None, help="multilevel: input size in px (default: the dataset's).")
@click.option("--encoder-width", type=int, default=None, help="multilevel: channels of the first conv (32).")
@click.option("--pretrain-iters", type=int, default=None, help="multilevel: stage-1 iterations, base level only (300).")
@click.option("--finetune-iters", type=int, default=None, help="multilevel: stage-2 iterations, all levels (300).")
@click.option("--optimizer", type=click.Choice(["adadelta", "adam"]), default=None, help="multilevel: adadelta (default).")
@click.option("--lr-scale", type=float, default=None,
              help="multilevel: multiplier of the paper's rates (default 300 for short CPU runs; 1 = the paper's).")
@click.option("--lr-base", type=float, default=None, help="multilevel: base-branch rate before --lr-scale (0.001).")
@click.option("--lr-shape", type=float, default=None, help="multilevel: shape-corrective rate before --lr-scale (0.005).")
@click.option("--lr-reflectance", type=float, default=None,
              help="multilevel: reflectance-corrective rate before --lr-scale (0.01).")
@click.option("--corrective-weight-lr-mult", type=float, default=None,
              help="multilevel: rate multiplier of the corrective spaces' weight matrices (1; the paper's reading: 100).")
@click.option("--weight", multiple=True, metavar="KEY=VALUE",
              help="multilevel: loss weight override, e.g. w_smo=0 (both stages) or finetune.w_ref=2 (repeatable).")
@click.option("--threads", type=int, default=None, help="multilevel: torch CPU threads.")
@click.option("--eval-every", type=int, default=None, help="multilevel: validate every N iterations (100).")
@click.option("--checkpoint-every", type=int, default=None, help="multilevel: write model.pt every N iterations (100).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="multilevel: copy matching weights from another run's model.pt first.")
def train_command(model_kind, dataset, val, loss, alpha, beta, gamma, views, encoder, vgg16_weights, n_identity, epochs,
                  batch, lr, out, device, workers, seed, method, resume, overwrite, **multilevel) -> None:
    """Train the regressor with one of the five losses, or the multi-level model (--model multilevel)."""
    from tqdm import tqdm

    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if model_kind == "multilevel":
        wrong = sorted(given & set(REGRESSOR_ONLY))
        if wrong:
            raise FacebenchError(f"--model multilevel does not take {', '.join('--' + w.replace('_', '-') for w in wrong)}")
        _train_multilevel(dataset=dataset, val=val, out=out, n_identity=n_identity, batch=batch, device=device,
                          seed=seed, method=method, resume=resume, overwrite=overwrite, **multilevel)
        return
    wrong = sorted(given & set(MULTILEVEL_ONLY))
    if wrong:
        raise FacebenchError(f"{', '.join('--' + w.replace('_', '-') for w in wrong)} only apply to --model multilevel")
    batch = 32 if batch is None else batch

    from facebench.baselines.ramon2019.training import TrainConfig, train

    config = TrainConfig(dataset=dataset, val=val, out=out, loss=loss, alpha=alpha, beta=beta, gamma=gamma,
                         views=views, encoder=encoder, epochs=epochs, batch=batch, lr=lr,
                         device=_auto_device(device), workers=workers, seed=seed, resume=resume,
                         overwrite=overwrite, n_identity=n_identity, vgg16_weights=vgg16_weights, method=method)
    bar = None

    def on_step(epoch: int, done: int, total: int, value: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=None, leave=False)
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
                   f"{row['images_per_second']:.1f} img/s)")

    result = train(config, on_step=on_step, on_epoch=on_epoch)
    if bar is not None:
        bar.close()
    if result.rank != 0:
        return
    best = (f"best epoch {result.best_epoch} (val shape {result.best_shape_mm:.3f} mm)"
            if result.best_epoch is not None else "no best epoch")
    click.echo(f"trained {result.epochs_done} epochs in {result.seconds:.1f} s; {best}; run: {result.out}")


def _train_multilevel(*, dataset, val, out, n_identity, batch, device, seed, method, resume, overwrite, correctives,
                      corrective_kind, corrective_hidden, n_expression, n_reflectance, image_size, encoder_width,
                      pretrain_iters, finetune_iters, optimizer, lr_scale, lr_base, lr_shape, lr_reflectance,
                      corrective_weight_lr_mult, weight, threads, eval_every, checkpoint_every, init_from) -> None:
    """``facebench train --model multilevel``: build the configs, train with a progress bar, print
    one line per validation and a final summary."""
    from tqdm import tqdm

    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig, parse_weight_overrides, train_multilevel
    from facebench.datasets.dataset_file import FaceDataset

    if image_size is None:
        size = FaceDataset(dataset).attrs.get("image_size") or [MultiLevelConfig.image_size]
        image_size = int(size[0])
    model_options = {"n_identity": n_identity, "n_expression": n_expression, "n_reflectance": n_reflectance,
                     "n_correctives": correctives, "corrective_kind": corrective_kind,
                     "corrective_hidden": corrective_hidden, "image_size": image_size, "encoder_width": encoder_width}
    model_config = MultiLevelConfig(**{k: v for k, v in model_options.items() if v is not None})
    train_options = {"pretrain_iters": pretrain_iters, "finetune_iters": finetune_iters, "batch": batch,
                     "optimizer": optimizer, "lr_scale": lr_scale, "lr_base": lr_base, "lr_shape": lr_shape,
                     "lr_reflectance": lr_reflectance, "corrective_weight_lr_mult": corrective_weight_lr_mult,
                     "threads": threads, "eval_every": eval_every,
                     "checkpoint_every": checkpoint_every, "init_from": init_from}
    config = MultiLevelTrainConfig(dataset=dataset, val=val, out=out, model=model_config,
                                   weights=parse_weight_overrides(weight), device=_auto_device(device), seed=seed,
                                   resume=resume, overwrite=overwrite, method=method,
                                   **{k: v for k, v in train_options.items() if v is not None})
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


@click.command("predict")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="RUN/model.pt or RUN/best.pt.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Dataset (.h5) to predict.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Submission file (.h5).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
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
        raise FacebenchError(f"{checkpoint}: --codes needs a multi-level checkpoint (facebench train --model multilevel)")

    path = predict(checkpoint, dataset, out, device=_auto_device(device), batch_size=batch, workers=workers,
                   method=method, overwrite=overwrite)
    click.echo(f"wrote {path}")
