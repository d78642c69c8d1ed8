"""The evaluations of Tewari et al. 2018's supplement on facebench's synthetic data.

Four experiments, each a function returning an :class:`EvalResult` and writing into ``out``:

- :func:`run_correctives` (supplement Fig. 4): the number of corrective parameters C ∈ {0, 100,
  250, 500}; photometric re-rendering error on a held-out set → ``correctives.csv``,
  ``correctives.png``, ``panels.png``.
- :func:`run_corrective_spaces` (Figs. 2–3): affine ``M δ + b`` vs one vs two hidden ReLU layers →
  ``corrective_spaces.csv``, ``corrective_spaces.png``, ``panels.png``.
- :func:`run_reflectance`: a synthetic reflectance test — the images hold all 80 reflectance modes of
  the synthetic model, the base level is given 40 (``n_reflectance=40``), so the final level must
  learn the rest. Error (docs/metrics.md, reflectance error): the per-pixel Euclidean RGB distance
  between the predicted reflectance and the ground truth (``model.reflectance`` of the dataset's
  coefficients, clipped to [0, 1] like the generator does), both rendered as unlit colours on the
  model's **mean shape** in the **canonical frontal pose** (``q = (0, 1, 0, 0)``, the dataset's K and
  camera distance, looking at the dataset's centre), after adding to the prediction the mean over the
  mask of ground truth − prediction; averaged over the pixels of each image, then over the test
  images. Base vs final level (the paper: 0.072), plus the model's mean reflectance as a reference →
  ``reflectance.csv``, ``reflectance.png``, ``panels.png``.
- :func:`run_ablation` (Figs. 5–7): full loss vs without the shape-corrective regularizers
  (``w_smo = w_sta = 0``) vs without the reflectance sparsity priors (``w_ref = w_glo = 0``) →
  ``ablation.csv``, ``ablation.png``, ``panels.png``.

**Protocol shared by all four**: ``data/train.h5`` and ``data/test.h5`` are generated (synthetic model,
all 80 reflectance modes, different seeds) or taken from ``data`` (a folder with ``train.h5`` and
``test.h5``). Stage 1 (base level only) is trained **once** per experiment in ``runs/pretrain``; each
variant then starts from it (:attr:`MultiLevelTrainConfig.init_from`) and runs stage 2 for
``finetune_iters`` iterations in ``runs/NAME``. Stage 1 never uses the corrective spaces, so sharing it
is exact for C and the corrective kind, and gives every variant the same start. The runs' ``model.pt``
keep the weights but not the optimizer state (0.35 GB at C = 500), so they resume with a fresh one. Each variant's
final level is written as a submission (``submissions/NAME.h5``) and scored with
:func:`facebench.benchmark.scoring.score` under the ``synthetic`` protocol (``results/NAME/``).

Every row of the CSVs (:data:`METRIC_COLUMNS`): ``photo_base``/``photo_final`` (photometric error of
each level's shaded re-rendering against the test image over the dataset's face mask, RGB [0,1]),
``refl_base``/``refl_final`` (the reflectance error above), ``land_px``, the scored ``shape_mm``,
``translation_cm``, ``rotation_deg``, ``reprojection_px``, ``offset_mm``/``refl_offset`` (mean
per-vertex size of the corrective shape offsets, mm, and reflectance offsets, RGB: what the
ablation's regularizers hold back) and ``train_seconds``.

**Reference rows** (:func:`reference_rows`): the variant tables (correctives, corrective spaces,
ablation) end with ``mean-shape`` (the model's mean face
at the true pose) and ``projection-oracle`` (the least-squares fit of the test shapes in the base
level's span — its identity and expression modes — at the true pose), written by
:func:`facebench.benchmark.templates.write_template` and scored like the variants; they have the
scored columns only (no photometric or reflectance error: they carry no reflectance or light). The
reflectance table's ``mean`` row (the model's mean reflectance) is the reflectance reference.

**Seeds**: ``seeds`` N > 1 runs the experiment for seeds ``seed … seed + N - 1`` in ``seed<S>/``
and writes the table with the mean and sd across seeds, ``verdicts.csv`` and a ``verdict`` column
(:mod:`facebench.leaderboard.seeds`; per-sample values: the scored results of each row, and the
per-image reflectance errors of ``reflectance_per_image.csv``; the photometric error is a mean
only, so it gets a mean and sd but no verdict).

**Panels** (:mod:`facebench.baselines.tewari2018.figures`): for a few test images, the input, the final
level rendered over the input (overlay), its reflectance (unlit, predicted pose), its geometry (grey
mesh with a fixed white light) and its illumination (a sphere lit by the regressed final-level SH),
one group of columns per variant, like the paper's figures. Figures use matplotlib's Agg backend and
are written atomically. Images are shown in linear RGB (as stored).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facebench.atomic import write_csv as _write_csv
from facebench.atomic import write_json as _write_json
from facebench.baselines.tewari2018.figures import bar_plot, panel_images, write_panels
from facebench.benchmark.reference_rows import REFERENCES
from facebench.device import resolve_device
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "QUICK",
    "FULL",
    "EVAL_WEIGHTS",
    "METRIC_COLUMNS",
    "PAPER_REFLECTANCE_ERROR",
    "EvalSettings",
    "EvalResult",
    "Variant",
    "resolve_eval_settings",
    "prepare_data",
    "canonical_pose",
    "reflectance_errors",
    "evaluate_variant",
    "run_variants",
    "run_correctives",
    "run_corrective_spaces",
    "run_reflectance",
    "run_ablation",
    "reference_rows",
    "REFERENCES",
]

#: Scored metrics (per-sample values in ``results/NAME/``): the verdicts across seeds.
SCORED = ("shape_mm", "translation_cm", "rotation_deg", "reprojection_px")

#: The paper's reflectance error on its synthetic test (supplement).
PAPER_REFLECTANCE_ERROR = 0.072
METRIC_COLUMNS = ("photo_base", "photo_final", "refl_base", "refl_final", "land_px", "shape_mm", "translation_cm",
                  "rotation_deg", "reprojection_px", "offset_mm", "refl_offset", "train_seconds")
#: ``--quick``: CPU minutes.
QUICK: dict[str, Any] = {"train": 300, "test": 24, "size": 64, "pretrain_iters": 300, "finetune_iters": 150,
                         "batch": 5, "panels": 3, "encoder_width": 32, "optimizer": "adam", "lr_scale": 0.1,
                         "corrective_weight_lr_mult": 0.1}
#: Loss-weight overrides of every evaluation run unless given (none: the loss module's defaults, whose
#: landmark weight is 20 — with 0.2 the 2D landmark error grew from 4.7 to 11 px in 150 pre-training
#: iterations; with 20 it falls to 3.2 px).
EVAL_WEIGHTS: dict[str, float] = {}
#: The full run (GPU scale): the paper's 1,000 test images, longer training.
FULL: dict[str, Any] = {"train": 20000, "test": 1000, "size": 128, "pretrain_iters": 20000,
                        "finetune_iters": 20000, "batch": 5, "panels": 6, "encoder_width": 32,
                        "optimizer": "adadelta", "lr_scale": None, "corrective_weight_lr_mult": None}


@dataclasses.dataclass
class EvalSettings:
    """Settings of an evaluation (None: from :data:`QUICK` or :data:`FULL`).

    ``train``/``test``: images to generate; ``size`` px; iterations per stage; ``weights``: loss
    weight overrides for every run (``MultiLevelTrainConfig.weights``); ``lr_scale``: None for the
    training default; ``threads``: torch CPU threads (1 is fastest on 2 shared cores).
    ``overwrite``: reuse a non-empty ``out`` (its runs are trained again).
    """

    out: Path
    quick: bool = True
    data: Path | None = None
    train: int | None = None
    test: int | None = None
    size: int | None = None
    pretrain_iters: int | None = None
    finetune_iters: int | None = None
    batch: int | None = None
    panels: int | None = None
    encoder_width: int | None = None
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    lr_scale: float | None = None
    optimizer: str | None = None
    corrective_weight_lr_mult: float | None = None
    device: str = "cpu"
    seed: int = 0
    threads: int | None = 1
    overwrite: bool = False
    seeds: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class EvalResult:
    """What an evaluation wrote: its table (one row per variant), the files, the wall time."""

    table: pd.DataFrame
    out: Path
    files: dict[str, Path]
    seconds: float


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training of an experiment: a name, model-config changes and loss-weight overrides."""

    name: str
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: dict[str, float] = dataclasses.field(default_factory=dict)


