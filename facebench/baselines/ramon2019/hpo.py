"""Bayesian search of the learning rate and loss weights of the multiterm losses (Ramon et al. 2019).

:func:`run_hpo` runs an optuna study with the TPE sampler (seeded) for ``coarse`` or ``xqt``:

- learning rate: log-uniform in ``(1e-5, 1e-3)`` (:data:`LR_RANGE`);
- weights (``alpha`` for Coarse; ``beta`` and ``gamma`` for XQT): log-uniform between
  0.1× and 10× (:data:`WEIGHT_FACTORS`) of the values that compensate the scale difference with
  the shape term, :func:`facebench.baselines.ramon2019.losses.ramon2019_scale_weights` of the training set;
- objective (minimized): the **validation shape error** (mean per-vertex distance, mm) of the
  trial's best epoch after ``epochs`` epochs (the epoch ``best.pt`` holds). Reprojection error,
  translation and rotation of that epoch are recorded in the table but do not enter the objective;
  ties (equal shape error to the printed precision) are broken by the lower validation
  reprojection error when the best trial is picked (:func:`best_trial`).

Every trial trains with the same seed (same initial network and batch order), so trials differ by
their hyperparameters only. A trial whose training diverges (NaN loss) is recorded with state
``failed`` and no objective. Files (all written atomically), in ``out``:

- ``trial_NNN/``: the trial's run folder (``model.pt``, ``best.pt``, ``log.csv``, ``config.json``);
- ``trials.csv``: one row per trial (:data:`TRIAL_COLUMNS`), rewritten after every trial;
- ``best.json``: the best trial's number, parameters, objective and the search space.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from facebench.atomic import atomic_path
from facebench.atomic import write_json as _write_json
from facebench.errors import FacebenchError, InputFileError

__all__ = ["HPO_LOSSES", "LR_RANGE", "WEIGHT_FACTORS", "TRIAL_COLUMNS", "HpoResult", "search_space",
           "best_trial", "run_hpo"]

#: The searched weights of each multiterm loss.
HPO_LOSSES: dict[str, tuple[str, ...]] = {"coarse": ("alpha",), "xqt": ("beta", "gamma")}
#: Learning-rate range (log-uniform).
LR_RANGE = (1e-5, 1e-3)
#: Weight range as factors of the scale-compensating weights (log-uniform).
WEIGHT_FACTORS = (0.1, 10.0)
#: Columns of ``trials.csv`` (the weights of the other loss are empty).
TRIAL_COLUMNS = ("trial", "state", "lr", "alpha", "beta", "gamma", "objective_shape_mm", "val_reprojection_px",
                 "val_translation_cm", "val_rotation_deg", "best_epoch", "epochs", "seconds", "run")
TRIALS_CSV, BEST_JSON = "trials.csv", "best.json"


@dataclasses.dataclass
class HpoResult:
    """What :func:`run_hpo` did: the trials table (:data:`TRIAL_COLUMNS`), the best trial's row as
    a dict, the search space ``{name: (low, high)}``, the output folder and the seconds taken."""

    trials: pd.DataFrame
    best: dict[str, Any]
    space: dict[str, tuple[float, float]]
    out: Path
    seconds: float

    @property
    def best_params(self) -> dict[str, float]:
        """``lr`` and the searched weights of the best trial."""
        return {k: float(self.best[k]) for k in self.space}


def check_loss(loss: str) -> tuple[str, ...]:
    """The searched weight names of ``loss``; FacebenchError for an unknown or single-term loss."""
    from facebench.baselines.ramon2019.losses import LOSSES

    choices = ", ".join(HPO_LOSSES)
    if loss not in LOSSES:
        raise FacebenchError(f"unknown loss {loss!r}; hpo searches the multiterm losses: {choices}")
    if loss not in HPO_LOSSES:
        raise FacebenchError(f"the {loss} loss has no weights to search; hpo searches the multiterm losses: {choices}")
    return HPO_LOSSES[loss]


def search_space(loss: str, scale_weights: dict[str, float]) -> dict[str, tuple[float, float]]:
    """``{name: (low, high)}`` of the searched parameters of ``loss``: ``lr`` in :data:`LR_RANGE`,
    each weight in ``WEIGHT_FACTORS × scale_weights[name]`` (all sampled log-uniformly)."""
    space = {"lr": LR_RANGE}
    for name in check_loss(loss):
        value = float(scale_weights[name])
        if not (math.isfinite(value) and value > 0):
            raise FacebenchError(f"the scale-compensating {name} is {value}; cannot search around it")
        space[name] = (WEIGHT_FACTORS[0] * value, WEIGHT_FACTORS[1] * value)
    return space


def best_trial(trials: pd.DataFrame) -> dict[str, Any]:
    """The completed row of lowest ``objective_shape_mm`` (ties, to 1e-9 relative, broken by the
    lower ``val_reprojection_px``); FacebenchError when no trial completed."""
    done = trials[(trials["state"] == "complete") & trials["objective_shape_mm"].notna()]
    if done.empty:
        raise FacebenchError("no trial completed (every training diverged); lower the learning-rate range")
    lowest = float(done["objective_shape_mm"].min())
    ties = done[done["objective_shape_mm"] <= lowest * (1 + 1e-9)]
    row = ties.sort_values(["val_reprojection_px", "trial"], na_position="last").iloc[0]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.to_dict().items()}


def _write_table(trials: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        trials.to_csv(tmp, index=False, float_format="%.6g")



def _check_inputs(out: Path, dataset: Path, val: Path, trials: int, epochs: int, overwrite: bool):
    from facebench.datasets.dataset_file import FaceDataset

    if trials < 1:
        raise FacebenchError(f"--trials must be >= 1, got {trials}")
    if epochs < 1:
        raise FacebenchError(f"--epochs must be >= 1, got {epochs}")
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputFileError(out, "output folder exists and is not empty (use --overwrite)")
    train_set = FaceDataset(dataset)
    FaceDataset(val)
    return train_set


def run_hpo(
    loss: str,
    dataset: str | Path,
    val: str | Path,
    out: str | Path,
    *,
    trials: int = 20,
    epochs: int = 5,
    encoder: str = "small",
    batch: int = 32,
    seed: int = 0,
    device: str = "cpu",
    views: int | None = None,
    overwrite: bool = False,
    scale_weights: dict[str, float] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
) -> HpoResult:
    """Search the learning rate and weights of ``loss`` (``coarse`` or ``xqt``); module docstring.

    Args:
        dataset, val: training and validation sets (facebench ``.h5``, same face model).
        out: output folder (``trials.csv``, ``best.json``, ``trial_NNN/``); an existing non-empty
            folder needs ``overwrite``.
        trials: number of optuna trials (20 in the paper's setup).
        epochs: epochs of each trial's training.
        encoder, batch, device: as ``facebench train regressor``; ``seed`` seeds the sampler and
            every trial.
        scale_weights: the centre of the weight ranges (default
            :func:`~facebench.baselines.ramon2019.losses.ramon2019_scale_weights` of ``dataset``).
        on_trial: called after each trial with its ``trials.csv`` row.
        on_step: passed to :func:`~facebench.baselines.ramon2019.training.train` (progress bars).

    Returns:
        :class:`HpoResult`. Raises FacebenchError / InputFileError (one line) on bad input, before
        any training: unknown or non-multiterm loss, unreadable datasets, bad counts.
    """
    import optuna

    from facebench.baselines.ramon2019.losses import ramon2019_scale_weights
    from facebench.baselines.ramon2019.training import TrainConfig, train

    started = time.perf_counter()
    check_loss(loss)
    out, dataset, val = Path(out), Path(dataset), Path(val)
    train_set = _check_inputs(out, dataset, val, trials, epochs, overwrite)
    if scale_weights is None:
        scale_weights = ramon2019_scale_weights(train_set)
    space = search_space(loss, scale_weights)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in space.items()}
        run = out / f"trial_{trial.number:03d}"
        config = TrainConfig(dataset=dataset, val=val, out=run, loss=loss, encoder=encoder, epochs=epochs,
                             batch=batch, device=device, seed=seed, views=views, overwrite=True,
                             method=f"hpo-{loss}-{trial.number:03d}", **params)
        row: dict[str, Any] = {c: None for c in TRIAL_COLUMNS}
        row.update(trial=trial.number, epochs=epochs, run=run.name, **params)
        t0 = time.perf_counter()
        try:
            result = train(config, on_step=on_step)
        except FacebenchError as error:
            if "diverged" not in str(error):
                raise
            row.update(state="failed", seconds=time.perf_counter() - t0)
            value = float("nan")
        else:
            best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
            value = float(result.best_shape_mm) if result.best_shape_mm is not None else float("nan")
            row.update(state="complete" if math.isfinite(value) else "failed", objective_shape_mm=value,
                       val_reprojection_px=best.get("val_reprojection_px"),
                       val_translation_cm=best.get("val_translation_cm"),
                       val_rotation_deg=best.get("val_rotation_deg"), best_epoch=result.best_epoch,
                       seconds=time.perf_counter() - t0)
        rows.append(row)
        _write_table(pd.DataFrame(rows, columns=list(TRIAL_COLUMNS)), out / TRIALS_CSV)
        if on_trial is not None:
            on_trial(row)
        return value  # NaN marks the trial failed in optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=trials, catch=())
    finally:
        optuna.logging.set_verbosity(verbosity)
    table = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    for column in ("lr", "alpha", "beta", "gamma", "objective_shape_mm", "val_reprojection_px",
                   "val_translation_cm", "val_rotation_deg", "seconds"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    _write_table(table, out / TRIALS_CSV)
    best = best_trial(table)
    seconds = time.perf_counter() - started
    _write_json({"loss": loss, "best": best, "params": {k: best[k] for k in space},
                 "space": {k: list(v) for k, v in space.items()}, "scale_weights": scale_weights,
                 "objective": "validation shape error (mm) at the trial's best epoch; ties: lower reprojection px",
                 "trials": trials, "epochs": epochs, "encoder": encoder, "batch": batch, "seed": seed,
                 "dataset": str(dataset), "val": str(val), "seconds": seconds}, out / BEST_JSON)
    return HpoResult(trials=table, best=best, space=space, out=out, seconds=seconds)
