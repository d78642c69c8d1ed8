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

import csv
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench import __version__
from facebench.atomic import atomic_path
from facebench.atomic import write_json as _write_json
from facebench.device import resolve_device
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "STAGES",
    "DEMO_LR_SCALE",
    "VAL_COLUMNS",
    "MultiLevelTrainConfig",
    "MultiLevelTrainResult",
    "parse_weight_overrides",
    "stage_weights",
    "check_train_config",
    "train_multilevel",
    "batch_indices",
    "load_multilevel_checkpoint",
    "is_multilevel_checkpoint",
    "model_from_checkpoint",
    "evaluate_multilevel",
    "iterate_reconstructions",
    "predict_multilevel",
]

CHECKPOINT_FORMAT = "facebench-multilevel-checkpoint"
CHECKPOINT_VERSION = 1
STAGES = ("pretrain", "finetune")
#: Multiplier of the paper's AdaDelta learning rates in our defaults (module docstring).
DEMO_LR_SCALE = 300.0
#: Validation columns of ``log.csv``.
VAL_COLUMNS = ("val_photo_base", "val_photo_final", "val_land_px", "val_shape_mm", "val_offset_mm",
               "val_refl_offset")
CHECKPOINT, LOG, CONFIG = "model.pt", "log.csv", "config.json"
_WEIGHT_KEYS = ("w_photo", "w_land", "w_reg", "w_rstd", "w_smo", "w_sta", "w_ref", "w_glo", "sparsity_p")


def _default_model_config():
    from facebench.baselines.multilevel import MultiLevelConfig

    return MultiLevelConfig()


@dataclasses.dataclass
class MultiLevelTrainConfig:
    """What to train. Paths; iterations per stage; ``batch`` images per iteration; learning rates
    are the paper's AdaDelta rates before ``lr_scale`` (module docstring).

    ``weights`` overrides loss weights: ``{"w_smo": 0.0}`` sets a weight in both stages,
    ``{"finetune.w_smo": 0.0}`` / ``{"pretrain.w_photo": 1.0}`` in one stage only.
    ``model``: a :class:`~facebench.baselines.multilevel.MultiLevelConfig`; its ``image_size`` must
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
    from facebench.baselines.multilevel_loss import MultiLevelWeights

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


def _shared_K(dataset) -> np.ndarray:
    """The one intrinsics matrix ``(3,3)`` of a dataset; InputFileError when K varies per sample."""
    if dataset.shared_K is not None:
        return np.asarray(dataset.shared_K, np.float64)
    K = np.asarray(dataset.array("K"), np.float64)
    if not np.allclose(K, K[:1], rtol=0, atol=1e-9):
        raise InputFileError(dataset.path, "intrinsics K differ between samples; the multi-level model renders "
                                           "with one K (generate the set with one focal length)")
    return K[0]


def _check_images(dataset, size: int) -> None:
    hw = dataset.attrs.get("image_size")
    if hw is None:
        hw = list(dataset.read("images", 0, 1).shape[1:3])
    h, w = (int(v) for v in hw)
    if h != w:
        raise InputFileError(dataset.path, f"images are {h}x{w} px; the multi-level model takes square images")
    if h != size:
        raise InputFileError(dataset.path, f"images are {h} px but the model configuration says image_size={size} "
                                           "(set --image-size to the images' size)")


def check_train_config(config: MultiLevelTrainConfig, *, model=None):
    """Check everything before the first iteration; return ``(face model, train set, val set,
    K (3,3), checkpoint or None)``. Raises FacebenchError / InputFileError (one line): unknown
    optimizer, iterations < 0, batch < 1, rates <= 0, negative loss weights, a model configuration
    the face model cannot serve (``MultiLevelConfig.check``: C > V, fewer modes...), datasets of
    another face model, other image sizes or intrinsics, and the run folder rules (a non-empty
    folder needs ``resume`` or ``overwrite``; a resume needs a checkpoint of the same model)."""
    from facebench.baselines.training import open_run_folder, open_training_sets

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
    _check_images(train_set, config.model.image_size)
    K = _shared_K(train_set)
    if val_set is not None:
        _check_images(val_set, config.model.image_size)
        if not np.allclose(_shared_K(val_set), K, rtol=0, atol=1e-6):
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
def load_multilevel_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a multi-level checkpoint with ``weights_only=True``; InputFileError (one line) when
    missing, unreadable, or not a facebench multi-level checkpoint of a known version."""
    from facebench.baselines.predict import read_checkpoint

    return read_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="multi-level",
                           keys=("config", "model"))