Stage = Callable[[str], None]
Step = Callable[[str, int, int, float], None]


# ---------------------------------------------------------------------------------------- settings
def resolve_eval_settings(settings: EvalSettings) -> EvalSettings:
    """``settings`` with None filled from QUICK / FULL and checked (FacebenchError, one line)."""
    defaults = QUICK if settings.quick else FULL
    s = dataclasses.replace(settings, **{k: v for k, v in defaults.items() if getattr(settings, k) is None})
    for name in ("train", "test", "size", "batch", "encoder_width"):
        if getattr(s, name) < 1:
            raise FacebenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    for name in ("pretrain_iters", "finetune_iters", "panels"):
        if getattr(s, name) < 0:
            raise FacebenchError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(s, name)}")
    if s.pretrain_iters + s.finetune_iters < 1:
        raise FacebenchError("nothing to train: --pretrain-iters and --finetune-iters are both 0")
    if s.size < 32:
        raise FacebenchError(f"--size must be >= 32 px for the multi-level encoder, got {s.size}")
    if s.threads is not None and s.threads < 1:
        raise FacebenchError(f"--threads must be >= 1, got {s.threads}")
    from facebench.leaderboard.seeds import seed_list

    seed_list(s.seed, s.seeds)
    if s.lr_scale is not None and not (math.isfinite(s.lr_scale) and s.lr_scale > 0):
        raise FacebenchError(f"--lr-scale must be a finite number > 0, got {s.lr_scale}")
    resolve_device(s.device)
    from facebench.baselines.tewari2018.training import STAGES, stage_weights

    for stage in STAGES:  # unknown or negative weights: an error before any data or training
        stage_weights(stage, {**EVAL_WEIGHTS, **s.weights})
    return s


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputFileError(out, "output folder exists and is not empty (use --overwrite)")


