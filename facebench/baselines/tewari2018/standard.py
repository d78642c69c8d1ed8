"""The standard mode of Tewari et al. 2018's four evaluations, on faces the base model cannot explain.

``reproduce correctives|corrective-spaces|reflectance|ablation --standard`` and the umbrella
``reproduce tewari2018 --standard`` call :func:`run_standard` with the experiments they need; all
of them share one output folder layout, so that one pre-training per seed and the C = 500 affine
run serve every experiment (the C sweep serves correctives, its C = 500 run is the affine row of
the corrective spaces, the full row of the ablation and the model of the reflectance test).

**Data** (``OUT/data``, generated once, shared by the seeds): ``train.h5`` (:data:`STANDARD`
``train`` images, seed 0), ``val.h5`` (``val``, seed 2: the plateau rule's validation images) and
``test.h5`` (``test``, seed 1), all of the ``out-of-span`` world (:mod:`facebench.datasets.out_of_span`:
held-out identity modes, wrinkle-scale detail and reflectance detail orthogonal to the model's
span, expressions, ±60°/±20°/±10° angles) with the **fixed camera**: the multi-level model renders
with one intrinsics matrix (like the paper's), so the ``tewari2018`` preset's per-image cameras are
left out (a deviation, listed on the card). The base level spans 80 identity, 64 expression, 80
reflectance modes of the 100/64/80-mode ``synthetic`` model, so identity modes 80–99 are beyond it too.

**Runs** (``OUT/seed<S>/runs/NAME``, :data:`RUNS`): ``pretrain`` (stage 1, base level), then each
variant's stage 2 warm-started from it. Every run trains in chunks of ``eval_every`` iterations
and is evaluated on the validation images after each chunk (``log.csv``'s ``val_photo_base`` /
``val_photo_final``, ``val_land_px``); the **plateau rule** (:func:`plateaued`) stops it when,
for both its validation photometric error (of its level: base in stage 1, final in stage 2) and
its validation 2D landmark error, the best value of the last ``patience`` evaluations is not
``tol`` (relative) below the best before them, after at least ``min_iters`` iterations;
``max_iters`` caps it (``done.json`` says which). A run interrupted between chunks
resumes at its last chunk, with its optimizer state, bit for bit like an uninterrupted run.

**Evaluation** (``OUT/seed<S>/eval/NAME.csv``, one row per test image): ``photo_base`` /
``photo_final`` (photometric error of each level's shaded re-rendering, RGB [0, 1], over the face
mask), ``shape_base_mm`` / ``shape_final_mm`` (mean per-vertex distance to the ground truth, head
frame, no alignment), ``refl_*`` (reflectance error of each level, :func:`reflectance_error_both`:
after removing the global shift read as an additive RGB offset, ``_add``, or as a per-channel gain,
``_gain``), ``offset_mm`` / ``refl_offset`` (mean per-vertex size of the corrective offsets).

**Reference rows** (``OUT/oracle/``, :func:`oracle_rows`): the projection oracle of the base
level (the least-squares fit of the ground-truth shape, and of the ground-truth per-vertex
reflectance, in the base level's affine span) and of a C-dimensional linear correction
(``base-oracle + b + U_C U_Cᵀ (r − b)``, with ``b`` the mean and ``U_C`` the top-C principal
directions of the training set's residuals ``r`` beyond the base span: the best fit an affine
corrective space ``M δ + b`` of C columns learned on this training set can give), and the model's
mean reflectance.

**Tables** (``OUT/<experiment>.csv``, ``OUT/comparisons.csv``): every metric's mean over seeds and
test images with a 95% bootstrap CI that resamples seeds and test subjects (:func:`seeds_images_ci`);
paired differences between variants with their CI and a verdict (``resolved`` when the CI
excludes 0, else ``not resolved``). ``OUT/standard.json`` holds the settings: a rerun with other
settings on the same folder is refused (one line); a rerun with the same settings continues.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facebench.atomic import write_csv, write_json
from facebench.baselines.tewari2018.standard_report import _top, experiment_runs, seeds_images_ci, write_report
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "STANDARD",
    "MINIATURE",
    "RUNS",
    "EXPERIMENTS",
    "StandardSettings",
    "plateaued",
    "seeds_images_ci",
    "reflectance_error_both",
    "prepare_standard_data",
    "oracle_rows",
    "train_run",
    "evaluate_run",
    "run_standard",
]

Stage = Callable[[str], None]
Step = Callable[[str, int, int, float], None]

#: The standard budget (module docstring): all four experiments, 3 seeds, the schedule check and the
#: diagnostics; iteration caps sized so that it finishes within 90 minutes of wall time on a 2-core
#: machine shared with other jobs (measured: baselines/tewari2018.md).
STANDARD: dict[str, Any] = {
    "train": 500, "val": 24, "test": 200, "size": 64, "batch": 5, "encoder_width": 32,
    "optimizer": "adam", "lr_scale": 0.1, "lr_pretrain": 0.01, "corrective_weight_lr_mult": 0.1,
    "pretrain_eval_every": 100, "pretrain_min": 300, "pretrain_max": 600,
    "finetune_eval_every": 25, "finetune_min": 50, "finetune_max": 100,
    "patience": 2, "tol": 0.005, "seeds": 3, "seed": 0, "counts": [0, 100, 250, 500],
    "schedule_iters": 160, "world": "out-of-span", "identity_dims": None,
}
#: The miniature (tests, seconds): same pipeline, toy sizes.
MINIATURE: dict[str, Any] = {
    **STANDARD, "train": 12, "val": 4, "test": 6, "size": 32, "batch": 2, "encoder_width": 8,
    "pretrain_eval_every": 2, "pretrain_min": 2, "pretrain_max": 4, "finetune_eval_every": 2,
    "finetune_min": 2, "finetune_max": 2, "seeds": 2, "counts": [0, 4], "schedule_iters": 0,
    "world": "in-span", "identity_dims": 80,
}

#: Stage-2 runs: name -> (model-config changes, loss-weight overrides). ``C{n}`` affine runs of the sweep.
RUNS: dict[str, tuple[dict, dict]] = {
    "relu1": ({"n_correctives": 500, "corrective_kind": "relu1"}, {}),
    "relu2": ({"n_correctives": 500, "corrective_kind": "relu2"}, {}),
    "no-shape-regularizers": ({"n_correctives": 500}, {"w_smo": 0.0, "w_sta": 0.0}),
    "no-reflectance-priors": ({"n_correctives": 500}, {"w_ref": 0.0, "w_glo": 0.0}),
}
EXPERIMENTS = ("correctives", "corrective-spaces", "reflectance", "ablation")


def run_spec(name: str, counts) -> tuple[dict, dict]:
    """``(model changes, weights)`` of a stage-2 run; the ReLU and ablation runs use the top C."""
    if name.startswith("C") and name[1:].isdigit():
        return {"n_correctives": int(name[1:])}, {}
    model, weights = RUNS[name]
    return {**model, "n_correctives": max(counts)}, dict(weights)


@dataclasses.dataclass
class StandardSettings:
    """``out``: the folder; ``values``: :data:`STANDARD` (or :data:`MINIATURE`) with overrides;
    ``threads``: torch CPU threads; ``device``: cpu/cuda."""

    out: Path
    values: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(STANDARD))
    threads: int | None = 1
    device: str = "cpu"

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)


# ---------------------------------------------------------------------------------------- statistics
def plateaued(values: list[float], iterations: list[int], *, patience: int, tol: float, min_iters: int,
              max_iters: int) -> str | None:
    """The plateau rule: ``"cap"`` when the last iteration reached ``max_iters``; ``"plateau"`` when
    at least ``min_iters`` iterations are done and the best of the last ``patience`` validation
    values is not below ``(1 - tol)`` times the best of the earlier ones; else None (train on).
    ``values[k]`` is the validation error after ``iterations[k]`` iterations (increasing)."""
    if iterations and iterations[-1] >= max_iters:
        return "cap"
    if not iterations or iterations[-1] < min_iters or len(values) <= patience:
        return None
    recent, before = min(values[-patience:]), min(values[:-patience])
    return "plateau" if recent > (1.0 - tol) * before else None


# ---------------------------------------------------------------------------------------- reflectance
def reflectance_error_both(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reflectance errors ``(B,)`` after removing the global shift, read two ways: ``add`` — one RGB
    offset per image, ``mean over the mask of (gt − pred)`` added to the prediction
    (:func:`facebench.benchmark.metrics.reflectance_error`); ``gain`` — one gain per channel and
    image, the least-squares ``g_c = Σ gt_c pred_c / Σ pred_c²`` over the mask multiplied into the
    prediction. Both then the mean over the mask of the per-pixel RGB distance. ``pred``, ``gt``
    ``(B, H, W, 3)`` unlit colours in [0, 1]; ``mask (B, H, W)`` bool."""
    from facebench.benchmark.metrics import photometric_error, reflectance_error

    m = mask[..., None].to(pred.dtype)
    gain = (gt * pred * m).sum(dim=(1, 2), keepdim=True) / (pred * pred * m).sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return {"add": reflectance_error(pred, gt, mask), "gain": photometric_error(pred * gain, gt, mask)}