def is_multilevel_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a multi-level checkpoint (the ``predict`` / Table 3 dispatch); looks at
    the header only (tensors memory-mapped), so a 0.5 GB checkpoint is not read twice."""
    from facebench.baselines.predict import checkpoint_format

    return checkpoint_format(path) == CHECKPOINT_FORMAT


def model_from_checkpoint(checkpoint: dict, morphable_model, *, path: str | Path | None = None):
    """The trained :class:`MultiLevelModel` of a checkpoint dict, for ``morphable_model``;
    FacebenchError (naming ``path``) for another face model or weights that do not fit."""
    from facebench.baselines.multilevel import MultiLevelModel

    where = f"{path}: " if path is not None else ""
    digest = checkpoint["config"].get("model_digest")
    if digest is not None and digest != morphable_model.digest():
        raise FacebenchError(f"{where}trained with another face model (digest {str(digest)[:12]}, "
                             f"loaded {morphable_model.digest()[:12]})")
    try:
        return MultiLevelModel.from_checkpoint(checkpoint["model"], morphable_model)
    except (FacebenchError, KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FacebenchError(f"{where}cannot rebuild the multi-level model ({first[:200]})") from None


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)



def _log_columns(history: list[dict]) -> list[str]:
    fixed = ["iteration", "stage", "loss"]
    terms = sorted({k for row in history for k in row if "/" in k or k in ("reg", "rstd", "smo", "sta", "ref", "glo")})
    rest = sorted({k for row in history for k in row} - set(fixed) - set(terms) - set(VAL_COLUMNS)
                  - {"seconds", "images_per_second"})
    return [*fixed, *terms, *rest, *VAL_COLUMNS, "seconds", "images_per_second"]


def _write_log(history: list[dict], path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_log_columns(history), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


# ---------------------------------------------------------------------------------------- data
def batch_indices(n: int, batch: int, iteration: int, seed: int) -> np.ndarray:
    """Sample indices of iteration ``iteration`` (0-based): positions ``[iteration·batch,
    (iteration+1)·batch)`` of the concatenation of per-epoch permutations of ``range(n)``, epoch
    ``e`` permuted by ``numpy.random.default_rng((seed, e))``. Depends on nothing else (resume)."""
    positions = np.arange(iteration * batch, (iteration + 1) * batch)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(batch, np.int64)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng((int(seed), int(epoch))).permutation(n)
        where = epochs == epoch
        out[where] = permutation[offsets[where]]
    return out


class _Images:
    """Training inputs of a dataset: ``images (b,3,H,W)`` float [0,1], ``masks (b,H,W)`` bool,
    ``landmarks_2d (b,68,2)`` px; held in memory when small (uint8), read lazily otherwise."""

    def __init__(self, dataset, max_bytes: int = 512 * 2**20):
        self.dataset = dataset
        h, w = (int(v) for v in dataset.read("images", 0, 1).shape[1:3])
        self.cached = len(dataset) * h * w * 4 <= max_bytes
        if self.cached:
            self.images = dataset.array("images")
            self.masks = dataset.array("masks")
            self.landmarks = dataset.array("landmarks_2d")

    def get(self, indices: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cached:
            images, masks, landmarks = self.images[indices], self.masks[indices], self.landmarks[indices]
        else:
            order = np.argsort(indices)
            rows = [self.dataset[int(i)] for i in indices[order]]
            back = np.argsort(order)
            images = np.stack([rows[j]["images"] for j in back])
            masks = np.stack([rows[j]["masks"] for j in back])
            landmarks = np.stack([rows[j]["landmarks_2d"] for j in back])
        images_t = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        return (images_t.contiguous(), torch.from_numpy(np.ascontiguousarray(masks)).to(device),
                torch.from_numpy(np.ascontiguousarray(landmarks)).to(device).float())


def _mean_translation(dataset) -> np.ndarray:
    total, n = np.zeros(3), len(dataset)
    for start in range(0, n, 4096):
        total += np.asarray(dataset.read("t", start, min(n, start + 4096)), np.float64).sum(axis=0)
    return total / n


# ---------------------------------------------------------------------------------------- optimizer
def _param_groups(model, config: MultiLevelTrainConfig, stage: str) -> list[dict]:
    """Optimizer parameter groups of ``stage`` (module docstring): ``base`` at ``lr_base``; in
    stage 2 each corrective branch at its rate, the weight matrices of its corrective space
    ``F(δ|Θ)`` (``M`` of ``M δ + b``; every linear weight of the ReLU variants) at the rate times
    ``corrective_weight_lr_mult``. All rates times ``lr_scale``; empty groups are left out."""
    groups = model.parameter_groups()
    scale = config.lr_scale
    out = [{"params": list(groups["base"]), "lr": config.lr_base * scale, "name": "base"}]
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
        return torch.optim.Adam(groups)
    return torch.optim.Adadelta(groups, rho=0.9, eps=config.adadelta_eps)


def _set_frozen(model, stage: str) -> None:
    """Stage 1: the corrective branches get no gradients (frozen); stage 2: everything trains."""
    groups = model.parameter_groups()
    for key in ("shape_corrective", "reflectance_corrective"):
        for p in groups.get(key, []):
            p.requires_grad_(stage == STAGES[1])


# ---------------------------------------------------------------------------------------- evaluation
def iterate_reconstructions(model, dataset, *, device, batch_size: int = 16, limit: int | None = None,
                            with_images: bool = False) -> Iterator[tuple[np.ndarray, Any, dict[str, torch.Tensor]]]:
    """Yield ``(indices, MultiLevelOutput, batch)`` over the first ``limit`` samples of a
    :class:`FaceDataset` in order, in eval mode without gradients; ``batch`` holds ``images
    (b,3,H,W)`` [0,1], ``masks (b,H,W)``, ``landmarks_2d (b,68,2)`` on ``device``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    source = _Images(dataset)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                indices = np.arange(start, min(n, start + batch_size))
                images, masks, landmarks = source.get(indices, device)
                output = model.reconstruct(images)
                yield indices, output, {"images": images, "masks": masks, "landmarks_2d": landmarks}
    finally:
        model.train(was_training)


