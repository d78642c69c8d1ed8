"""Self-supervised two-stage training of the multi-level face model (Tewari et al. 2018).

:func:`train_multilevel` takes a :class:`MultiLevelTrainConfig` and writes into the run folder:

- ``config.json``: the training configuration, the model configuration, both stages' loss weights,
  the device and versions;
- ``model.pt`` (atomic, every ``checkpoint_every`` iterations, at the end of each stage and at the
  end): ``format`` (:data:`CHECKPOINT_FORMAT`), ``version``, ``config`` (plain data), ``model``
  (:meth:`MultiLevelModel.state_for_checkpoint`), ``optimizer`` and ``optimizer_stage``,
  ``iteration`` (iterations done, both stages counted together), ``history`` and the torch RNG
  state; everything loads with ``torch.load(..., weights_only=True)``;
- ``log.csv``: one row per ``log_every`` iterations (and one at each evaluation): ``iteration``,
  ``stage``, the mean total loss and every loss term over the window (``base/photo``,
  ``final/land``, ``smo``...), and at evaluations the validation metrics
  (:data:`VAL_COLUMNS`: photometric error of the base and final levels over the dataset's face
  masks, landmark error px, shape error mm — the last only as a diagnostic: training never sees
  the ground-truth shape), seconds and training images/s.

**Data** (self-supervised): the training step reads only ``images``, ``masks``, ``landmarks_2d``
and ``K`` of a facebench dataset file; one intrinsics matrix for the whole set is required (the
model's renderer uses it).

**Stages** (the supplement's schedule, iterations configurable): stage 1 (``pretrain``,
``pretrain_iters`` iterations) trains the base level only — the loss has the base level only,
weights :meth:`MultiLevelWeights.pretraining`, and only the ``base`` parameter group is optimized
(the corrective spaces are frozen and unused); stage 2 (``finetune``, ``finetune_iters``) trains
everything with both levels and :meth:`MultiLevelWeights.finetuning`, with a new optimizer.

**Optimizer**: AdaDelta (``torch.optim.Adadelta``, ρ = 0.9, ε = ``adadelta_eps``) with one
parameter group per branch: base ``lr_base`` (0.001), shape correctives ``lr_shape`` (0.005),
reflectance correctives ``lr_reflectance`` (0.01) (a branch = its δ head and its corrective space).
"Corrective weights ×100" is read as Caffe's per-blob ``lr_mult`` (the paper's models were Caffe
models): the *weight matrices* of the corrective spaces ``F(δ|Θ)`` (``M`` of ``M δ + b``, every
linear weight of the ReLU variants) get their branch's rate times ``corrective_weight_lr_mult``;
their biases and the δ heads get the branch's rate. AdaDelta's step is
``lr · RMS(Δx) / RMS(g) · g``, about ``lr · sqrt(ε)`` per parameter whatever the gradient's scale,
so it ignores the small gradients of ``M`` the ×100 was probably meant to compensate: with ×100
every entry of ``M`` moves ~``300 · 0.01 · 100 · 1e-3 ≈ 0.3`` per step at our rate scale, the
offsets of 500 correctives jump by tens of mm / RGB units and the first fine-tuning steps explode
(measured: loss 6·10⁵ at iteration 15, final-level photometric error 0.28 vs 0.236 for the base
after 30 iterations; with ×1: 0.234). Our default is therefore ``corrective_weight_lr_mult = 1``;
``corrective_weight_lr_mult=100`` (``--corrective-weight-lr-mult 100``) gives the paper's reading.

AdaDelta's step starts at ``lr · sqrt(ε)``: with ε = 1e-6 and lr = 0.001 a parameter moves about
1e-6 per iteration, which may suit the paper's 200k + 190k iterations but not a CPU demo of a few
hundred. Our default keeps the paper's rates *and their ratios* and multiplies all of them by
``lr_scale`` (default :data:`DEMO_LR_SCALE` = 300, i.e. base 0.3; 1 gives the paper's values);
``optimizer="adam"`` is offered as well (same rates × scale).

**Resume** (``resume=True``): restores the model, the optimizer of the current stage, the RNG
state and the history and continues at the stored iteration. The batches depend only on
``(seed, iteration)`` (one permutation of the training set per epoch), so ``k`` iterations and then
a resumed rest equal an uninterrupted run bit for bit (same device and thread count; tested).
**Warm start** (``init_from``): the parameters of another run's checkpoint whose names and shapes
match are copied before training (used by the evaluations to share one pre-training among
variants that differ only in their corrective spaces).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench import __version__
from facebench.atomic import write_json as _write_json
from facebench.baselines.runs import (
    mean_translation,
    open_run_folder,
    open_training_sets,
    save_checkpoint,
    write_log,
)
from facebench.baselines.tewari2018.data import TrainingImages, batch_indices, check_images, shared_K
from facebench.baselines.tewari2018.predict import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    iterate_reconstructions,
    load_multilevel_checkpoint,
    model_from_checkpoint,
)
from facebench.device import resolve_device
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "STAGES",
    "DEMO_LR_SCALE",
    "VAL_COLUMNS",
    "MultiLevelTrainConfig",
    "MultiLevelTrainResult",
    "parse_weight_overrides",
    "stage_weights",
    "check_train_config",
    "train_multilevel",
    "evaluate_multilevel",
]

STAGES = ("pretrain", "finetune")
#: Multiplier of the paper's AdaDelta learning rates in our defaults (module docstring).
DEMO_LR_SCALE = 300.0
#: Validation columns of ``log.csv``.
VAL_COLUMNS = ("val_photo_base", "val_photo_final", "val_land_px", "val_shape_mm", "val_offset_mm",
               "val_refl_offset")
CHECKPOINT, LOG, CONFIG = "model.pt", "log.csv", "config.json"
_WEIGHT_KEYS = ("w_photo", "w_land", "w_reg", "w_rstd", "w_smo", "w_sta", "w_ref", "w_glo", "sparsity_p")


def _default_model_config():
    from facebench.baselines.tewari2018.model import MultiLevelConfig

    return MultiLevelConfig()


@dataclasses.dataclass
class MultiLevelTrainConfig:
    """What to train. Paths; iterations per stage; ``batch`` images per iteration; learning rates
    are the paper's AdaDelta rates before ``lr_scale`` (module docstring); ``lr_pretrain``: the base
    rate of stage 1 (None: ``lr_base``; the supplement prints 0.01 for pre-training, ten times the
    stage-2 base rate). ``adam_fused``: torch's fused Adam kernel (same update, one pass over the
    parameters: 5x faster optimizer steps at C = 500 on CPU).

    ``weights`` overrides loss weights: ``{"w_smo": 0.0}`` sets a weight in both stages,
    ``{"finetune.w_smo": 0.0}`` / ``{"pretrain.w_photo": 1.0}`` in one stage only.
    ``model``: a :class:`~facebench.baselines.tewari2018.model.MultiLevelConfig`; its ``image_size`` must
    be the datasets' (square) image size. ``threads``: torch CPU threads during training (None:
    leave as is). ``eval_every``/``checkpoint_every``/``log_every``: in iterations (0: only at
    stage ends). ``val_limit``: at most this many validation images per evaluation (None: all).
    """

    dataset: Path
    val: Path | None
    out: Path
    model: Any = dataclasses.field(default_factory=_default_model_config)
    pretrain_iters: int = 300
    finetune_iters: int = 300
    batch: int = 5
    optimizer: str = "adadelta"
    lr_base: float = 0.001
    lr_shape: float = 0.005
    lr_reflectance: float = 0.01
    lr_pretrain: float | None = None
    adam_fused: bool = False
    corrective_weight_lr_mult: float = 1.0
    lr_scale: float = DEMO_LR_SCALE
    adadelta_eps: float = 1e-6
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    use_masks: bool = True
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    val_limit: int | None = 64
    val_batch: int = 16
    resume: bool = False
    overwrite: bool = False
    init_from: Path | None = None
    method: str | None = None

    @property
    def total_iters(self) -> int:
        return self.pretrain_iters + self.finetune_iters

    @property
    def method_name(self) -> str:
        return self.method or f"multilevel-{self.model.corrective_kind}-C{self.model.n_correctives}"

    def stage_at(self, iteration: int) -> str:
        """Stage of the iteration with 0-based index ``iteration``."""
        return STAGES[0] if iteration < self.pretrain_iters else STAGES[1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings, the model config as its dict)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "model":
                value = value.to_dict()
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[field.name] = value
        return out


@dataclasses.dataclass
class MultiLevelTrainResult:
    """What :func:`train_multilevel` did: the run folder, iterations done (both stages), the rows of
    ``log.csv``, the last validation metrics (:data:`VAL_COLUMNS` without ``val_``), training
    images/s per stage (this call's iterations only) and the seconds of this call."""

    out: Path
    iterations_done: int
    history: list[dict[str, Any]]
    val: dict[str, float]
    images_per_second: dict[str, float]
    seconds: float

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT


# ---------------------------------------------------------------------------------------- weights
def parse_weight_overrides(items) -> dict[str, float]:
    """``["w_smo=0", "finetune.w_ref=2.5"]`` -> ``{"w_smo": 0.0, "finetune.w_ref": 2.5}``;
    FacebenchError (one line) for a malformed item, an unknown weight or stage, a non-number."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep:
            raise FacebenchError(f"--weight expects KEY=VALUE, got {item!r}")
        _check_weight_key(key)
        try:
            number = float(value)
        except ValueError:
            raise FacebenchError(f"--weight {key}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise FacebenchError(f"--weight {key}: must be finite, got {value!r}")
        out[key] = number
    return out


def _check_weight_key(key: str) -> None:
    stage, _, name = key.rpartition(".")
    if stage and stage not in STAGES:
        raise FacebenchError(f"unknown stage {stage!r} in weight {key!r}; use pretrain.KEY or finetune.KEY")
    if name not in _WEIGHT_KEYS:
        raise FacebenchError(f"unknown loss weight {name!r}; known: {', '.join(_WEIGHT_KEYS)}")


def stage_weights(stage: str, overrides: dict[str, float]):
    """The :class:`MultiLevelWeights` of ``stage``: the supplement's defaults of that stage with
    ``overrides`` applied (plain keys to both stages, ``STAGE.KEY`` to one; the stage-specific key
    wins). FacebenchError for negative weights (raised by ``MultiLevelWeights``)."""
    from facebench.baselines.tewari2018.loss import MultiLevelWeights

    base = MultiLevelWeights.pretraining() if stage == STAGES[0] else MultiLevelWeights.finetuning()
    changes: dict[str, float] = {}
    for key, value in overrides.items():
        _check_weight_key(key)
        prefix, _, name = key.rpartition(".")
        if not prefix:
            changes.setdefault(name, value)
    for key, value in overrides.items():
        prefix, _, name = key.rpartition(".")
        if prefix == stage:
            changes[name] = value
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as error:
        raise FacebenchError(f"loss weights of stage {stage}: {error}") from None


# ---------------------------------------------------------------------------------------- checks
def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise FacebenchError(f"{name} must be a finite number > 0, got {value}")



def check_train_config(config: MultiLevelTrainConfig, *, model=None):
    """Check everything before the first iteration; return ``(face model, train set, val set,
    K (3,3), checkpoint or None)``. Raises FacebenchError / InputFileError (one line): unknown
    optimizer, iterations < 0, batch < 1, rates <= 0, negative loss weights, a model configuration
    the face model cannot serve (``MultiLevelConfig.check``: C > V, fewer modes...), datasets of
    another face model, other image sizes or intrinsics, and the run folder rules (a non-empty
    folder needs ``resume`` or ``overwrite``; a resume needs a checkpoint of the same model)."""

    if config.optimizer not in ("adadelta", "adam"):
        raise FacebenchError(f"unknown optimizer {config.optimizer!r}; choose adadelta or adam")
    for name in ("pretrain_iters", "finetune_iters"):
        if int(getattr(config, name)) < 0:
            raise FacebenchError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.total_iters < 1:
        raise FacebenchError("nothing to train: --pretrain-iters and --finetune-iters are both 0")
    if config.batch < 1 or config.val_batch < 1:
        raise FacebenchError(f"--batch must be >= 1, got {config.batch}")
    for name in ("lr_base", "lr_shape", "lr_reflectance", "corrective_weight_lr_mult", "lr_scale", "adadelta_eps"):
        _positive(name.replace("_", "-"), getattr(config, name))
    if config.lr_pretrain is not None:
        _positive("lr-pretrain", config.lr_pretrain)
    for name in ("eval_every", "checkpoint_every", "log_every"):
        if int(getattr(config, name)) < 0:
            raise FacebenchError(f"{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.val_limit is not None and config.val_limit < 1:
        raise FacebenchError(f"val_limit must be >= 1, got {config.val_limit}")
    if config.threads is not None and config.threads < 1:
        raise FacebenchError(f"--threads must be >= 1, got {config.threads}")
    if config.resume and config.overwrite:
        raise FacebenchError("give --resume or --overwrite, not both")
    for stage in STAGES:
        stage_weights(stage, config.weights)
    resolve_device(config.device)
    out = Path(config.out)
    checkpoint = open_run_folder(out, resume=config.resume, overwrite=config.overwrite,
                                 load=load_multilevel_checkpoint, checkpoint=CHECKPOINT)
    model, train_set, val_set = open_training_sets(config.dataset, config.val, model)
    config.model.check(model)
    check_images(train_set, config.model.image_size)
    K = shared_K(train_set)
    if val_set is not None:
        check_images(val_set, config.model.image_size)
        if not np.allclose(shared_K(val_set), K, rtol=0, atol=1e-6):
            raise InputFileError(val_set.path, "intrinsics K differ from the training set's")
    if checkpoint is not None:
        _check_resume(out / CHECKPOINT, checkpoint, config, model)
    if config.init_from is not None:
        load_multilevel_checkpoint(config.init_from)
    return model, train_set, val_set, K, checkpoint


def _check_resume(path: Path, checkpoint: dict, config: MultiLevelTrainConfig, model) -> None:
    saved = checkpoint["config"]
    if saved.get("model_digest") != model.digest():
        raise InputFileError(path, f"checkpoint trained with another face model (digest "
                                   f"{str(saved.get('model_digest'))[:12]})")
    if saved.get("model") != config.model.to_dict():
        raise InputFileError(path, "checkpoint of another model configuration; resume with the same "
                                   f"options ({saved.get('model')})")
    done = int(checkpoint.get("iteration", 0))
    if done > config.pretrain_iters and int(saved["train"].get("pretrain_iters", -1)) != config.pretrain_iters:
        raise InputFileError(path, f"the run pre-trained {saved['train'].get('pretrain_iters')} iterations; "
                                   f"resume with --pretrain-iters {saved['train'].get('pretrain_iters')}")


# ---------------------------------------------------------------------------------------- checkpoints

def _log_columns(history: list[dict]) -> list[str]:
    fixed = ["iteration", "stage", "loss"]
    terms = sorted({k for row in history for k in row if "/" in k or k in ("reg", "rstd", "smo", "sta", "ref", "glo")})
    rest = sorted({k for row in history for k in row} - set(fixed) - set(terms) - set(VAL_COLUMNS)
                  - {"seconds", "images_per_second"})
    return [*fixed, *terms, *rest, *VAL_COLUMNS, "seconds", "images_per_second"]



# ---------------------------------------------------------------------------------------- data

# ---------------------------------------------------------------------------------------- optimizer
def _param_groups(model, config: MultiLevelTrainConfig, stage: str) -> list[dict]:
    """Optimizer parameter groups of ``stage`` (module docstring): ``base`` at ``lr_base``; in
    stage 2 each corrective branch at its rate, the weight matrices of its corrective space
    ``F(δ|Θ)`` (``M`` of ``M δ + b``; every linear weight of the ReLU variants) at the rate times
    ``corrective_weight_lr_mult``. All rates times ``lr_scale``; empty groups are left out. Stage 1's
    base rate is ``lr_pretrain`` when given."""
    groups = model.parameter_groups()
    scale = config.lr_scale
    base_rate = config.lr_pretrain if stage == STAGES[0] and config.lr_pretrain is not None else config.lr_base
    out = [{"params": list(groups["base"]), "lr": base_rate * scale, "name": "base"}]
    if stage == STAGES[1]:
        spaces = {"shape_corrective": getattr(model, "shape_corrective", None),
                  "reflectance_corrective": getattr(model, "reflectance_corrective", None)}
        for key, lr in (("shape_corrective", config.lr_shape), ("reflectance_corrective", config.lr_reflectance)):
            space = spaces[key]
            matrices = {id(p) for p in space.parameters() if p.ndim >= 2} if space is not None else set()
            params = list(groups.get(key, []))
            out.append({"params": [p for p in params if id(p) in matrices],
                        "lr": lr * scale * config.corrective_weight_lr_mult, "name": f"{key}/weights"})
            out.append({"params": [p for p in params if id(p) not in matrices], "lr": lr * scale, "name": key})
    return [g for g in out if g["params"]]


def _optimizer(model, config: MultiLevelTrainConfig, stage: str) -> torch.optim.Optimizer:
    groups = _param_groups(model, config, stage)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, fused=True) if config.adam_fused else torch.optim.Adam(groups)
    return torch.optim.Adadelta(groups, rho=0.9, eps=config.adadelta_eps)


def _set_frozen(model, stage: str) -> None:
    """Stage 1: the corrective branches get no gradients (frozen); stage 2: everything trains."""
    groups = model.parameter_groups()
    for key in ("shape_corrective", "reflectance_corrective"):
        for p in groups.get(key, []):
            p.requires_grad_(stage == STAGES[1])


# ---------------------------------------------------------------------------------------- evaluation

def evaluate_multilevel(model, dataset, *, device="cpu", batch_size: int = 16, limit: int | None = None) -> dict[str, float]:
    """Mean metrics of a multi-level model on a dataset (first ``limit`` samples):
    ``photo_base``/``photo_final`` (photometric error of each level's shaded render against the
    image over the dataset's face mask, RGB in [0,1]), ``land_px`` (2D landmark error of the final
    level, pixels, landmarks the model defines), ``shape_mm`` (final-level vertices vs the
    ground truth, head frame, a diagnostic only), ``offset_mm`` / ``refl_offset`` (mean per-vertex
    norm of the corrective shape offsets, mm, and reflectance offsets, RGB). The errors are
    :mod:`facebench.benchmark.metrics`' (``photometric_error``, ``landmark_error_px``,
    ``shape_error_mm``), computed in torch on ``device``."""
    from facebench.benchmark import metrics

    device = resolve_device(device)
    sums = {"photo_base": 0.0, "photo_final": 0.0, "land_px": 0.0, "shape_mm": 0.0, "offset_mm": 0.0,
            "refl_offset": 0.0}
    count = 0
    valid = model.landmark_indices >= 0
    for indices, output, batch in iterate_reconstructions(model, dataset, device=device, batch_size=batch_size,
                                                          limit=limit):
        target = batch["images"].permute(0, 2, 3, 1)
        for level in ("base", "final"):
            rendered = model.render(output, level).image
            sums[f"photo_{level}"] += float(metrics.photometric_error(rendered, target, batch["masks"]).sum())
        lm = model.landmarks_2d(output, "final")
        sums["land_px"] += float(metrics.landmark_error_px(batch["landmarks_2d"], lm, valid=valid).sum())
        gt = torch.from_numpy(np.asarray(dataset.read("vertices", int(indices[0]), int(indices[-1]) + 1))).to(device)
        sums["shape_mm"] += float(metrics.shape_error_mm(gt.float(), output.vertices_final).sum())
        sums["offset_mm"] += float(torch.linalg.norm(output.shape_offsets, dim=-1).mean(dim=1).sum())
        sums["refl_offset"] += float(torch.linalg.norm(output.reflectance_offsets, dim=-1).mean(dim=1).sum())
        count += len(indices)
    return {k: v / max(count, 1) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------- training
def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _config_block(config: MultiLevelTrainConfig, face_model) -> dict:
    return {"train": config.as_dict(), "model": config.model.to_dict(), "model_name": face_model.name,
            "model_digest": face_model.digest(), "method": config.method_name,
            "weights": {s: stage_weights(s, config.weights).to_dict() for s in STAGES},
            "facebench_version": __version__}


def _warm_start(model, path: Path) -> int:
    """Copy the parameters and buffers of ``path``'s model whose names and shapes match; return
    how many tensors were copied."""
    source = load_multilevel_checkpoint(path)["model"]
    state = source.get("state_dict", source) if isinstance(source, dict) else {}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k in own and own[k].shape == v.shape}
    if not matched:
        raise InputFileError(path, "no parameter of this checkpoint fits the model to warm-start")
    own.update(matched)
    model.load_state_dict(own)
    return len(matched)


def train_multilevel(
    config: MultiLevelTrainConfig,
    progress: Callable[[str, int, int, float], None] | None = None,
    *,
    model=None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> MultiLevelTrainResult:
    """Train a :class:`MultiLevelModel` as ``config`` says (module docstring).

    Args:
        progress: after every iteration: ``progress(stage, iterations_done, total_iterations, loss)``.
        model: the face model (default: the one the training set names).
        on_log: with each new ``log.csv`` row.

    Returns:
        :class:`MultiLevelTrainResult`. Raises FacebenchError / InputFileError (one line) on bad
        input before the first iteration, and FacebenchError when the loss becomes NaN/infinite.
    """
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads is not None and config.threads >= 1:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, model, progress, on_log, started)
    finally:
        torch.set_num_threads(threads_before)


@dataclasses.dataclass
class _Run:
    """The state of one :func:`train_multilevel` call, shared by its steps (:func:`_setup_run`,
    :func:`_start_stage`, :func:`_train_stage`, :func:`_train_step`, :func:`_log_window`,
    :func:`_save_checkpoint`).

    ``net``: the :class:`MultiLevelModel` being trained, on ``device``; ``data``: the training
    images (:class:`TrainingImages`); ``block``: the ``config`` block of ``config.json`` and of the
    checkpoints; ``checkpoint``: the checkpoint the run resumed from (None for a new run).
    ``done``: iterations done, both stages counted together (= the 0-based index of the next
    iteration); ``history``: the rows of ``log.csv``. ``stage``/``optimizer``/``loss_fn``: those of
    the current stage (None before the first). ``window``: sums of the loss and of every loss term
    since the last ``log.csv`` row, over ``window_n`` iterations that started at ``window_t0``
    (``time.perf_counter()`` seconds). ``rates``: per stage, ``[training images, seconds]`` of this
    call's iterations. ``last_val``: the last validation metrics (:func:`evaluate_multilevel`)."""

    config: MultiLevelTrainConfig
    face_model: Any
    train_set: Any
    val_set: Any
    net: Any
    data: TrainingImages
    device: torch.device
    out: Path
    block: dict[str, Any]
    checkpoint: dict[str, Any] | None
    done: int
    history: list[dict[str, Any]]
    stage: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    loss_fn: Any = None
    window: dict[str, float] = dataclasses.field(default_factory=dict)
    window_n: int = 0
    window_t0: float = 0.0
    rates: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {s: [0.0, 0.0] for s in STAGES})
    last_val: dict[str, float] = dataclasses.field(default_factory=dict)