def _world_context(dataset):
    """The generator's context of a synthetic dataset (its model and resolved settings)."""
    from facebench.benchmark import oracle
    from facebench.datasets.generator import ResolvedSettings, _Context

    model = oracle.dataset_model(dataset)
    settings = dataset.attrs.get("settings")
    if not isinstance(settings, dict):
        raise InputFileError(dataset.path, "has no generator settings: the standard mode needs synthetic data")
    return _Context(model, ResolvedSettings(**dict(settings))), model


def subjects_of(dataset) -> np.ndarray:
    """``(N,)`` generator subject of each sample of a synthetic dataset (its ids are the generator's
    sample indices; :func:`facebench.datasets.generator.subject_of`)."""
    from facebench.datasets.generator import ResolvedSettings, subject_of

    settings = dataset.attrs.get("settings")
    if not isinstance(settings, dict):
        raise InputFileError(dataset.path, "has no generator settings: the standard mode needs synthetic data")
    resolved = ResolvedSettings(**dict(settings))
    return np.array([subject_of(resolved, int(str(i).rstrip("m"))) for i in dataset.ids], np.int64)


def true_albedo(dataset) -> np.ndarray:
    """``(N, V, 3)`` float32 ground-truth per-vertex reflectance (linear RGB, clipped to [0, 1]) of a
    synthetic dataset: the in-span reflectance of its coefficients plus the subject's out-of-span
    reflectance detail, as the generator made it (sample ids are the generator's indices)."""
    context, model = _world_context(dataset)
    V = model.n_vertices
    basis = np.asarray(context.bases["reflectance"], np.float64)
    coefficients = np.nan_to_num(np.asarray(dataset.array("reflectance"), np.float64))[:, :basis.shape[1]]
    out = np.empty((len(dataset), V, 3), np.float32)
    for i, subject in enumerate(subjects_of(dataset)):
        albedo = context.refl_mean + basis @ coefficients[i]
        if context.world is not None:
            albedo = albedo + context.world.reflectance_detail(context.resolved.seed, int(subject)).reshape(-1)
        out[i] = np.clip(albedo, 0.0, 1.0).reshape(V, 3)
    return out