def evaluate_multilevel(model, dataset, *, device="cpu", batch_size: int = 16, limit: int | None = None) -> dict[str, float]:
    """Mean metrics of a multi-level model on a dataset (first ``limit`` samples):
    ``photo_base``/``photo_final`` (photometric error of each level's shaded render against the
    image over the dataset's face mask, RGB in [0,1]), ``land_px`` (2D landmark error of the final
    level, pixels, landmarks the model defines), ``shape_mm`` (final-level vertices vs the
    ground truth, head frame, a diagnostic only), ``offset_mm`` / ``refl_offset`` (mean per-vertex
    norm of the corrective shape offsets, mm, and reflectance offsets, RGB)."""
    from facebench.baselines.multilevel_loss import photometric_error

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
            sums[f"photo_{level}"] += float(photometric_error(rendered, target, batch["masks"]).sum())
        lm = model.landmarks_2d(output, "final")
        distance = torch.linalg.norm(lm - batch["landmarks_2d"], dim=-1)
        sums["land_px"] += float(distance[:, valid].mean(dim=1).sum())
        gt = torch.from_numpy(np.asarray(dataset.read("vertices", int(indices[0]), int(indices[-1]) + 1))).to(device)
        sums["shape_mm"] += float(torch.linalg.norm(output.vertices_final - gt.float(), dim=-1).mean(dim=1).sum())
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