# ---------------------------------------------------------------------------------------- data
def prepare_data(s: EvalSettings, on_stage: Stage | None = None) -> dict[str, Path]:
    """``{"train", "test"}`` paths: ``s.data/train.h5`` and ``s.data/test.h5`` when ``s.data`` is
    given (InputFileError when missing), else generated into ``s.out/data`` (``s.size`` px, every
    reflectance mode of the synthetic model; seeds ``s.seed`` and ``s.seed + 1``). Existing
    generated files of the right size and count are reused."""
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.datasets.generator import GeneratorSettings, generate

    if s.data is not None:
        folder = Path(s.data)
        paths = {split: folder / f"{split}.h5" for split in ("train", "test")}
        for path in paths.values():
            if not path.is_file():
                raise InputFileError(path, "not found: --data needs a folder with train.h5 and test.h5")
        return paths
    folder = Path(s.out) / "data"
    paths = {}
    for split, n, seed in (("train", s.train, s.seed), ("test", s.test, s.seed + 1)):
        path = folder / f"{split}.h5"
        if path.is_file():
            try:
                existing = FaceDataset(path)
                if len(existing) == n and list(existing.attrs.get("image_size", [])) == [s.size, s.size] \
                        and existing.attrs.get("seed") == seed:
                    paths[split] = path
                    continue
            except InputFileError:
                pass
        if on_stage is not None:
            on_stage(f"generating {n} {split} images of {s.size} px in {folder}")
        generate(GeneratorSettings(n=n, size=s.size, seed=seed), path, overwrite=True, batch_size=16)
        paths[split] = path
    return paths


# ---------------------------------------------------------------------------------------- reflectance
def canonical_pose(dataset, face_model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q (4,), t (3,) mm, K (3,3) px)`` of the canonical frontal view of a dataset: q = Q_FRONT,
    the camera at the dataset's distance looking at its centre (generator settings ``distance`` and
    ``centre``; else the mean |t| and the centre of the mean shape's bounding box), the dataset's K."""
    from facebench import conventions as cv
    from facebench.baselines.tewari2018.data import shared_K

    settings = dataset.attrs.get("settings") if isinstance(dataset.attrs.get("settings"), dict) else {}
    centre = settings.get("centre")
    if centre is None:
        lo, hi = face_model.mean.min(axis=0), face_model.mean.max(axis=0)
        centre = (lo + hi) / 2
    distance = settings.get("distance")
    if distance is None:
        distance = float(np.linalg.norm(np.asarray(dataset.array("t"), np.float64), axis=1).mean())
    q = np.asarray(cv.Q_FRONT, np.float64)
    t = np.array([0.0, 0.0, float(distance)]) - np.asarray(cv.R_FRONT, np.float64) @ np.asarray(centre, np.float64)
    return q, t, shared_K(dataset)


def _render_colors(face_model, colors: torch.Tensor, q, t, K, size: int, background=0.0):
    """Unlit ``colors (B,V,3)`` on the model's mean shape at one pose -> ``(image (B,S,S,3), mask)``."""
    from facebench.render import render

    device = colors.device
    mean = torch.as_tensor(np.array(face_model.mean), dtype=torch.float32, device=device).expand(colors.shape[0], -1, -1)
    faces = torch.as_tensor(face_model.faces.astype(np.int64), device=device)
    out = render(mean, faces, torch.tensor(np.array(q), dtype=torch.float32, device=device),
                 torch.tensor(np.array(t), dtype=torch.float32, device=device),
                 torch.tensor(np.array(K), dtype=torch.float32),
                 size, size, colors=colors, background=background)
    return out.image, out.mask