def _train(config, face_model, progress, on_log, started) -> MultiLevelTrainResult:
    """The body of :func:`train_multilevel` (torch's thread count already set): set up or resume the
    run (:func:`_setup_run`), then for each remaining stage start it (:func:`_start_stage`) and
    train it to its end (:func:`_train_stage`). ``started``: ``time.perf_counter()`` at the call.
    Returns the :class:`MultiLevelTrainResult` of this call."""
    run = _setup_run(config, face_model)
    while run.done < config.total_iters:
        _start_stage(run, config.stage_at(run.done))
        _train_stage(run, progress, on_log)
    if run.optimizer is None:  # nothing left to do (a resumed, finished run): keep its files
        write_log(run.history, run.out / LOG, _log_columns(run.history))
    ips = {s: (r[0] / r[1] if r[1] > 0 else float("nan")) for s, r in run.rates.items()}
    return MultiLevelTrainResult(out=run.out, iterations_done=run.done, history=run.history, val=run.last_val,
                                 images_per_second=ips, seconds=time.perf_counter() - started)


def _setup_run(config: MultiLevelTrainConfig, face_model) -> _Run:
    """Set up a new run or resume one. Checks everything first (:func:`check_train_config`), then
    seeds torch with ``config.seed`` and builds the model (the ``MultiLevelModel`` of the config,
    intrinsics ``K`` (3, 3) of the training set, mean translation of the training set in mm), which
    is replaced by the checkpoint's model on resume or warm-started from ``config.init_from``
    (:func:`_warm_start`); moves it to the device in training mode; creates the run folder and
    writes ``config.json`` (``first_iteration``: the iterations already done). On resume, restores
    the history, the iteration count and the torch RNG state of the checkpoint (last, so the random
    numbers continue where the interrupted run stopped; keep the order of these steps)."""
    from facebench.baselines.determinism import deterministic_torch, restore_wall_clock
    from facebench.baselines.tewari2018.model import MultiLevelModel

    deterministic_torch()  # bit-exact reruns for a seed, thread count and device (baselines/determinism.py)
    face_model, train_set, val_set, K, checkpoint = check_train_config(config, model=face_model)
    device = resolve_device(config.device)
    out = Path(config.out)
    torch.manual_seed(config.seed)
    net = MultiLevelModel(face_model, config.model, K=K, mean_t=mean_translation(train_set))
    if checkpoint is not None:
        net = model_from_checkpoint(checkpoint, face_model, path=out / CHECKPOINT)
    elif config.init_from is not None:
        _warm_start(net, Path(config.init_from))
    net.to(device)
    net.train()
    history: list[dict] = (restore_wall_clock(list(checkpoint.get("history", [])), out / LOG)
                           if checkpoint is not None else [])
    done = int(checkpoint.get("iteration", 0)) if checkpoint is not None else 0
    out.mkdir(parents=True, exist_ok=True)
    block = _config_block(config, face_model)
    _write_json({**block, "device": str(device), "torch_version": torch.__version__, "first_iteration": done},
                out / CONFIG)
    data = TrainingImages(train_set)
    if checkpoint is not None:
        _set_rng_state(checkpoint["rng"], device)
    return _Run(config=config, face_model=face_model, train_set=train_set, val_set=val_set, net=net, data=data,
                device=device, out=out, block=block, checkpoint=checkpoint, done=done, history=history,
                window_t0=time.perf_counter())