# ---------------------------------------------------------------------------------------- data
def _generate(path: Path, n: int, size: int, seed: int, on_stage: Stage, world: str = "out-of-span",
              identity_dims: int | None = None) -> Path:
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.datasets.generator import GeneratorSettings, generate

    if path.is_file():
        try:
            existing = FaceDataset(path)
            if len(existing) == n and list(existing.attrs.get("image_size", [])) == [size, size] \
                    and existing.attrs.get("seed") == seed:
                return path
        except InputFileError:
            pass
    on_stage(f"generating {n} {world} images of {size} px (seed {seed}) in {path}")
    generate(GeneratorSettings(n=n, size=size, seed=seed, world=world, camera="fixed", identity_dims=identity_dims),
             path, overwrite=True, batch_size=16)
    return path


def prepare_standard_data(s: StandardSettings, on_stage: Stage | None = None) -> dict[str, Path]:
    """``{"train", "val", "test"}``: the sets of ``OUT/data`` (module docstring; the miniature uses the
    in-span world with the base level's 80 identity modes, where the base-span oracle is exact)."""
    stage = on_stage or (lambda _m: None)
    folder = Path(s.out) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"world": s.world, "identity_dims": s.identity_dims}
    return {"train": _generate(folder / "train.h5", s.train, s.size, 0, stage, **extra),
            "test": _generate(folder / "test.h5", s.test, s.size, 1, stage, **extra),
            "val": _generate(folder / "val.h5", s.val, s.size, 2, stage, **extra)}