def reflectance_errors(net, dataset, face_model, *, device="cpu", batch_size: int = 16,
                       limit: int | None = None) -> dict[str, np.ndarray]:
    """Per-image reflectance errors ``(n,)`` of the ``base`` and ``final`` levels and of the model's
    ``mean`` reflectance (module docstring), over the first ``limit`` images of ``dataset``, which
    needs ``coefficients/reflectance``. Both prediction and ground truth are clipped to [0, 1]."""
    from facebench.baselines.tewari2018.predict import iterate_reconstructions
    from facebench.benchmark.metrics import reflectance_error

    if "reflectance" not in dataset.coefficient_fields:
        raise InputFileError(dataset.path, "has no reflectance coefficients: the reflectance test needs them")
    device = resolve_device(device)
    q, t, K = canonical_pose(dataset, face_model)
    size = int(dataset.read("images", 0, 1).shape[1])
    out: dict[str, list[np.ndarray]] = {"base": [], "final": [], "mean": []}
    mean_refl = torch.as_tensor(np.array(face_model.reflectance_mean), dtype=torch.float32, device=device).clamp(0, 1)
    for indices, output, _ in iterate_reconstructions(net, dataset, device=device, batch_size=batch_size,
                                                      limit=limit):
        coefficients = torch.as_tensor(dataset.read("reflectance", int(indices[0]), int(indices[-1]) + 1),
                                       dtype=torch.float32, device=device)
        coefficients = torch.nan_to_num(coefficients)
        gt = face_model.reflectance(coefficients).clamp(0, 1)
        gt_image, mask = _render_colors(face_model, gt, q, t, K, size)
        for level, colors in (("base", output.reflectance_base), ("final", output.reflectance_final),
                              ("mean", mean_refl.expand_as(gt))):
            image, _ = _render_colors(face_model, colors.clamp(0, 1), q, t, K, size)
            out[level].append(reflectance_error(image, gt_image, mask).detach().cpu().numpy().astype(np.float64))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


# ---------------------------------------------------------------------------------------- panels