def _start_stage(run: _Run, stage: str) -> None:
    """Enter ``stage`` (``"pretrain"`` or ``"finetune"``) at iteration ``run.done``: freeze the
    corrective branches in stage 1, unfreeze them in stage 2 (:func:`_set_frozen`); make the stage's
    new optimizer (:func:`_optimizer`), restored from the checkpoint when the run resumes at exactly
    this iteration of this stage; and the stage's loss (:class:`MultiLevelLoss` of the base level in
    stage 1, of both levels in stage 2, weights :func:`stage_weights`)."""
    from facebench.baselines.tewari2018.loss import MultiLevelLoss

    config, checkpoint = run.config, run.checkpoint
    run.stage = stage
    _set_frozen(run.net, stage)
    run.optimizer = _optimizer(run.net, config, stage)
    if checkpoint is not None and checkpoint.get("optimizer_stage") == stage and \
            int(checkpoint["iteration"]) == run.done:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
    levels = ("base",) if stage == STAGES[0] else ("base", "final")
    run.loss_fn = MultiLevelLoss(run.net, stage_weights(stage, config.weights), levels=levels).to(run.device)


def _train_stage(run: _Run, progress, on_log) -> None:
    """Train the current stage from iteration ``run.done`` to the stage's end (or the training's,
    ``config.total_iters``): per iteration, one :func:`_train_step` and ``progress(stage, done,
    total, loss)``; a ``log.csv`` row (:func:`_log_window`) every ``log_every`` iterations, at each
    evaluation and at the stage end, with the validation metrics every ``eval_every`` iterations and
    at the stage end (when there is a validation set); a checkpoint (:func:`_save_checkpoint`)
    every ``checkpoint_every`` iterations and at the stage end (0: only at stage ends)."""
    config, stage = run.config, run.stage
    while True:
        value = _train_step(run)
        done = run.done
        if progress is not None:
            progress(stage, done, config.total_iters, value)
        stage_end = done == config.total_iters or config.stage_at(done) != stage
        evaluate_now = run.val_set is not None and (stage_end or (config.eval_every and done % config.eval_every == 0))
        log_now = stage_end or evaluate_now or (config.log_every and done % config.log_every == 0)
        if log_now:
            _log_window(run, evaluate=evaluate_now, on_log=on_log)
        if stage_end or (config.checkpoint_every and done % config.checkpoint_every == 0):
            _save_checkpoint(run)
        if stage_end:
            return


