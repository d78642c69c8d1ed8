"""Training of the regressor with one of the five losses: Adam, checkpoints, resume, CSV log, DDP.

:func:`train` takes a :class:`TrainConfig` and writes into the run folder ``RUN/``:

- ``config.json``: the training and regressor configuration, world size, versions;
- ``model.pt`` after every epoch (atomic): ``format``, ``version``, ``config`` (plain data),
  ``regressor`` / ``optimizer`` state dicts, ``epoch`` (epochs done), ``history``, ``best``, and
  the RNG states (torch CPU, CUDA, the MRL view sampler) — everything loads with
  ``torch.load(..., weights_only=True)``;
- ``best.pt``: the same content at the epoch of lowest validation shape error;
- ``log.csv``: one row per epoch (:data:`LOG_COLUMNS`): the training loss (mean over the epoch's
  samples, all ranks), the validation metrics of ``facebench.benchmark.metrics`` (shape mm,
  translation cm, rotation degrees, reprojection px), seconds of the training pass and of
  validation, training images/s.

Everything is checked before the first step (:func:`check_config`): dataset formats, the loss name
and its weights (:func:`facebench.baselines.ramon2019.losses.check_params`), the face model of both sets,
image sizes, the run folder (an existing non-empty folder needs ``resume`` or ``overwrite``) and,
on resume, that the checkpoint has the same architecture, model and loss.

**Resume** restores the regressor, Adam's state, the RNG states and the history and continues at
the next epoch; shuffling depends on ``(seed, epoch)`` only (``DistributedSampler.set_epoch``), so
``E`` epochs in one go equal ``k`` epochs then a resumed ``E - k`` (tested).

**Distributed** (``torchrun --nproc_per_node N -m facebench train regressor ...``; env ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``): the process group is initialized with ``nccl`` on CUDA and
``gloo`` on CPU; each rank takes ``batch / world_size`` samples of every global batch of ``batch``
samples through a ``DistributedSampler`` (the single-process run uses the same sampler with one
replica, so both see the same global batches) and ``DistributedDataParallel`` averages the
gradients; only rank 0 validates and writes files. The encoders have no batch statistics, so a
DDP run reproduces the single-process run up to float rounding (tested with 2 gloo processes).
MRL's virtual views are drawn per rank from a generator seeded with ``(seed, rank)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facebench import __version__
from facebench.atomic import write_json as _write_json
from facebench.baselines.ramon2019 import losses
from facebench.baselines.ramon2019.predict import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    evaluate,
    load_checkpoint,
)
from facebench.baselines.ramon2019.regressor import ENCODERS, Regressor
from facebench.baselines.runs import (
    mean_translation,
    open_run_folder,
    open_training_sets,
    save_checkpoint,
    write_log,
)
from facebench.device import resolve_device
from facebench.errors import FacebenchError, InputFileError

__all__ = ["TrainConfig", "TrainResult", "LOG_COLUMNS", "Distributed", "check_config", "train", "loss_params",
           "plateaued"]

#: Columns of ``RUN/log.csv``.
LOG_COLUMNS = ("epoch", "train_loss", "val_shape_mm", "val_translation_cm", "val_rotation_deg",
               "val_reprojection_px", "seconds", "val_seconds", "images_per_second", "lr")
#: Files of a run folder.
CHECKPOINT, BEST, LOG, CONFIG = "model.pt", "best.pt", "log.csv", "config.json"


@dataclasses.dataclass
class TrainConfig:
    """What to train (``facebench train regressor``'s options, one per field). Paths, mm, degrees;
    ``batch`` is the global batch (split over DDP ranks); ``views`` is MRL's number of virtual views
    (None: 2). ``plateau_window``, ``plateau_delta``, ``min_epochs``, ``plateau_metrics``: the
    early-stopping rule: stop once every validation metric of ``plateau_metrics`` (``log.csv``
    columns; default the shape error) has plateaued (:func:`plateaued`; window None: train all
    ``epochs``, which stays the cap)."""

    dataset: Path
    val: Path | None
    out: Path
    loss: str = "gal"
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    views: int | None = None
    encoder: str = "small"
    epochs: int = 10
    batch: int = 32
    lr: float = 1e-4
    device: str = "cpu"
    workers: int = 0
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    n_identity: int | None = None
    vgg16_weights: Path | None = None
    method: str | None = None
    val_batch: int = 64
    plateau_window: int | None = None
    plateau_delta: float = 0.01
    min_epochs: int = 1
    plateau_metrics: tuple[str, ...] = ("val_shape_mm",)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def method_name(self) -> str:
        return self.method or f"regressor-{self.loss}-{self.encoder}"


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did: the run folder, epochs done (fewer than ``epochs`` when the plateau rule
    stopped it), per-epoch rows of ``log.csv``, the best
    epoch and its validation shape error (mm), seconds of this call. Without a validation set the
    best epoch is the one of lowest training loss and ``best_shape_mm`` is None (no shape was measured)."""

    out: Path
    epochs_done: int
    history: list[dict[str, float]]
    best_epoch: int | None
    best_shape_mm: float | None
    seconds: float
    world_size: int = 1
    rank: int = 0

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.out / BEST


def plateaued(values: list[float], window: int | None, delta: float = 0.01, min_epochs: int = 1) -> bool:
    """The plateau rule that stops a training early: with ``values`` the validation shape error (mm)
    of the epochs done so far, True when at least ``max(min_epochs, 2 window)`` epochs are done and
    the mean of the last ``window`` epochs is not lower than ``(1 − delta)`` × the mean of the
    ``window`` epochs before them (the curve improved by less than ``delta``, relative, over one
    window, or rose). ``window`` None: never (train the full ``epochs``). Non-finite values count as
    no improvement."""
    if window is None:
        return False
    n = len(values)
    if n < max(int(min_epochs), 2 * int(window)):
        return False
    recent = [float(v) for v in values[n - window:]]
    before = [float(v) for v in values[n - 2 * window:n - window]]
    if not all(math.isfinite(v) for v in recent + before):
        return True
    return sum(recent) / window > (1.0 - delta) * sum(before) / window


def loss_params(config: TrainConfig) -> dict[str, Any]:
    """Keyword parameters of ``config.loss`` from the options (None entries are 'not given')."""
    params: dict[str, Any] = {"alpha": config.alpha, "beta": config.beta, "gamma": config.gamma}
    if config.views is not None:
        params["n_views"] = config.views
    return {k: v for k, v in params.items() if v is not None}


# ---------------------------------------------------------------------------------------- distributed
@dataclasses.dataclass
class Distributed:
    """Rank, world size and local rank of this process; ``active`` when a process group is used."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun); with ``WORLD_SIZE > 1``
        initialize the default process group (``nccl`` on CUDA, ``gloo`` on CPU) unless the caller
        already did."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank=rank, world_size=world, local_rank=local, active=True, owns_group=owns)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over ranks (float64 on CPU: works on gloo and nccl)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            tensor = tensor.cuda()
        torch.distributed.all_reduce(tensor)
        return tensor.cpu().tolist()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        return self.sum([float(flag) if self.is_main else 0.0])[0] > 0

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------- checks

def check_config(config: TrainConfig, *, model=None, world_size: int = 1):
    """Check everything that can be checked before training; return ``(model, train set, val set,
    checkpoint or None)``. Raises FacebenchError / InputFileError with one line."""
    params = loss_params(config)
    losses.check_params(config.loss, params)  # unknown loss, missing or unknown weights
    if config.encoder not in ENCODERS:
        raise FacebenchError(f"unknown encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}")
    if config.epochs < 1:
        raise FacebenchError(f"--epochs must be >= 1, got {config.epochs}")
    if config.batch < 1 or config.val_batch < 1:
        raise FacebenchError(f"--batch must be >= 1, got {config.batch}")
    if config.batch % world_size:
        raise FacebenchError(f"--batch {config.batch} is not divisible by the {world_size} processes")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise FacebenchError(f"--lr must be a finite number > 0, got {config.lr}")
    if config.workers < 0:
        raise FacebenchError(f"--workers must be >= 0, got {config.workers}")
    if config.views is not None and config.views < 1:
        raise FacebenchError(f"--views must be >= 1, got {config.views}")
    if config.plateau_window is not None and (config.plateau_window < 1 or config.val is None):
        raise FacebenchError("the plateau rule needs a window >= 1 and a validation set")
    if not 0 <= config.plateau_delta < 1:
        raise FacebenchError(f"the plateau delta must be in [0, 1), got {config.plateau_delta}")
    if config.resume and config.overwrite:
        raise FacebenchError("give --resume or --overwrite, not both")
    resolve_device(config.device)
    out = Path(config.out)
    checkpoint = open_run_folder(out, resume=config.resume, overwrite=config.overwrite, load=load_checkpoint)
    model, train_set, val_set = open_training_sets(config.dataset, config.val, model)
    if val_set is not None:
        if val_set.attrs.get("image_size") != train_set.attrs.get("image_size"):
            raise InputFileError(val_set.path, f"images are {val_set.attrs.get('image_size')} px but the training "
                                               f"images are {train_set.attrs.get('image_size')}")
    if config.n_identity is not None and not 1 <= config.n_identity <= model.n_identity:
        raise FacebenchError(f"--n-identity must be in [1, {model.n_identity}], got {config.n_identity}")
    if checkpoint is not None:
        _check_resume(out / CHECKPOINT, checkpoint, config, model, train_set)
    return model, train_set, val_set, checkpoint


def _check_resume(path: Path, checkpoint: dict, config: TrainConfig, model, train_set) -> None:
    """FacebenchError when the run's checkpoint is of another architecture, model or loss."""
    saved = checkpoint["config"]
    arch, run = saved["regressor"], saved.get("train", {})
    if arch.get("encoder") != config.encoder:
        raise InputFileError(path, f"checkpoint of a {arch.get('encoder')} regressor; this run asks for "
                                   f"--encoder {config.encoder}")
    if arch.get("model_digest") != model.digest():
        raise InputFileError(path, f"checkpoint trained with another face model ({arch.get('model')!r}, "
                                   f"digest {str(arch.get('model_digest'))[:12]})")
    if config.n_identity is not None and arch.get("n_identity") != config.n_identity:
        raise InputFileError(path, f"checkpoint regresses {arch.get('n_identity')} identity modes, "
                                   f"not {config.n_identity}")
    size = train_set.attrs.get("image_size")
    if size is not None and list(arch.get("image_size", [])) != list(size):
        raise InputFileError(path, f"checkpoint made for {arch.get('image_size')} px images; the dataset has {size}")
    if run.get("loss") != config.loss or any(run.get(k) != getattr(config, k) for k in ("alpha", "beta", "gamma")):
        raise InputFileError(path, f"checkpoint trained with loss {run.get('loss')!r} "
                                   f"(alpha={run.get('alpha')}, beta={run.get('beta')}, gamma={run.get('gamma')}); "
                                   "resume with the same loss and weights")


# ---------------------------------------------------------------------------------------- files

# ---------------------------------------------------------------------------------------- training
def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "views": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["views"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _checkpoint(config: TrainConfig, regressor: Regressor, optimizer, epoch: int, history: list, best: dict,
                rng: dict, world_size: int) -> dict:
    from facebench.baselines.determinism import without_wall_clock

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": {"train": config.as_dict(), "regressor": regressor.config(), "method": config.method_name,
                   "world_size": world_size, "facebench_version": __version__},
        "regressor": regressor.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": without_wall_clock(history),  # no clock readings: reruns give identical bytes
        "best": best,
        "rng": rng,
    }