def _train(config, face_model, progress, on_log, started) -> MultiLevelTrainResult:
    from facebench.baselines.multilevel import MultiLevelModel
    from facebench.baselines.multilevel_loss import MultiLevelLoss

    face_model, train_set, val_set, K, checkpoint = check_train_config(config, model=face_model)
    device = resolve_device(config.device)
    out = Path(config.out)
    torch.manual_seed(config.seed)
    net = MultiLevelModel(face_model, config.model, K=K, mean_t=_mean_translation(train_set))
    if checkpoint is not None:
        net = model_from_checkpoint(checkpoint, face_model, path=out / CHECKPOINT)
    elif config.init_from is not None:
        _warm_start(net, Path(config.init_from))
    net.to(device)
    net.train()
    history: list[dict] = list(checkpoint.get("history", [])) if checkpoint is not None else []
    done = int(checkpoint.get("iteration", 0)) if checkpoint is not None else 0
    out.mkdir(parents=True, exist_ok=True)
    block = _config_block(config, face_model)
    _write_json({**block, "device": str(device), "torch_version": torch.__version__, "first_iteration": done},
                out / CONFIG)
    data = _Images(train_set)
    stage, optimizer, loss_fn = None, None, None
    if checkpoint is not None:
        _set_rng_state(checkpoint["rng"], device)
    window: dict[str, float] = {}
    window_n, window_t0 = 0, time.perf_counter()
    rates: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}  # images, seconds
    last_val: dict[str, float] = {}

    def save() -> None:
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": block,
                 "model": net.state_for_checkpoint(), "optimizer": optimizer.state_dict(),
                 "optimizer_stage": stage, "iteration": done, "history": history, "rng": _rng_state(device)}
        _save(state, out / CHECKPOINT)
        _write_log(history, out / LOG)

    while done < config.total_iters:
        if config.stage_at(done) != stage:
            stage = config.stage_at(done)
            _set_frozen(net, stage)
            optimizer = _optimizer(net, config, stage)
            if checkpoint is not None and checkpoint.get("optimizer_stage") == stage and \
                    int(checkpoint["iteration"]) == done:
                optimizer.load_state_dict(checkpoint["optimizer"])
            levels = ("base",) if stage == STAGES[0] else ("base", "final")
            loss_fn = MultiLevelLoss(net, stage_weights(stage, config.weights), levels=levels).to(device)
        t0 = time.perf_counter()
        indices = batch_indices(len(train_set), config.batch, done, config.seed)
        images, masks, landmarks = data.get(indices, device)
        output = net.decode(net(images))
        loss, terms = loss_fn(output, images, landmarks, masks if config.use_masks else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FacebenchError(f"training diverged: the loss is {value} at iteration {done + 1} ({stage}); "
                                 "lower --lr-scale or the loss weights")
        done += 1
        rates[stage][0] += len(indices)
        rates[stage][1] += time.perf_counter() - t0
        window["loss"] = window.get("loss", 0.0) + value
        for key, term in terms.items():
            window[key] = window.get(key, 0.0) + float(term.detach())
        window_n += 1
        if progress is not None:
            progress(stage, done, config.total_iters, value)
        stage_end = done == config.total_iters or config.stage_at(done) != stage
        evaluate_now = val_set is not None and (stage_end or (config.eval_every and done % config.eval_every == 0))
        log_now = stage_end or evaluate_now or (config.log_every and done % config.log_every == 0)
        if log_now:
            seconds = time.perf_counter() - window_t0
            row: dict[str, Any] = {"iteration": done, "stage": stage}
            row.update({k: v / window_n for k, v in window.items()})
            if evaluate_now:
                last_val = evaluate_multilevel(net, val_set, device=device, batch_size=config.val_batch,
                                               limit=config.val_limit)
                net.train()
                row.update({f"val_{k}": v for k, v in last_val.items()})
            row["seconds"] = seconds
            row["images_per_second"] = window_n * config.batch / seconds if seconds > 0 else float("nan")
            history.append(row)
            if on_log is not None:
                on_log(row)
            window, window_n, window_t0 = {}, 0, time.perf_counter()
        if stage_end or (config.checkpoint_every and done % config.checkpoint_every == 0):
            save()
    if optimizer is None:  # nothing left to do (a resumed, finished run): keep its files
        _write_log(history, out / LOG)
    ips = {s: (r[0] / r[1] if r[1] > 0 else float("nan")) for s, r in rates.items()}
    return MultiLevelTrainResult(out=out, iterations_done=done, history=history, val=last_val,
                                 images_per_second=ips, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------------------------------- predict
def predict_multilevel(checkpoint: str | Path, dataset: str | Path, out: str | Path, *, codes: str | Path | None = None,
                       device="cpu", batch_size: int = 32, method: str | None = None, model=None,
                       model_path: str | Path | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write the final-level predictions of a trained multi-level model on ``dataset``.

    ``out``: an HDF5 submission ``facebench score`` takes (``ids``, ``vertices (N,V,3)`` float32 mm
    head frame, ``q``, ``t`` mm, the dataset's ``landmark_indices``; attrs ``method``, ``model``,
    ``iteration``), written atomically. ``codes``: also the compact coefficient file of
    :func:`facebench.baselines.multilevel.encode_reconstruction` (every regressed parameter,
    float32). Returns ``{"submission": out, "codes": codes}`` (codes only when asked).

    A **scan dataset** (MICC, FaceWarehouse) is predicted like the regressor does it
    (:func:`facebench.baselines.predict.predict`): its sRGB crops decoded to linear RGB and resized to
    the model's input, the final level's vertices with the face model's ``faces`` and the vertex
    indices of the dataset's scan landmark set, no pose (no codes); the face model is the one named
    by the checkpoint (``model_path`` for models read from a file).
    Raises InputFileError / FacebenchError (one line) on bad input.
    """
    from facebench.baselines.multilevel import MultiLevelParams, encode_reconstruction
    from facebench.baselines.predict import _check_model, model_for_dataset
    from facebench.benchmark.submission import SubmissionWriter
    from facebench.datasets.dataset_file import FaceDataset

    out = Path(out)
    for path in (out, codes):
        if path is not None and Path(path).exists() and not overwrite:
            raise InputFileError(path, "exists already (use --overwrite to replace it)")
    if batch_size < 1:
        raise FacebenchError(f"--batch must be >= 1, got {batch_size}")
    device = resolve_device(device)
    ckpt = load_multilevel_checkpoint(checkpoint)
    reader = FaceDataset(dataset)
    if reader.is_scan_dataset:
        return {"submission": _predict_scans(ckpt, checkpoint, reader, out, device=device, batch_size=batch_size,
                                             method=method, model=model, model_path=model_path)}
    if model is None:
        model = model_for_dataset(reader)
    else:
        _check_model(reader, model)
    net = model_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    _check_images(reader, net.config.image_size)
    ids = reader.ids
    run = ckpt["config"]
    attrs = {"iteration": int(ckpt.get("iteration", 0)), "model": model.name,
             "corrective_kind": str(run["model"].get("corrective_kind")),
             "n_correctives": int(run["model"].get("n_correctives", 0))}
    params: list = []
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices, method=method or run.get("method", "multilevel"),
                          landmark_indices=reader.landmark_indices, with_pose=True, attrs=attrs) as writer:
        for indices, output, _ in iterate_reconstructions(net, reader, device=device, batch_size=batch_size):
            p = output.params
            q = p.q / torch.linalg.norm(p.q, dim=-1, keepdim=True)
            writer.write(int(indices[0]), ids=[ids[i] for i in indices],
                         vertices=output.vertices_final.double().cpu().numpy(),
                         q=q.double().cpu().numpy(), t=p.t.double().cpu().numpy())
            if codes is not None:
                params.append(p.detach().to("cpu"))
    written = {"submission": out}
    if codes is not None:
        joined = {k: torch.cat([p.as_dict()[k] for p in params]) for k in params[0].as_dict()}
        written["codes"] = Path(encode_reconstruction(codes, MultiLevelParams(**joined), ids, config=net.config,
                                                      model_digest=model.digest()))
    return written


def _predict_scans(ckpt: dict, checkpoint, reader, out: Path, *, device, batch_size: int, method, model,
                   model_path) -> Path:
    """:func:`predict_multilevel` on a scan dataset (see there)."""
    from facebench.baselines.predict import scan_dataset_images
    from facebench.benchmark.landmark_sets import landmark_indices_for
    from facebench.benchmark.submission import SubmissionWriter

    if model is None:
        from facebench.models import load

        name = str((ckpt.get("model") or {}).get("model") or "")
        try:
            model = load(name, model_path)
        except FacebenchError as error:
            raise FacebenchError(f"{checkpoint}: cannot load the run's face model {name!r} ({error}); give its path") \
                from None
    net = model_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    landmark_set = str(reader.attrs.get("landmark_set", ""))
    try:
        landmark_indices = landmark_indices_for(model, landmark_set)
    except FacebenchError as error:
        raise FacebenchError(f"{reader.path}: {error}") from None
    ids, size = reader.ids, net.config.image_size
    crop = reader.attrs.get("image_size") or ["?", "?"]
    attrs = {"iteration": int(ckpt.get("iteration", 0)), "model": model.name, "landmark_set": landmark_set,
             "image_conversion": f"sRGB {crop[0]}x{crop[1]} -> linear RGB {size}x{size} "
                                 "(decode, then bilinear antialiased resize)"}
    net.eval()
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices,
                          method=method or ckpt["config"].get("method", "multilevel"), faces=np.asarray(model.faces),
                          landmark_indices=landmark_indices, attrs=attrs) as writer, torch.no_grad():
        for start in range(0, len(ids), batch_size):
            stop = min(start + batch_size, len(ids))
            images = scan_dataset_images(reader.read("images", start, stop), (size, size)).to(device)
            output = net.reconstruct(images)
            writer.write(start, ids=ids[start:stop], vertices=output.vertices_final.double().cpu().numpy())
    return out
