"""``facebench train`` and ``facebench predict``: train the regressor with one of the five losses,
write a submission from a checkpoint. Under ``torchrun`` (``torchrun --nproc_per_node N -m facebench
train ...``) training runs distributed (DDP); only rank 0 prints and writes."""

from __future__ import annotations

import math
from pathlib import Path

import click


def _auto_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


@click.command("train")
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
@click.option("--batch", type=int, default=32, show_default=True, help="Global batch (split over DDP ranks).")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: model.pt, best.pt, log.csv, config.json.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", default=None, help="Method name of the run (default regressor-LOSS-ENCODER).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch.")
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
def train_command(dataset, val, loss, alpha, beta, gamma, views, encoder, vgg16_weights, n_identity, epochs, batch,
                  lr, out, device, workers, seed, method, resume, overwrite) -> None:
    """Train the regressor (encoder + MLP heads + frozen 3DMM layer) with one of the five losses."""
    from tqdm import tqdm

    from facebench.baselines.training import TrainConfig, train

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


@click.command("predict")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="RUN/model.pt or RUN/best.pt.")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Dataset (.h5) to predict.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Submission file (.h5).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--method", default=None, help="Method name (default: the run's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def predict_command(checkpoint, dataset, out, device, batch, workers, method, overwrite) -> None:
    """Write a submission (vertices, q, t) of a trained regressor on DATASET for 'facebench score'."""
    from facebench.baselines.predict import predict

    path = predict(checkpoint, dataset, out, device=_auto_device(device), batch_size=batch, workers=workers,
                   method=method, overwrite=overwrite)
    click.echo(f"wrote {path}")