# ---------------------------------------------------------------------------------------- variants
def _train_config(s: EvalSettings, data: dict[str, Path], out: Path, model_changes: dict, weights: dict, *,
                  pretrain: bool, init_from: Path | None, name: str):
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig

    model = dataclasses.replace(MultiLevelConfig(), image_size=s.size, encoder_width=s.encoder_width, **model_changes)
    extra = {} if s.lr_scale is None else {"lr_scale": s.lr_scale}
    if s.optimizer is not None:
        extra["optimizer"] = s.optimizer
    if s.corrective_weight_lr_mult is not None:
        extra["corrective_weight_lr_mult"] = s.corrective_weight_lr_mult
    iterations = max(s.pretrain_iters if pretrain else s.finetune_iters, 1)
    return MultiLevelTrainConfig(
        dataset=data["train"], val=data["test"], out=out, model=model,
        pretrain_iters=s.pretrain_iters if pretrain else 0, finetune_iters=0 if pretrain else s.finetune_iters,
        batch=s.batch, weights={**EVAL_WEIGHTS, **s.weights, **weights}, device=s.device, seed=s.seed, threads=s.threads,
        eval_every=0, checkpoint_every=max(iterations // 2, 1), log_every=max(iterations // 20, 1), val_limit=32,
        overwrite=True, init_from=init_from, method=f"tewari2018-{name}", **extra)


def _drop_optimizer(path: Path) -> None:
    """Rewrite a finished run's ``model.pt`` without the optimizer state (AdaDelta keeps two tensors
    per weight: 0.35 GB of the 0.5 GB at C = 500); the run then resumes with a fresh optimizer."""
    from facebench.baselines.runs import save_checkpoint
    from facebench.baselines.tewari2018.predict import load_multilevel_checkpoint

    checkpoint = load_multilevel_checkpoint(path)
    checkpoint["optimizer"], checkpoint["optimizer_stage"] = {}, None
    save_checkpoint(checkpoint, path)


def evaluate_variant(checkpoint: Path, data: dict[str, Path], out: Path, name: str, *, device="cpu",
                     panel_indices=()) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Metrics (:data:`METRIC_COLUMNS` but ``train_seconds``) of a trained run on ``data["test"]``
    and its panel rows: writes ``out/submissions/NAME.h5`` and ``out/results/NAME/``."""
    from facebench.baselines.runs import model_for_dataset
    from facebench.baselines.tewari2018.predict import (
        load_multilevel_checkpoint,
        model_from_checkpoint,
        predict_multilevel,
    )
    from facebench.baselines.tewari2018.training import evaluate_multilevel
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results
    from facebench.datasets.dataset_file import FaceDataset

    test = FaceDataset(data["test"])
    face_model = model_for_dataset(test)
    net = model_from_checkpoint(load_multilevel_checkpoint(checkpoint), face_model, path=checkpoint).to(device)
    metrics = evaluate_multilevel(net, test, device=device)
    refl = reflectance_errors(net, test, face_model, device=device)
    metrics.update(refl_base=float(refl["base"].mean()), refl_final=float(refl["final"].mean()),
                   refl_mean_reference=float(refl["mean"].mean()))
    submission = out / "submissions" / f"{name}.h5"
    predict_multilevel(checkpoint, data["test"], submission, device=device, overwrite=True, model=face_model,
                       method=f"tewari2018-{name}")
    result = score(data["test"], submission, get_protocol("synthetic"))
    write_results(result, out / "results" / name)
    for key in ("shape_mm", "translation_cm", "rotation_deg", "reprojection_px"):
        metrics[key] = float(result.summary["metrics"][key]["mean"])
    panels = panel_images(net, test, list(panel_indices), device=device) if len(panel_indices) else []
    return metrics, panels


def run_variants(s: EvalSettings, variants: list[Variant], *, base_model: dict | None = None,
                 on_stage: Stage | None = None, on_step: Step | None = None, references: bool = True):
    """Train the shared pre-training and each variant; return ``(table, panels, data paths)``.

    ``base_model``: model-config changes of every run (e.g. ``n_reflectance=40``); ``references``:
    end the table with :func:`reference_rows`."""
    stage = on_stage or (lambda _m: None)
    out = Path(s.out)
    data = prepare_data(s, stage)
    base_model = dict(base_model or {})
    pretrain_dir = out / "runs" / "pretrain"
    init = None
    from facebench.baselines.tewari2018.training import train_multilevel

    if s.pretrain_iters > 0:
        stage(f"stage 1: pre-training the base level ({s.pretrain_iters} iterations) in {pretrain_dir}")
        t0 = time.perf_counter()
        train_multilevel(_train_config(s, data, pretrain_dir, base_model, {}, pretrain=True, init_from=None,
                                       name="pretrain"), on_step)
        _drop_optimizer(pretrain_dir / "model.pt")
        pretrain_seconds = time.perf_counter() - t0
        init = pretrain_dir / "model.pt"
    else:
        pretrain_seconds = 0.0
    from facebench.datasets.dataset_file import FaceDataset

    n_test = len(FaceDataset(data["test"]))
    panel_indices = list(range(min(s.panels, n_test)))
    rows, panels = [], {}
    for i, variant in enumerate(variants):
        run_dir = out / "runs" / variant.name
        t0 = time.perf_counter()
        if s.finetune_iters > 0:
            stage(f"stage 2 ({i + 1}/{len(variants)}): {variant.name}: fine-tuning {s.finetune_iters} iterations")
            config = _train_config(s, data, run_dir, {**base_model, **variant.model}, variant.weights,
                                   pretrain=False, init_from=init, name=variant.name)
            train_multilevel(config, on_step)
            checkpoint = run_dir / "model.pt"
            _drop_optimizer(checkpoint)
        else:
            checkpoint = init
        seconds = time.perf_counter() - t0
        metrics, rows_panels = evaluate_variant(checkpoint, data, out, variant.name, device=s.device,
                                                panel_indices=panel_indices)
        metrics["train_seconds"] = seconds + pretrain_seconds
        stage(f"      {variant.name}: photometric {metrics['photo_base']:.4f} (base) {metrics['photo_final']:.4f} "
              f"(final), reflectance {metrics['refl_final']:.4f}, shape {metrics['shape_mm']:.2f} mm")
        rows.append({"variant": variant.name, **{k: v for k, v in variant.model.items()},
                     **{k: v for k, v in variant.weights.items()}, **metrics})
        panels[variant.name] = rows_panels
    if references:
        rows += reference_rows(data["test"], out, base_model, stage)
    return pd.DataFrame(rows), panels, data


def reference_rows(test: Path, out: Path, base_model: dict | None = None, stage: Stage | None = None) -> list[dict]:
    """Write and score the reference submissions (:data:`REFERENCES`) of ``test`` into
    ``out/submissions`` and ``out/results``
    (:func:`facebench.benchmark.reference_rows.score_reference_rows`); their rows (``variant`` and
    :data:`SCORED`). The oracle's span is the base level's (``MultiLevelConfig`` with ``base_model``:
    its identity and expression modes)."""
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.benchmark.reference_rows import score_reference_rows

    config = dataclasses.replace(MultiLevelConfig(), **{k: v for k, v in (base_model or {}).items()
                                                       if k in ("n_identity", "n_expression")})
    scored = score_reference_rows(test, out, identity_dims=config.n_identity, expression_dims=config.n_expression,
                                  stage=stage)
    return [{"variant": name, **{k: metrics[k] for k in SCORED}} for name, metrics in scored.items()]


def _methods(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` that are not reference rows (for the plots of the photometric error)."""
    return table[~table["variant"].isin(list(REFERENCES.values()))]


def _finish(s: EvalSettings, name: str, table: pd.DataFrame, panels: dict, files: dict[str, Path], started: float,
            title: str, extra: dict | None = None) -> EvalResult:
    out = Path(s.out)
    files[name] = _write_csv(table, out / f"{name}.csv")
    if panels and any(panels.values()):
        files["panels"] = write_panels(panels, out / "panels.png", title=title)
    seconds = time.perf_counter() - started
    files["summary"] = _write_json({"experiment": name, "settings": s.as_dict(), "seconds": seconds,
                                    "table": table.to_dict(orient="records"), **(extra or {})},
                                   out / "summary.json")
    return EvalResult(table=table, out=out, files=files, seconds=seconds)


def _start(settings: EvalSettings) -> tuple[EvalSettings, int | None, float]:
    _check_out(Path(settings.out), settings.overwrite)
    if settings.data is not None and settings.size is None:  # reused sets: their image size
        from facebench.datasets.dataset_file import FaceDataset

        paths = prepare_data(settings)
        size = FaceDataset(paths["train"]).attrs.get("image_size") or [None]
        settings = dataclasses.replace(settings, size=int(size[0]) if size[0] else None)
    s = resolve_eval_settings(settings)
    _check_out(Path(s.out), s.overwrite)
    if s.data is not None:
        prepare_data(s)  # missing files: an error before any training
    Path(s.out).mkdir(parents=True, exist_ok=True)
    before = torch.get_num_threads()
    return s, before, time.perf_counter()


def _run(settings, body, name: str = "", key: str = "variant"):
    s, threads_before, started = _start(settings)
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        if s.seeds > 1:
            return _across_seeds(s, body, started, name, key)
        return body(s, started)
    finally:
        torch.set_num_threads(threads_before)


def _seed_frames(result: EvalResult, key: str) -> dict[str, pd.DataFrame]:
    """Per-sample frames of one seed's rows: the scored results, or the per-image reflectance errors."""
    from facebench.leaderboard.seeds import per_sample_frames

    if key == "level":
        per_image = pd.read_csv(result.out / "reflectance_per_image.csv", dtype={"id": str})
        return {level: pd.DataFrame({"id": per_image["id"], "reflectance_error": per_image[level]})
                for level in ("base", "final", "mean")}
    return per_sample_frames({str(n): result.out / "results" / str(n) for n in result.table[key]})


def _across_seeds(s: EvalSettings, body, started: float, name: str, key: str) -> EvalResult:
    """``body`` once per seed in ``seed<S>/``, then the table across seeds (module docstring)."""
    from facebench.leaderboard.seeds import seed_folder, seed_list, summarize_seeds

    results, seeds = [], seed_list(s.seed, s.seeds)
    for seed in seeds:
        one = dataclasses.replace(s, out=seed_folder(s.out, seed), seed=seed, seeds=1, overwrite=True)
        Path(one.out).mkdir(parents=True, exist_ok=True)
        results.append(body(one, time.perf_counter()))
    if key == "level":
        metrics, verdict_metrics, headline = ("reflectance_error", "median", "std"), ("reflectance_error",), \
            "reflectance_error"
    else:
        metrics, verdict_metrics, headline = METRIC_COLUMNS, SCORED, "shape_mm"
    table, verdicts, files = summarize_seeds(s.out, name, [r.table for r in results], key, metrics,
                                             [_seed_frames(r, key) for r in results], verdict_metrics, headline)
    seconds = time.perf_counter() - started
    files["summary"] = _write_json({"experiment": name, "settings": s.as_dict(), "seeds": seeds,
                                    "seconds": seconds, "table": table.to_dict(orient="records"),
                                    "verdicts": verdicts.to_dict(orient="records"),
                                    "per_seed": {str(seed): str(r.out) for r, seed in zip(results, seeds)}},
                                   Path(s.out) / "summary.json")
    return EvalResult(table=table, out=Path(s.out), files=files, seconds=seconds)


# ---------------------------------------------------------------------------------------- experiments
def run_correctives(settings: EvalSettings, *, counts=(0, 100, 250, 500), on_stage: Stage | None = None,
                    on_step: Step | None = None) -> EvalResult:
    """Supplement Fig. 4: C ∈ ``counts``; ``correctives.csv`` (column ``n_correctives``), the plot
    ``correctives.png`` (photometric error of both levels vs C) and ``panels.png``."""
    if not counts or any(int(c) < 0 for c in counts):
        raise FacebenchError(f"--counts must be integers >= 0, got {counts}")

    def body(s, started):
        variants = [Variant(f"C{int(c)}", {"n_correctives": int(c)}) for c in counts]
        table, panels, _ = run_variants(s, variants, on_stage=on_stage, on_step=on_step)
        files = {"plot": bar_plot(_methods(table), "n_correctives", Path(s.out) / "correctives.png",
                                   "Held-out photometric error vs number of correctives C (supplement Fig. 4)",
                                   line=True)}
        return _finish(s, "correctives", table, panels, files, started, "correctives: C = "
                       + ", ".join(str(c) for c in counts))

    return _run(settings, body, "correctives")


def run_corrective_spaces(settings: EvalSettings, *, kinds=("affine", "relu1", "relu2"),
                          on_stage: Stage | None = None, on_step: Step | None = None) -> EvalResult:
    """Supplement Figs. 2–3: the corrective space ``F(δ|Θ)`` affine vs one vs two hidden ReLU layers;
    ``corrective_spaces.csv`` (column ``corrective_kind``), ``corrective_spaces.png``, ``panels.png``."""
    from facebench.baselines.tewari2018.model import CORRECTIVE_KINDS

    for kind in kinds:
        if kind not in CORRECTIVE_KINDS:
            raise FacebenchError(f"unknown corrective kind {kind!r}; choose among {', '.join(CORRECTIVE_KINDS)}")

    def body(s, started):
        variants = [Variant(kind, {"corrective_kind": kind}) for kind in kinds]
        table, panels, _ = run_variants(s, variants, on_stage=on_stage, on_step=on_step)
        files = {"plot": bar_plot(_methods(table), "corrective_kind", Path(s.out) / "corrective_spaces.png",
                                   "Corrective space: linear vs non-linear (supplement Figs. 2-3)")}
        return _finish(s, "corrective_spaces", table, panels, files, started, "corrective spaces")

    return _run(settings, body, "corrective_spaces")


def _reflectance_modes(dataset) -> int:
    """Reflectance modes a dataset's images hold: the generator's ``reflectance_dims`` setting, else
    the number of coefficient columns that are not all zero."""
    settings = dataset.attrs.get("settings") if isinstance(dataset.attrs.get("settings"), dict) else {}
    if isinstance(settings.get("reflectance_dims"), int):
        return int(settings["reflectance_dims"])
    if "reflectance" not in dataset.coefficient_fields:
        return 0
    coefficients = np.nan_to_num(np.asarray(dataset.array("reflectance")))
    return int(np.any(coefficients != 0, axis=0).sum())


def run_reflectance(settings: EvalSettings, *, base_reflectance: int = 40, on_stage: Stage | None = None,
                    on_step: Step | None = None) -> EvalResult:
    """The synthetic reflectance test (module docstring): the base level gets ``base_reflectance``
    modes; ``reflectance.csv`` has one row per level (``base``, ``final``, ``mean reflectance``) with
    the mean, median and std of the per-image error, and the paper's value; ``reflectance.png``,
    ``panels.png``."""
    from facebench.baselines.runs import model_for_dataset
    from facebench.baselines.tewari2018.predict import load_multilevel_checkpoint, model_from_checkpoint
    from facebench.datasets.dataset_file import FaceDataset

    if base_reflectance < 1:
        raise FacebenchError(f"--base-reflectance must be >= 1, got {base_reflectance}")

    def body(s, started):
        data = prepare_data(s, on_stage)
        test = FaceDataset(data["test"])
        n_modes = _reflectance_modes(test)
        if n_modes <= base_reflectance:
            raise InputFileError(test.path, f"holds {n_modes} reflectance modes; the test needs more than the base "
                                            f"level's {base_reflectance} (generate with --reflectance-dims 80)")
        variants = [Variant("final", {})]
        table, panels, _ = run_variants(s, variants, base_model={"n_reflectance": base_reflectance},
                                        on_stage=on_stage, on_step=on_step, references=False)
        run = Path(s.out) / "runs" / ("final" if s.finetune_iters > 0 else "pretrain") / "model.pt"
        face_model = model_for_dataset(test)
        net = model_from_checkpoint(load_multilevel_checkpoint(run), face_model, path=run).to(s.device)
        errors = reflectance_errors(net, test, face_model, device=s.device)
        rows = []
        for level, label in (("base", f"base level ({base_reflectance} modes)"), ("final", "final level"),
                             ("mean", "model mean reflectance")):
            e = errors[level]
            rows.append({"level": level, "description": label, "reflectance_error": float(e.mean()),
                         "median": float(np.median(e)), "std": float(e.std()), "n_images": int(e.size),
                         "paper": PAPER_REFLECTANCE_ERROR if level == "final" else float("nan"),
                         "test_modes": n_modes, "base_modes": base_reflectance})
        refl = pd.DataFrame(rows)
        ids = [str(i) for i in test.ids[:len(errors["final"])]]
        _write_csv(pd.DataFrame({"id": ids, **{level: errors[level] for level in ("base", "final", "mean")}}),
                   Path(s.out) / "reflectance_per_image.csv")
        files = {"plot": bar_plot(refl, "level", Path(s.out) / "reflectance.png",
                                   "Synthetic reflectance test: error after removing the global shift",
                                   columns=(("reflectance_error", "ours"),), ylabel="reflectance error",
                                   reference=PAPER_REFLECTANCE_ERROR)}
        files["runs"] = _write_csv(table, Path(s.out) / "runs.csv")
        return _finish(s, "reflectance", refl, panels, files, started, "reflectance test",
                       extra={"runs": table.to_dict(orient="records")})

    return _run(settings, body, "reflectance", "level")


def run_ablation(settings: EvalSettings, *, on_stage: Stage | None = None, on_step: Step | None = None) -> EvalResult:
    """Supplement Figs. 5–7: ``full`` vs ``no-shape-regularizers`` (w_smo = w_sta = 0) vs
    ``no-reflectance-priors`` (w_ref = w_glo = 0); ``ablation.csv``, ``ablation.png``, ``panels.png``."""
    def body(s, started):
        variants = [Variant("full"),
                    Variant("no-shape-regularizers", weights={"w_smo": 0.0, "w_sta": 0.0}),
                    Variant("no-reflectance-priors", weights={"w_ref": 0.0, "w_glo": 0.0})]
        table, panels, _ = run_variants(s, variants, on_stage=on_stage, on_step=on_step)
        files = {"plot": bar_plot(_methods(table), "variant", Path(s.out) / "ablation.png",
                                   "Ablation of the corrective priors (supplement Figs. 5-7)",
                                   columns=(("photo_final", "photometric (final)"), ("refl_final", "reflectance (final)")),
                                   ylabel="error")}
        return _finish(s, "ablation", table, panels, files, started, "ablation")

    return _run(settings, body, "ablation")