# ---------------------------------------------------------------------------------------- oracles
def _pca(residuals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (D,), U (D, k'))``: mean and top-``k`` principal directions of ``residuals (N, D)``."""
    mean = residuals.mean(axis=0)
    centred = residuals - mean
    if k <= 0 or len(residuals) < 2:
        return mean, np.zeros((residuals.shape[1], 0))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return mean, vt[:min(k, len(vt))].T


def _affine_fit(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``mean + Q Qᵀ (x − mean)`` of ``x (N, D)`` (float64)."""
    c = x - mean
    return mean + (c @ basis) @ basis.T if basis.shape[1] else np.broadcast_to(mean, x.shape).copy()


def oracle_rows(s: StandardSettings, data: dict[str, Path], on_stage: Stage | None = None) -> pd.DataFrame:
    """Per-test-image errors of the reference rows (``OUT/oracle/oracle.csv``, computed once):
    ``shape_mm`` and reflectance errors (both readings) of ``base-oracle`` and of ``C{n}-oracle``
    for each n of the sweep, and the model's ``mean`` reflectance (module docstring)."""
    from facebench.baselines.tewari2018.evaluations import _render_colors, canonical_pose
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.benchmark import metrics, oracle
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.datasets.out_of_span import orthonormal_span

    stage = on_stage or (lambda _m: None)
    path = Path(s.out) / "oracle" / "oracle.csv"
    if path.is_file():
        return pd.read_csv(path, dtype={"id": str})
    stage("reference rows: projection oracles of the base span and of C-dim linear corrections")
    train, test = FaceDataset(data["train"]), FaceDataset(data["test"])
    model = oracle.dataset_model(test)
    config = MultiLevelConfig()
    V = model.n_vertices
    shape_basis = oracle.span_basis(model, min(config.n_identity, model.n_identity),
                                    min(config.n_expression, model.n_expression))
    refl_basis = orthonormal_span(np.asarray(model.reflectance_basis, np.float64).reshape(3 * V, -1)
                                  [:, :min(config.n_reflectance, model.n_reflectance)])
    mean_shape = np.asarray(model.mean, np.float64).reshape(-1)
    mean_refl = np.asarray(model.reflectance_mean, np.float64).reshape(-1)
    x_train = np.asarray(train.array("vertices"), np.float64).reshape(len(train), -1)
    x_test = np.asarray(test.array("vertices"), np.float64).reshape(len(test), -1)
    a_train = true_albedo(train).reshape(len(train), -1).astype(np.float64)
    a_test = true_albedo(test).reshape(len(test), -1).astype(np.float64)
    fits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    base_shape_train = _affine_fit(x_train, mean_shape, shape_basis)
    base_refl_train = _affine_fit(a_train, mean_refl, refl_basis)
    base_shape = _affine_fit(x_test, mean_shape, shape_basis)
    base_refl = _affine_fit(a_test, mean_refl, refl_basis)
    fits["base-oracle"] = (base_shape, base_refl)
    shape_mean_r, shape_u = _pca(x_train - base_shape_train, max(s.counts))
    refl_mean_r, refl_u = _pca(a_train - base_refl_train, max(s.counts))
    for c in s.counts:
        if c == 0:
            continue
        fits[f"C{c}-oracle"] = (base_shape + _affine_fit(x_test - base_shape, shape_mean_r, shape_u[:, :c]),
                                base_refl + _affine_fit(a_test - base_refl, refl_mean_r, refl_u[:, :c]))
    q, t, K = canonical_pose(test, model)
    size = int(s.size)
    gt_t = torch.as_tensor(a_test.reshape(len(test), V, 3), dtype=torch.float32)
    rows = {"id": [str(i) for i in test.ids], "subject": subjects_of(test)}
    gt_images, masks = [], []
    for start in range(0, len(test), 16):
        image, mask = _render_colors(model, gt_t[start:start + 16], q, t, K, size)
        gt_images.append(image)
        masks.append(mask)
    gt_image, mask = torch.cat(gt_images), torch.cat(masks)

    def refl_errors(colors: np.ndarray) -> dict[str, np.ndarray]:
        c = torch.tensor(np.array(colors, np.float32).reshape(len(test), V, 3)).clamp(0, 1)
        out = {"add": [], "gain": []}
        for start in range(0, len(test), 16):
            image, _ = _render_colors(model, c[start:start + 16], q, t, K, size)
            errors = reflectance_error_both(image, gt_image[start:start + 16], mask[start:start + 16])
            for k in out:
                out[k].append(errors[k].numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    truth = torch.as_tensor(x_test.reshape(len(test), V, 3), dtype=torch.float64)
    for name, (shape, refl) in fits.items():
        rows[f"{name}/shape_mm"] = metrics.shape_error_mm(truth, torch.as_tensor(shape.reshape(len(test), V, 3))).numpy()
        errors = refl_errors(refl)
        rows[f"{name}/refl_add"], rows[f"{name}/refl_gain"] = errors["add"], errors["gain"]
    errors = refl_errors(np.broadcast_to(mean_refl, a_test.shape))
    rows["mean/refl_add"], rows["mean/refl_gain"] = errors["add"], errors["gain"]
    rows["mean/shape_mm"] = metrics.shape_error_mm(
        truth, torch.as_tensor(np.broadcast_to(mean_shape, x_test.shape).reshape(len(test), V, 3).copy())).numpy()
    # energy of the residual beyond the base span captured by the top-k training directions (test set)
    frame = pd.DataFrame(rows)
    write_csv(frame, path)
    energy = {}
    for key, residual, mean_r, u in (("shape", x_test - base_shape, shape_mean_r, shape_u),
                                     ("reflectance", a_test - base_refl, refl_mean_r, refl_u)):
        total = float(((residual - mean_r) ** 2).sum())
        captured = np.cumsum(((residual - mean_r) @ u) ** 2, axis=1).sum(axis=0) if u.shape[1] else np.zeros(0)
        energy[key] = {"residual_rms": float(np.sqrt((residual ** 2).sum() / residual.size)),
                       "captured_fraction_at": {str(c): float(captured[min(c, len(captured)) - 1] / total)
                                                for c in s.counts if c > 0 and len(captured)}}
    write_json(energy, path.parent / "residual_energy.json")
    return frame


# ---------------------------------------------------------------------------------------- training
def _train_config(s: StandardSettings, data, out: Path, *, pretrain: bool, iters: int, model_changes: dict,
                  weights: dict, init_from: Path | None, seed: int, resume: bool, name: str,
                  optimizer: str | None = None, lr_scale: float | None = None, corrective_mult: float | None = None):
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig

    model = dataclasses.replace(MultiLevelConfig(), image_size=s.size, encoder_width=s.encoder_width,
                                **model_changes)
    optimizer = optimizer or s.optimizer
    every = s.pretrain_eval_every if pretrain else s.finetune_eval_every
    return MultiLevelTrainConfig(
        dataset=data["train"], val=data["val"], out=out, model=model,
        pretrain_iters=iters if pretrain else 0, finetune_iters=0 if pretrain else iters, batch=s.batch,
        optimizer=optimizer, lr_scale=s.lr_scale if lr_scale is None else lr_scale, lr_pretrain=s.lr_pretrain,
        adam_fused=optimizer == "adam" and s.device == "cpu",
        corrective_weight_lr_mult=(corrective_mult if corrective_mult is not None
                                   else s.corrective_weight_lr_mult if optimizer == "adam" else 1.0),
        weights=dict(weights), device=s.device, seed=seed, threads=s.threads, eval_every=0,
        checkpoint_every=every, log_every=max(every // 5, 1), val_limit=None, resume=resume,
        overwrite=not resume, init_from=None if resume else init_from, method=f"tewari2018-{name}")


def _val_curve(history: list[dict], column: str) -> tuple[list[int], list[float]]:
    rows = [r for r in history if isinstance(r.get(column), float) and math.isfinite(r[column])]
    return [int(r["iteration"]) for r in rows], [float(r[column]) for r in rows]


def _stop_reason(history: list[dict], level: str, done: int, *, patience: int, tol: float, low: int,
                 high: int, rule: bool) -> str | None:
    """The plateau rule on both validation curves of the stage: the photometric error of its level
    and the 2D landmark error (px); "plateau" only when both have plateaued (:func:`plateaued`)."""
    if done >= high:
        return "cap"
    if not rule:
        return None
    reasons = []
    for column in (f"val_photo_{level}", "val_land_px"):
        iterations, values = _val_curve(history, column)
        reasons.append(plateaued(values, iterations, patience=patience, tol=tol, min_iters=low, max_iters=high))
    return "plateau" if all(r is not None for r in reasons) else None


def train_run(s: StandardSettings, data, out: Path, *, pretrain: bool, seed: int, model_changes: dict | None = None,
              weights: dict | None = None, init_from: Path | None = None, name: str = "", on_step: Step | None = None,
              optimizer: str | None = None, lr_scale: float | None = None, max_iters: int | None = None,
              rule: bool = True, corrective_mult: float | None = None) -> dict:
    """Train one run to the plateau rule in chunks (module docstring); resumes a partial run and
    returns the ``done.json`` of a finished one at once (``iterations``, ``reason``, ``curve``)."""
    from facebench.baselines.tewari2018.evaluations import _drop_optimizer
    from facebench.baselines.tewari2018.predict import load_multilevel_checkpoint
    from facebench.baselines.tewari2018.training import train_multilevel

    done_path = out / "done.json"
    if done_path.is_file():
        return json.loads(done_path.read_text())
    every = s.pretrain_eval_every if pretrain else s.finetune_eval_every
    low = s.pretrain_min if pretrain else s.finetune_min
    high = max_iters if max_iters is not None else (s.pretrain_max if pretrain else s.finetune_max)
    level = "base" if pretrain else "final"
    history: list[dict] = []
    done = 0
    if (out / "model.pt").is_file():
        checkpoint = load_multilevel_checkpoint(out / "model.pt")
        done, history = int(checkpoint.get("iteration", 0)), list(checkpoint.get("history", []))
    while True:
        reason = _stop_reason(history, level, done, patience=s.patience, tol=s.tol, low=low, high=high, rule=rule)
        if reason is not None:
            break
        target = min(done + every, high)
        config = _train_config(s, data, out, pretrain=pretrain, iters=target, model_changes=model_changes or {},
                               weights=weights or {}, init_from=init_from, seed=seed, resume=done > 0, name=name,
                               optimizer=optimizer, lr_scale=lr_scale, corrective_mult=corrective_mult)
        result = train_multilevel(config, on_step)
        done, history = result.iterations_done, result.history
    iterations, values = _val_curve(history, f"val_photo_{level}")
    _, landmarks = _val_curve(history, "val_land_px")
    _drop_optimizer(out / "model.pt")
    info = {"iterations": done, "reason": reason, "level": level,
            "curve": {"iteration": iterations, "val": values, "val_land_px": landmarks},
            "rule": {"patience": s.patience, "tol": s.tol, "min_iters": low, "max_iters": high, "every": every}}
    write_json(info, done_path)
    return info


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_run(checkpoint: Path, test_path: Path, albedo: np.ndarray, out_csv: Path, *, device="cpu",
                 batch_size: int = 16) -> pd.DataFrame:
    """Per-test-image metrics of a trained run (module docstring), written to ``out_csv`` once."""
    from facebench.baselines.runs import model_for_dataset
    from facebench.baselines.tewari2018.evaluations import _render_colors, canonical_pose
    from facebench.baselines.tewari2018.predict import (
        iterate_reconstructions,
        load_multilevel_checkpoint,
        model_from_checkpoint,
    )
    from facebench.benchmark import metrics
    from facebench.datasets.dataset_file import FaceDataset

    if out_csv.is_file():
        return pd.read_csv(out_csv, dtype={"id": str})
    test = FaceDataset(test_path)
    face_model = model_for_dataset(test)
    net = model_from_checkpoint(load_multilevel_checkpoint(checkpoint), face_model, path=checkpoint).to(device)
    q, t, K = canonical_pose(test, face_model)
    size = int(test.read("images", 0, 1).shape[1])
    cols: dict[str, list] = {}

    def add(key, value):
        cols.setdefault(key, []).append(np.asarray(value.detach().cpu().numpy() if torch.is_tensor(value) else value,
                                                   np.float64))

    for indices, output, batch in iterate_reconstructions(net, test, device=device, batch_size=batch_size):
        target = batch["images"].permute(0, 2, 3, 1)
        gt = torch.as_tensor(np.asarray(test.read("vertices", int(indices[0]), int(indices[-1]) + 1)),
                             dtype=torch.float32, device=output.vertices_base.device)
        albedo_t = torch.as_tensor(albedo[indices], dtype=torch.float32, device=gt.device)
        gt_image, mask = _render_colors(face_model, albedo_t, q, t, K, size)
        with torch.no_grad():
            for level in ("base", "final"):
                add(f"photo_{level}", metrics.photometric_error(net.render(output, level).image, target, batch["masks"]))
                add(f"shape_{level}_mm", metrics.shape_error_mm(gt, output.vertices(level)))
                image, _ = _render_colors(face_model, output.reflectance(level).clamp(0, 1), q, t, K, size)
                errors = reflectance_error_both(image, gt_image, mask)
                add(f"refl_{level}_add", errors["add"])
                add(f"refl_{level}_gain", errors["gain"])
            add("offset_mm", torch.linalg.norm(output.shape_offsets, dim=-1).mean(dim=1))
            add("refl_offset", torch.linalg.norm(output.reflectance_offsets, dim=-1).mean(dim=1))
    frame = pd.DataFrame({"id": [str(i) for i in test.ids],
                          **{k: np.concatenate(v) for k, v in cols.items()}})
    write_csv(frame, out_csv)
    return frame


# ---------------------------------------------------------------------------------------- the pipeline
_SETTINGS_FILE = "standard.json"


def _cached_test_albedo(path: Path, test) -> np.ndarray:
    """:func:`true_albedo` of the test set, kept in ``path`` (float32 ``.npy``) after the first call."""
    from facebench.atomic import atomic_path

    if path.is_file():
        albedo = np.load(path, allow_pickle=False)
        if albedo.shape[0] == len(test):
            return albedo
    albedo = true_albedo(test)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, albedo, allow_pickle=False)
    return albedo


def _check_settings(s: StandardSettings, overwrite: bool) -> None:
    """Refuse a folder made with other settings (one line naming the first difference)."""
    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    path = out / _SETTINGS_FILE
    wanted = json.loads(json.dumps(s.values))
    if path.is_file() and not overwrite:
        saved = json.loads(path.read_text())
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                raise FacebenchError(f"{out} was made with other settings ({key}: {saved.get(key)!r}, now "
                                     f"{wanted.get(key)!r}); rerun with the same options to continue, or use a new --out")
    elif out.is_dir() and any(out.iterdir()) and not overwrite and not path.is_file():
        raise InputFileError(out, "output folder exists, is not empty and is not a standard-mode folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(wanted, path)


def run_standard(s: StandardSettings, experiments=EXPERIMENTS, *, overwrite: bool = False, schedule: bool = True,
                 on_stage: Stage | None = None, on_step: Step | None = None) -> dict[str, Path]:
    """Run (or continue) the standard mode of ``experiments`` in ``s.out`` (module docstring); the
    files written (tables, figures, summary)."""
    from facebench.leaderboard.seeds import seed_folder, seed_list

    stage = on_stage or (lambda _m: None)
    for name in experiments:
        if name not in EXPERIMENTS:
            raise FacebenchError(f"unknown experiment {name!r}; one of {', '.join(EXPERIMENTS)}")
    if any(int(c) < 0 for c in s.counts) or 0 not in s.counts:
        raise FacebenchError(f"counts must be integers >= 0 and include 0, got {s.counts}")
    seeds = seed_list(s.seed, s.seeds)
    _check_settings(s, overwrite)
    threads_before = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    started = time.perf_counter()
    try:
        data = prepare_standard_data(s, stage)
        reference = oracle_rows(s, data, stage)
        from facebench.datasets.dataset_file import FaceDataset

        albedo = _cached_test_albedo(Path(s.out) / "oracle" / "test_albedo.npy", FaceDataset(data["test"]))
        needed: list[str] = []
        for experiment in experiments:
            for name in experiment_runs(experiment, s.counts):
                if name not in needed:
                    needed.append(name)
        needed.sort(key=lambda n: (n != _top(s.counts), n))
        for seed in seeds:
            folder = seed_folder(s.out, seed)
            pretrain = folder / "runs" / "pretrain"
            stage(f"seed {seed}: stage 1 (base level) in {pretrain}")
            train_run(s, data, pretrain, pretrain=True, seed=seed, name="pretrain", on_step=on_step)
            for name in needed:
                model_changes, weights = run_spec(name, s.counts)
                run = folder / "runs" / name
                info = train_run(s, data, run, pretrain=False, seed=seed, model_changes=model_changes,
                                 weights=weights, init_from=pretrain / "model.pt", name=name, on_step=on_step)
                frame = evaluate_run(run / "model.pt", data["test"], albedo, folder / "eval" / f"{name}.csv",
                                     device=s.device)
                stage(f"seed {seed}: {name}: {info['iterations']} iterations ({info['reason']}), photometric "
                      f"{frame['photo_base'].mean():.4f} base / {frame['photo_final'].mean():.4f} final, shape "
                      f"{frame['shape_final_mm'].mean():.3f} mm, reflectance {frame['refl_final_add'].mean():.4f}")
        if schedule and s.schedule_iters > 0:
            schedule_runs(s, data, on_stage=stage, on_step=on_step)
            printed_schedule_run(s, data, albedo, on_stage=stage, on_step=on_step)
        files = write_report(s, experiments, seeds, data, reference, on_stage=stage)
        files["summary"] = write_json({"experiments": list(experiments), "seeds": seeds, "settings": s.values,
                                       "seconds_this_call": time.perf_counter() - started,
                                       "files": {k: str(v) for k, v in files.items()}},
                                      Path(s.out) / "summary.json")
        return files
    finally:
        torch.set_num_threads(threads_before)


#: The schedule check (first seed, stage 1 only, then :func:`printed_schedule_run` for both stages):
#: the supplement's AdaDelta at its printed rate, the
#: same with every rate ×300 (facebench's AdaDelta default), the Adam the standard runs use (stage-1
#: rate 0.01 × 0.1) and that Adam at the stage-2 base rate (0.001 × 0.1, the quick mode's stage 1).
SCHEDULES = {"adadelta-printed": ("adadelta", 1.0, None), "adadelta-x300": ("adadelta", 300.0, None),
             "adam": ("adam", None, None), "adam-stage2-rate": ("adam", None, 0.001)}


def schedule_runs(s: StandardSettings, data, *, on_stage: Stage | None = None, on_step: Step | None = None) -> dict:
    """Stage 1 for ``schedule_iters`` iterations with each of :data:`SCHEDULES` (no plateau rule, the
    same validation every ``pretrain_eval_every`` / 2 iterations) in ``OUT/schedule/NAME``."""
    stage = on_stage or (lambda _m: None)
    out = {}
    for name, (optimizer, scale, lr_pretrain) in SCHEDULES.items():
        stage(f"schedule check: {name} (stage 1, {s.schedule_iters} iterations)")
        quick = dataclasses.replace(s, values={**s.values, "pretrain_eval_every": max(s.schedule_iters // 4, 1),
                                               **({} if lr_pretrain is None else {"lr_pretrain": lr_pretrain})})
        folder = Path(s.out) / "schedule" / name
        try:
            out[name] = train_run(quick, data, folder, pretrain=True, seed=s.seed, name=f"schedule-{name}",
                                  on_step=on_step, optimizer=optimizer, lr_scale=scale, max_iters=s.schedule_iters,
                                  rule=False)
        except FacebenchError as error:  # the training's own "diverged" error: a result of this check
            out[name] = {"iterations": None, "reason": f"diverged: {error}", "curve": {"iteration": [], "val": []}}
            write_json(out[name], folder / "done.json")
    return out


def printed_schedule_run(s: StandardSettings, data, albedo: np.ndarray, *, on_stage: Stage | None = None,
                         on_step: Step | None = None) -> pd.DataFrame:
    """The supplement's whole schedule for the first seed, as printed: stage 1 with AdaDelta at the
    printed 0.01, then the top-C affine run with AdaDelta at the printed per-branch rates (0.001 /
    0.005 / 0.01) and the corrective matrices × 100, both to the same plateau rule and caps as the
    standard runs, in ``OUT/schedule-printed/``; its per-image evaluation
    (``OUT/schedule-printed/eval/C{top}.csv``) to compare with the first seed's Adam run."""
    stage = on_stage or (lambda _m: None)
    folder = Path(s.out) / "schedule-printed"
    pretrain = folder / "runs" / "pretrain"
    stage(f"printed schedule (AdaDelta, rates as printed): stage 1 in {pretrain}")
    train_run(s, data, pretrain, pretrain=True, seed=s.seed, name="printed-pretrain", on_step=on_step,
              optimizer="adadelta", lr_scale=1.0)
    name = _top(s.counts)
    model_changes, weights = run_spec(name, s.counts)
    run = folder / "runs" / name
    stage(f"printed schedule: {name} in {run}")
    train_run(s, data, run, pretrain=False, seed=s.seed, model_changes=model_changes, weights=weights,
              init_from=pretrain / "model.pt", name=f"printed-{name}", on_step=on_step, optimizer="adadelta",
              lr_scale=1.0, corrective_mult=100.0)
    return evaluate_run(run / "model.pt", data["test"], albedo, folder / "eval" / f"{name}.csv", device=s.device)