def _train_step(run: _Run) -> float:
    """One iteration of the current stage: the batch of iteration ``run.done`` (``config.batch``
    training images, :func:`batch_indices`, a function of ``(seed, iteration)`` only; images
    (B, 3, S, S) in [0, 1], masks, 2D landmarks px), forward and decode, the stage's loss, backward
    and one optimizer step. Advances ``run.done``, adds the loss and its terms to the log window and
    the images and seconds to the stage's rate, and returns the loss (a float). Raises
    FacebenchError when the loss is NaN or infinite."""
    config, stage = run.config, run.stage
    t0 = time.perf_counter()
    indices = batch_indices(len(run.train_set), config.batch, run.done, config.seed)
    images, masks, landmarks = run.data.get(indices, run.device)
    output = run.net.decode(run.net(images))
    loss, terms = run.loss_fn(output, images, landmarks, masks if config.use_masks else None)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FacebenchError(f"training diverged: the loss is {value} at iteration {run.done + 1} ({stage}); "
                             "lower --lr-scale or the loss weights")
    run.done += 1
    run.rates[stage][0] += len(indices)
    run.rates[stage][1] += time.perf_counter() - t0
    run.window["loss"] = run.window.get("loss", 0.0) + value
    for key, term in terms.items():
        run.window[key] = run.window.get(key, 0.0) + float(term.detach())
    run.window_n += 1
    return value