def train(
    config: TrainConfig,
    *,
    model=None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a :class:`Regressor` as ``config`` says (module docstring); return a :class:`TrainResult`.

    Args:
        model: the face model (default: the one the training set names).
        on_step: rank 0 only, after every step: ``on_step(epoch, steps_done, steps_per_epoch, loss)``.
        on_epoch: rank 0 only, after every epoch with its ``log.csv`` row.

    Raises:
        FacebenchError / InputFileError (one line) on bad input, before the first step; a
        FacebenchError when the loss becomes NaN or infinite (training diverged).
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    dist = Distributed.from_env(device)
    try:
        if dist.active and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        return _train(config, model, device, dist, on_step, on_epoch, started)
    finally:
        dist.close()


def _train(config, model, device, dist: Distributed, on_step, on_epoch, started) -> TrainResult:
    from torch.utils.data import DataLoader, DistributedSampler

    from facebench.baselines.determinism import deterministic_torch, loader_kwargs, restore_wall_clock
    from facebench.datasets.dataset_file import TorchFaceDataset

    deterministic_torch()  # bit-exact reruns for a seed, thread count and device (baselines/determinism.py)
    model, train_set, val_set, checkpoint = check_config(config, model=model, world_size=dist.world_size)
    dist.barrier()  # every rank has checked the run folder before rank 0 writes into it
    out = Path(config.out)
    loss_fn = losses.make_loss(config.loss, **loss_params(config))
    torch.manual_seed(config.seed)
    regressor = Regressor(model, encoder=config.encoder, n_identity=config.n_identity,
                          image_size=tuple(train_set.attrs.get("image_size") or (224, 224)),
                          init_translation=mean_translation(train_set), vgg16_weights=config.vgg16_weights)
    if checkpoint is not None:
        regressor.load_state_dict(checkpoint["regressor"])
    regressor.to(device)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=config.lr)
    views_generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + dist.rank + 1)
    history: list[dict] = []
    best: dict = {"epoch": None, "shape_mm": None}
    first_epoch = 0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        history = restore_wall_clock(list(checkpoint.get("history", [])), out / LOG)
        best = dict(checkpoint.get("best", best))
        first_epoch = int(checkpoint["epoch"])
        _set_rng_state(checkpoint["rng"], views_generator, device)
    if config.loss == "mrl":
        loss_fn = losses.make_loss(config.loss, generator=views_generator, **loss_params(config))

    network = regressor
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(regressor, device_ids=[device.index] if device.type == "cuda" else None,
                                          broadcast_buffers=False)
    data = TorchFaceDataset(config.dataset)
    sampler = DistributedSampler(data, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(data, batch_size=config.batch // dist.world_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=device.type == "cuda", drop_last=False,
                        persistent_workers=config.workers > 0,  # workers start once, not every epoch
                        **loader_kwargs(config.seed))
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json({"train": config.as_dict(), "regressor": regressor.config(), "method": config.method_name,
                     "loss_params": loss_params(config), "world_size": dist.world_size,
                     "device": str(device), "facebench_version": __version__, "torch_version": torch.__version__,
                     "first_epoch": first_epoch}, out / CONFIG)

    for epoch in range(first_epoch, config.epochs):
        stop = all(plateaued([r.get(metric, float("nan")) for r in history], config.plateau_window,
                             config.plateau_delta, config.min_epochs) for metric in config.plateau_metrics)
        if dist.broadcast_flag(stop):  # rank 0 holds the validation history
            break  # resumed after the rule had stopped it, or stopped by the previous epoch
        row = _train_epoch(network, loader, sampler, optimizer, loss_fn, device, dist, epoch, on_step)
        row["lr"] = config.lr
        if dist.is_main:
            if val_set is not None:
                t0 = time.perf_counter()
                metrics = evaluate(regressor, config.val, device=device, batch_size=config.val_batch,
                                   workers=config.workers)
                row.update({f"val_{k}": v for k, v in metrics.items()})
                row["val_seconds"] = time.perf_counter() - t0
            history.append(row)
            rng = _rng_state(views_generator, device)
            state = _checkpoint(config, regressor, optimizer, epoch + 1, history, best, rng, dist.world_size)
            shape = row.get("val_shape_mm", row["train_loss"])
            if math.isfinite(shape) and (best["shape_mm"] is None or shape < best["shape_mm"]):
                best = {"epoch": epoch + 1, "shape_mm": float(shape)}
                state["best"] = best
                save_checkpoint(state, out / BEST)
            save_checkpoint(state, out / CHECKPOINT)
            write_log(history, out / LOG, LOG_COLUMNS)
            if on_epoch is not None:
                on_epoch(row)
        dist.barrier()
    return TrainResult(out=out, epochs_done=len(history) if dist.is_main else max(first_epoch, config.epochs),
                       history=history,
                       best_epoch=best["epoch"],
                       best_shape_mm=best["shape_mm"] if val_set is not None else None,
                       seconds=time.perf_counter() - started, world_size=dist.world_size, rank=dist.rank)


def _train_epoch(network, loader, sampler, optimizer, loss_fn, device, dist: Distributed, epoch: int,
                 on_step) -> dict[str, float]:
    """One pass over the training set; the row of ``log.csv`` without validation columns."""
    network.train()
    sampler.set_epoch(epoch)
    total, count, steps = 0.0, 0, len(loader)
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        images = batch["image"].to(device, non_blocking=True)
        x, q, t, K = (batch[k].to(device, non_blocking=True) for k in ("vertices", "q", "t", "K"))
        out = network(images)
        loss = loss_fn(out["vertices"], out["q"], out["t"], x, q, t, K).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FacebenchError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1} "
                                 "(lower --lr or the loss weights)")
        total += value * len(images)
        count += len(images)
        if dist.is_main and on_step is not None:
            on_step(epoch + 1, step + 1, steps, value)
    seconds = time.perf_counter() - t0
    total, count = dist.sum([total, float(count)])
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1.0), "seconds": seconds,
            "images_per_second": count / seconds if seconds > 0 else float("nan")}