def _log_window(run: _Run, *, evaluate: bool, on_log) -> None:
    """Close the log window with one ``log.csv`` row appended to ``run.history`` and passed to
    ``on_log``: ``iteration`` (``run.done``), ``stage``, the window's mean loss and loss terms; with
    ``evaluate``, the validation metrics ``val_*`` (:func:`evaluate_multilevel` on at most
    ``val_limit`` validation images, also kept in ``run.last_val``; the model is back in training
    mode after); ``seconds`` (wall-clock seconds of the window, evaluation excluded) and
    ``images_per_second`` (training images of the window per second). Then start a new window."""
    config = run.config
    seconds = time.perf_counter() - run.window_t0
    row: dict[str, Any] = {"iteration": run.done, "stage": run.stage}
    row.update({k: v / run.window_n for k, v in run.window.items()})
    if evaluate:
        run.last_val = evaluate_multilevel(run.net, run.val_set, device=run.device, batch_size=config.val_batch,
                                           limit=config.val_limit)
        run.net.train()
        row.update({f"val_{k}": v for k, v in run.last_val.items()})
    row["seconds"] = seconds
    row["images_per_second"] = run.window_n * config.batch / seconds if seconds > 0 else float("nan")
    run.history.append(row)
    if on_log is not None:
        on_log(row)
    run.window, run.window_n, run.window_t0 = {}, 0, time.perf_counter()


def _save_checkpoint(run: _Run) -> None:
    """Write ``model.pt`` atomically (``format``, ``version``, the config block, the model, the
    current stage's optimizer and its stage, ``iteration`` = ``run.done``, the history and the
    torch RNG state; module docstring) and rewrite ``log.csv`` with the whole history. The
    checkpoint's history has no wall-clock fields, so reruns give identical bytes."""
    from facebench.baselines.determinism import without_wall_clock

    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": run.block,
             "model": run.net.state_for_checkpoint(), "optimizer": run.optimizer.state_dict(),
             "optimizer_stage": run.stage, "iteration": run.done, "history": without_wall_clock(run.history),
             "rng": _rng_state(run.device)}
    save_checkpoint(state, run.out / CHECKPOINT)
    write_log(run.history, run.out / LOG, _log_columns(run.history))
