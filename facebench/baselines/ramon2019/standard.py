"""``facebench reproduce table2 --standard``: Ramon et al. 2019's claim tested on CPU, resumable.

The paper's setting (``ramon2019`` generator preset: neutral faces, the out-of-span world, the
variable camera distance, the Fig. 4 angle distribution; symmetrized data, ``symmetrize``; subjects
split 70/10/20) at a size that converges on CPU (:data:`STANDARD`). For every seed ``S`` of
``seed … seed + seeds − 1``, in ``OUT/seed<S>/``:

- ``data/``: the generated train/val/test sets (generated once; the folder appears when complete);
- ``search/coarse``, ``search/xqt``: the reduced Bayesian search (optuna TPE, seeded) of the
  learning rate and weights (:func:`facebench.baselines.ramon2019.hpo.search_space`), ``trials``
  trainings of at most ``search_epochs`` epochs each, objective the validation shape error of the
  trial's best epoch; ``trial_NNN/result.json`` per finished trial, ``best.json`` at the end;
- ``runs/NAME/``: one training per row of :data:`ROWS` (Coarse and XQT each with unit weights,
  scale-compensating weights and the searched weights; GAL, SRL, MRL with V = 2 trained once at
  ``lr``) and per V of Fig. 6 (``mrl-vV``; V = 2 is the ``mrl`` row). Each training stops by the
  plateau rule (:func:`facebench.baselines.ramon2019.training.plateaued`, for each of
  :data:`PLATEAU_METRICS`: the validation shape error **and** the validation reprojection error of
  the last ``window`` epochs no more than ``delta`` lower, relative, than the ``window`` before,
  after ``min_epochs``) or at ``max_epochs``; its last checkpoint is scored on the test set (``submissions/``,
  ``results/NAME/``, ``synthetic`` protocol) and ``runs/NAME/result.json`` records the metrics,
  epochs and seconds;
- ``refs/result.json`` and ``results/mean-shape``, ``results/projection-oracle``: the reference rows.

Then in ``OUT`` (recomputed from the kept results at every run, cheap):
``table2.csv`` (mean and sd over seeds, ``verdict``; :func:`facebench.leaderboard.seeds.summarize_seeds`)
plus ``ci_low``/``ci_high`` of the shape and reprojection errors (95 %, resampling subjects of all
seeds, pooled), ``verdicts.csv``, ``fig5.csv``/``fig5.png`` (errors per |yaw| bin: mean, CI, sample
count), ``fig6.csv``/``fig6.png`` (MRL against V), ``curves.png`` (validation shape error per epoch
of every training, the stopping epoch marked), ``epochs.csv`` and ``summary.json``.

**Resume.** Every job (data, search trial, training, references) writes its result file last,
with a key (the settings it depends on); a rerun skips a job whose key matches, resumes an
unfinished training from its last checkpoint, and replays finished search trials into the seeded
sampler (so the next suggestion is the one an uninterrupted search would make). ``OUT/settings.json``
holds the settings; a rerun with different settings on the same folder is an error (one line).

**Workers.** ``workers`` > 1 runs independent jobs (the trainings of a seed, the two searches, other
seeds) in that many processes (``spawn``, one torch thread each). Each job depends only on its own
settings and inputs, so the results do not depend on ``workers`` (tested).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facebench.atomic import write_csv as _write_csv
from facebench.atomic import write_figure
from facebench.atomic import write_json as _write_json
from facebench.errors import FacebenchError, InputFileError

__all__ = ["STANDARD", "PLATEAU_METRICS", "ROWS", "StandardSettings", "StandardResult", "check_standard", "plan_jobs",
           "reproduce_standard", "RESULT", "METRICS"]

#: The standard mode's defaults (chosen by measuring: baselines/ramon2019.md, "Standard mode").
STANDARD: dict[str, Any] = {"train": 400, "size": 32, "encoder": "small", "batch": 16, "lr": 3e-4,
                            "max_epochs": 20, "window": 4, "delta": 0.01, "min_epochs": 12,
                            "trials": 4, "search_epochs": 8, "images_per_subject": 4}
#: The validation metrics whose plateau stops a training (all of them must have plateaued): shape
#: alone stopped Coarse at its mean-face plateau while its pose was still learning, and windows of
#: 3 epochs with 2 % and 6 epochs at least stopped it after 6–7 noisy epochs (measured; card).
PLATEAU_METRICS = ("val_shape_mm", "val_reprojection_px")
#: Rows of Table 2 in the standard mode: name -> (loss, weighting). Weighting ``unit`` (every
#: weight 1), ``scale`` (scale-compensating), ``search`` (Bayesian search), ``""`` (no weights).
ROWS: dict[str, tuple[str, str]] = {
    "coarse-unit": ("coarse", "unit"), "coarse-scale": ("coarse", "scale"), "coarse-search": ("coarse", "search"),
    "xqt-unit": ("xqt", "unit"), "xqt-scale": ("xqt", "scale"), "xqt-search": ("xqt", "search"),
    "gal": ("gal", ""), "srl": ("srl", ""), "mrl": ("mrl", ""),
}
METRICS = ("reprojection_px", "shape_mm", "translation_cm", "rotation_deg")
SPLIT = (0.7, 0.1, 0.2)
RESULT = "result.json"
#: Settings that do not change any result (left out of the folder's key).
_NOT_KEYED = ("out", "workers", "seeds")


@dataclasses.dataclass
class StandardSettings:
    """Settings of :func:`reproduce_standard` (defaults :data:`STANDARD`). ``train``: training
    samples per seed before mirroring (the generated set has ``train / 0.7`` samples, twice as many
    rows with their mirror images; ``images_per_subject`` samples per subject); ``size`` px;
    ``lr``: learning rate of the non-searched trainings; ``max_epochs``, ``window``, ``delta``,
    ``min_epochs``: the stopping rule; ``trials`` × ``search_epochs``: the search budget per
    multiterm loss; ``views``: the V of Fig. 6; ``camera``: the preset's ``variable`` camera, or
    ``fixed`` (one distance and focal length: the control that makes the depth observable)."""

    out: Path
    seed: int = 0
    seeds: int = 3
    workers: int = 1
    train: int = STANDARD["train"]
    size: int = STANDARD["size"]
    encoder: str = STANDARD["encoder"]
    batch: int = STANDARD["batch"]
    lr: float = STANDARD["lr"]
    max_epochs: int = STANDARD["max_epochs"]
    window: int = STANDARD["window"]
    delta: float = STANDARD["delta"]
    min_epochs: int = STANDARD["min_epochs"]
    trials: int = STANDARD["trials"]
    search_epochs: int = STANDARD["search_epochs"]
    images_per_subject: int = STANDARD["images_per_subject"]
    views: tuple[int, ...] = (1, 2, 4, 8)
    camera: str = "variable"

    def keyed(self) -> dict[str, Any]:
        """The settings that determine the results (JSON-able; ``camera`` only when not the preset's)."""
        data = dataclasses.asdict(self)
        data["views"] = list(self.views)
        if self.camera == "variable":
            data.pop("camera")
        return {k: v for k, v in data.items() if k not in _NOT_KEYED}


@dataclasses.dataclass
class StandardResult:
    """What :func:`reproduce_standard` wrote: ``table2`` (across seeds), ``fig6``, the files, the
    jobs run by this call and those found done, and the wall time."""

    table2: pd.DataFrame
    fig6: pd.DataFrame
    out: Path
    files: dict[str, Path]
    ran: int
    reused: int
    seconds: float


def check_standard(s: StandardSettings) -> None:
    """FacebenchError (one line) on bad settings."""
    from facebench.baselines.ramon2019.regressor import ENCODERS
    from facebench.leaderboard.seeds import seed_list

    seed_list(s.seed, s.seeds)
    for name in ("train", "size", "batch", "max_epochs", "window", "min_epochs", "trials", "search_epochs",
                 "workers", "images_per_subject"):
        value = getattr(s, name)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise FacebenchError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value}")
    if s.encoder not in ENCODERS:
        raise FacebenchError(f"unknown encoder {s.encoder!r}; choose one of {', '.join(ENCODERS)}")
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise FacebenchError(f"--lr must be a finite number > 0, got {s.lr}")
    if not 0 <= s.delta < 1:
        raise FacebenchError(f"the plateau delta must be in [0, 1), got {s.delta}")
    if s.camera not in ("variable", "fixed"):
        raise FacebenchError(f"--camera must be variable or fixed, got {s.camera!r}")
    if not s.views or any(v < 1 for v in s.views) or 2 not in s.views:
        raise FacebenchError(f"--views must be integers >= 1 including 2 (the MRL row), got {list(s.views)}")


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(folder: Path, key: str) -> dict[str, Any] | None:
    """The result file of ``folder`` when it was written with ``key``; None otherwise."""
    path = folder / RESULT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("key") == key else None


# ------------------------------------------------------------------------------------------ jobs
@dataclasses.dataclass
class Job:
    """One unit of work: ``kind`` (data, search, train, refs), its folder, its settings (the key is
    their hash), and the names of the jobs it needs."""

    name: str
    kind: str
    folder: Path
    params: dict[str, Any]
    needs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return _key({"kind": self.kind, **{k: v for k, v in self.params.items() if k != "seed_folder"}})


def plan_jobs(s: StandardSettings) -> list[Job]:
    """Every job of the run in a valid order (dependencies first; searches before the trainings
    that do not need them, so that they start early with several workers)."""
    from facebench.leaderboard.seeds import seed_folder, seed_list

    common = {k: getattr(s, k) for k in ("size", "encoder", "batch", "max_epochs", "window", "delta",
                                         "min_epochs")}
    common["plateau_metrics"] = list(PLATEAU_METRICS)
    jobs = []
    for seed in seed_list(s.seed, s.seeds):
        root = seed_folder(s.out, seed)
        data = {"seed": seed, "train": s.train, "size": s.size, "images_per_subject": s.images_per_subject}
        if s.camera != "variable":
            data["camera"] = s.camera
        d = f"seed{seed}/data"
        jobs.append(Job(d, "data", root / "data", data))
        jobs.append(Job(f"seed{seed}/refs", "refs", root / "refs", {"data": data, "seed_folder": str(root)}, (d,)))
        for loss in ("coarse", "xqt"):
            jobs.append(Job(f"seed{seed}/search/{loss}", "search", root / "search" / loss,
                            {"data": data, "loss": loss, "trials": s.trials, "search_epochs": s.search_epochs,
                             "seed": seed, **common}, (d,)))
        names = [*ROWS, *(f"mrl-v{v}" for v in s.views if v != 2)]
        for name in names:
            loss, weighting = ROWS.get(name, ("mrl", ""))
            views = int(name.split("-v")[1]) if name.startswith("mrl-v") else (2 if loss == "mrl" else None)
            needs = (d, f"seed{seed}/search/{loss}") if weighting == "search" else (d,)
            params = {"data": data, "loss": loss, "weighting": weighting, "views": views, "lr": s.lr,
                      "seed": seed, "name": name, "seed_folder": str(root), **common}
            if weighting == "search":
                params["search"] = {"trials": s.trials, "search_epochs": s.search_epochs}
            jobs.append(Job(f"seed{seed}/runs/{name}", "train", root / "runs" / name, params, needs))
    return jobs


def _splits(folder: Path) -> dict[str, Path]:
    from facebench.baselines.ramon2019.table2 import find_splits

    return find_splits(folder)


def _run_data(job: Job) -> dict[str, Any]:
    from facebench.datasets.generator import GeneratorSettings, generate

    p = job.params
    n = max(3, int(round(p["train"] / SPLIT[0])))
    partial = job.folder.with_name(job.folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    common = {"n": n, "size": p["size"], "seed": p["seed"], "symmetrize": True, "split": "70/10/20",
              "identities": max(3, n // p["images_per_subject"])}
    if p.get("camera", "variable") == "variable":
        settings = GeneratorSettings(preset="ramon2019", **common)
    else:  # the preset's other settings, spelt out (the preset would turn the default camera variable)
        settings = GeneratorSettings(angles="ramon2019", neutral=True, world="out-of-span", camera=p["camera"],
                                     **common)
    t0 = time.perf_counter()
    generate(settings, partial / "synthetic.h5", overwrite=True, batch_size=16)
    if job.folder.exists():
        shutil.rmtree(job.folder)
    partial.rename(job.folder)
    return {"samples": n, "seconds": time.perf_counter() - t0}


def _scale(splits: dict[str, Path]) -> dict[str, float]:
    from facebench.baselines.ramon2019.losses import ramon2019_scale_weights

    return ramon2019_scale_weights(splits["train"])


def _train_config(p: dict[str, Any], splits, out: Path, lr: float, weights: dict[str, float], epochs: int,
                  method: str):
    from facebench.baselines.ramon2019.training import CHECKPOINT, TrainConfig

    resume = (out / CHECKPOINT).is_file()
    return TrainConfig(dataset=splits["train"], val=splits["val"], out=out, loss=p["loss"], encoder=p["encoder"],
                       epochs=epochs, batch=p["batch"], lr=lr, seed=p["seed"], views=p.get("views"),
                       resume=resume, overwrite=not resume, method=method, plateau_window=p["window"],
                       plateau_delta=p["delta"], min_epochs=min(p["min_epochs"], epochs),
                       plateau_metrics=tuple(p["plateau_metrics"]), **weights)


def _fresh_run(folder: Path, key: str) -> None:
    """Remove an unfinished run folder made with another key (so it restarts, never mixes)."""
    marker = folder / "job_key.txt"
    if folder.exists() and (not marker.is_file() or marker.read_text().strip() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")


def _history_summary(history: list[dict]) -> dict[str, Any]:
    return {"epochs": len(history), "val_shape_mm": [float(r.get("val_shape_mm", float("nan"))) for r in history],
            "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])) if history else float("nan")}


def _run_search(job: Job) -> dict[str, Any]:
    """The reduced Bayesian search (module docstring); finished trials are replayed into the seeded
    TPE sampler, so an interrupted search continues with the suggestion it would have made."""
    import optuna

    from facebench.baselines.ramon2019.hpo import HPO_LOSSES, TRIAL_COLUMNS, best_trial, search_space
    from facebench.baselines.ramon2019.training import train

    p = job.params
    splits = _splits(job.folder.parent.parent / "data")
    space = search_space(p["loss"], _scale(splits))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    t0 = time.perf_counter()
    try:
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=p["seed"]))
        for number in range(p["trials"]):
            trial = study.ask()
            params = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in space.items()}
            folder = job.folder / f"trial_{number:03d}"
            key = _key({"search": job.key, "trial": number, "params": params})
            found = _done(folder, key)
            if found is None:
                _fresh_run(folder, key)
                weights = {w: params[w] for w in HPO_LOSSES[p["loss"]]}
                config = _train_config(p, splits, folder, params["lr"], weights, p["search_epochs"],
                                       f"search-{p['loss']}-{number:03d}")
                started = time.perf_counter()
                try:
                    result = train(config)
                except FacebenchError as error:
                    if "diverged" not in str(error):
                        raise
                    found = {"state": "failed", "objective_shape_mm": None, "seconds": time.perf_counter() - started}
                else:
                    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
                    found = {"state": "complete", "objective_shape_mm": result.best_shape_mm,
                             "val_reprojection_px": best.get("val_reprojection_px"),
                             "val_translation_cm": best.get("val_translation_cm"),
                             "val_rotation_deg": best.get("val_rotation_deg"), "best_epoch": result.best_epoch,
                             "seconds": time.perf_counter() - started, **_history_summary(result.history)}
                found.update(key=key, params=params)
                _write_json(found, folder / RESULT)
            value = found.get("objective_shape_mm")
            if value is None or not math.isfinite(value):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
            rows.append({**{c: None for c in TRIAL_COLUMNS}, "trial": number, "run": folder.name,
                         **params, **{k: found.get(k) for k in TRIAL_COLUMNS if k in found},
                         "epochs": found.get("epochs")})
    finally:
        optuna.logging.set_verbosity(verbosity)
    table = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    for column in ("lr", "alpha", "beta", "gamma", "objective_shape_mm", "val_reprojection_px", "seconds"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    _write_csv(table, job.folder / "trials.csv")
    best = best_trial(table)
    return {"params": {k: float(best[k]) for k in space}, "best_trial": int(best["trial"]),
            "objective_shape_mm": float(best["objective_shape_mm"]), "trainings": len(table),
            "seconds": float(table["seconds"].fillna(0).sum()), "epochs": int(pd.to_numeric(table["epochs"]).sum()),
            "wall_seconds": time.perf_counter() - t0}


def _score(test: Path, submission: Path, results: Path) -> dict[str, float]:
    from facebench.baselines.ramon2019.table2 import _score as score

    return score(test, submission, results)


def _run_train(job: Job) -> dict[str, Any]:
    from facebench.baselines.ramon2019.hpo import HPO_LOSSES
    from facebench.baselines.ramon2019.predict import predict
    from facebench.baselines.ramon2019.training import train

    p = job.params
    root = Path(p["seed_folder"])
    splits = _splits(root / "data")
    lr, weights, search = p["lr"], {}, None
    if p["weighting"] == "unit":
        weights = {w: 1.0 for w in HPO_LOSSES[p["loss"]]}
    elif p["weighting"] == "scale":
        scale = _scale(splits)
        weights = {w: float(scale[w]) for w in HPO_LOSSES[p["loss"]]}
    elif p["weighting"] == "search":
        search = json.loads((root / "search" / p["loss"] / RESULT).read_text())
        lr = search["params"]["lr"]
        weights = {w: search["params"][w] for w in HPO_LOSSES[p["loss"]]}
    _fresh_run(job.folder, job.key)
    method = f"ramon2019-{p['name']}"
    t0 = time.perf_counter()
    result = train(_train_config(p, splits, job.folder, lr, weights, p["max_epochs"], method))
    submission = root / "submissions" / f"{p['name']}.h5"
    submission.parent.mkdir(parents=True, exist_ok=True)
    predict(result.checkpoint, splits["test"], submission, overwrite=True, method=method)
    metrics = _score(splits["test"], submission, root / "results" / p["name"])
    history = result.history
    return {"metrics": metrics, "lr": lr, "weights": weights, "views": p.get("views"),
            "best_epoch": result.best_epoch, "stopped": len(history) < p["max_epochs"],
            "trainings": 1 + (search["trainings"] if search else 0),
            "search_seconds": search["seconds"] if search else 0.0,
            "train_seconds": float(sum(r["seconds"] + r.get("val_seconds", 0.0) for r in history)),
            "wall_seconds": time.perf_counter() - t0, **_history_summary(history)}


def _run_refs(job: Job) -> dict[str, Any]:
    from facebench.baselines.ramon2019.table2 import _reference_rows

    root = Path(job.params["seed_folder"])
    lines: list[str] = []
    rows = _reference_rows(_splits(root / "data")["test"], root, lines.append)
    return {"rows": rows, "notes": lines}


_RUNNERS: dict[str, Callable[[Job], dict[str, Any]]] = {"data": _run_data, "search": _run_search,
                                                         "train": _run_train, "refs": _run_refs}


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` (one torch thread) and write its result file (with the key) last; return it."""
    import torch

    torch.set_num_threads(1)
    result = _RUNNERS[job.kind](job)
    result["key"] = job.key
    job.folder.mkdir(parents=True, exist_ok=True)
    _write_json(result, job.folder / RESULT)
    return result


def _worker_init() -> None:
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    os.environ["OMP_NUM_THREADS"] = "1"


def _execute(jobs: list[Job], workers: int, stage: Callable[[str], None]) -> tuple[int, int]:
    """Run the jobs not already done, dependencies first, in ``workers`` processes; return
    ``(ran, reused)``."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done = {j.name for j in jobs if _done(j.folder, j.key) is not None}
    reused = len(done)
    todo = [j for j in jobs if j.name not in done]
    if reused:
        stage(f"resuming: {reused} of {len(jobs)} jobs already done")
    total, ran = len(todo), 0
    if workers == 1:
        for job in todo:
            stage(f"[{ran + 1}/{total}] {job.name}")
            result = run_job(job)
            ran += 1
            stage(f"      {_describe(job, result)}")
        return ran, reused
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    running: dict[Any, Job] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        try:
            while todo or running:
                for job in [j for j in todo if all(n in done for n in j.needs)]:
                    if len(running) >= workers:
                        break
                    todo.remove(job)
                    stage(f"[start] {job.name}")
                    running[pool.submit(run_job, job)] = job
                if not running:
                    raise FacebenchError("internal: jobs wait for jobs that never run")
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    result = future.result()
                    done.add(job.name)
                    ran += 1
                    stage(f"[{ran}/{total}] {job.name}: {_describe(job, result)}")
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return ran, reused


def _describe(job: Job, result: dict[str, Any]) -> str:
    if job.kind == "train":
        m = result["metrics"]
        return (f"shape {m['shape_mm']:.3f} mm, reprojection {m['reprojection_px']:.3f} px after "
                f"{result['epochs']} epochs ({result['train_seconds']:.0f} s)")
    if job.kind == "search":
        return (f"best trial {result['best_trial']}: val shape {result['objective_shape_mm']:.3f} mm, "
                + ", ".join(f"{k} {v:.3g}" for k, v in result["params"].items()))
    if job.kind == "data":
        return f"{result['samples']} samples in {result['seconds']:.0f} s"
    return "; ".join(result.get("notes", [])).strip()


# ------------------------------------------------------------------------------------------ tables
def _seed_table(s: StandardSettings, seed: int) -> pd.DataFrame:
    from facebench.leaderboard.seeds import seed_folder

    root = seed_folder(s.out, seed)
    rows = []
    for name, (_loss, weighting) in ROWS.items():
        r = json.loads((root / "runs" / name / RESULT).read_text())
        w = r["weights"]
        rows.append({"loss": name, **{k: r["metrics"][k] for k in METRICS}, "weighting": weighting,
                     "epochs": r["epochs"], "stopped_by_plateau": r["stopped"], "best_epoch": r["best_epoch"],
                     "time_per_epoch_s": r["seconds_per_epoch"], "trainings": r["trainings"],
                     "total_time_s": r["train_seconds"] + r["search_seconds"], "lr": r["lr"],
                     "alpha": w.get("alpha"), "beta": w.get("beta"), "gamma": w.get("gamma"), "views": r["views"]})
    refs = json.loads((root / "refs" / RESULT).read_text())
    rows += [{"loss": row["loss"], **{k: row[k] for k in METRICS}} for row in refs["rows"]]
    return pd.DataFrame(rows)


def _pooled(s: StandardSettings, seeds: list[int], names: list[str]) -> dict[str, pd.DataFrame]:
    """Per-sample frames of every row, all seeds stacked, with a ``unit`` column (seed, subject)."""
    from facebench.leaderboard.seeds import per_sample_frames, seed_folder

    pooled: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    for seed in seeds:
        frames = per_sample_frames({n: seed_folder(s.out, seed) / "results" / n for n in names})
        for n, frame in frames.items():
            frame = frame[frame["scored"]].copy()
            subject = frame["subject"] if "subject" in frame else pd.Series(np.arange(len(frame)), index=frame.index)
            frame["unit"] = seed * 10_000_000 + subject.astype(np.int64)
            frame["seed"] = seed
            pooled[n].append(frame)
    return {n: pd.concat(v, ignore_index=True) for n, v in pooled.items() if v}


def _ci(frame: pd.DataFrame, metric: str) -> tuple[float, float]:
    from facebench.benchmark.statistics import bootstrap_mean_ci

    if frame.empty:
        return float("nan"), float("nan")
    return bootstrap_mean_ci(frame[metric].to_numpy(), frame["unit"].to_numpy(), resamples=2000, seed=0)


def _fig5(pooled: dict[str, pd.DataFrame], names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        frame = pooled.get(name)
        if frame is None or "yaw_bin" not in frame:
            continue
        for label, group in frame.groupby("yaw_bin", sort=False):
            for metric in ("shape_mm", "reprojection_px"):
                low, high = _ci(group, metric)
                rows.append({"loss": name, "yaw_bin": label, "metric": metric, "mean": float(group[metric].mean()),
                             "ci_low": low, "ci_high": high, "samples": len(group),
                             "subjects": int(group["unit"].nunique()), "seeds": int(group["seed"].nunique())})
    table = pd.DataFrame(rows, columns=["loss", "yaw_bin", "metric", "mean", "ci_low", "ci_high", "samples",
                                        "subjects", "seeds"])
    if not table.empty:
        table["_lo"] = table["yaw_bin"].map(lambda b: float(str(b).strip("[()]").split(",")[0]) if b != "out" else 1e9)
        table = table.sort_values(["loss", "metric", "_lo"], kind="stable").drop(columns="_lo")
        order = {n: i for i, n in enumerate(names)}
        table = table.sort_values("loss", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    return table


def plot_fig5(fig5: pd.DataFrame, out_path: Path) -> Path:
    """Fig. 5: shape (mm) and reprojection (px) error per |yaw| bin, one line per row, 95 % CI
    bars (subjects of all seeds), the sample count of each bin under the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, metric, label in ((axes[0], "shape_mm", "3D shape error (mm)"),
                              (axes[1], "reprojection_px", "reprojection error (px)")):
        part = fig5[fig5["metric"] == metric]
        bins = list(dict.fromkeys(part["yaw_bin"]))
        x = {b: i for i, b in enumerate(bins)}
        names = list(dict.fromkeys(part["loss"]))
        for j, name in enumerate(names):
            rows = part[part["loss"] == name]
            xs = np.array([x[b] for b in rows["yaw_bin"]]) + (j - len(names) / 2) * 0.03
            mean = rows["mean"].to_numpy()
            err = np.vstack([mean - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - mean])
            ax.errorbar(xs, mean, yerr=err, marker="o", ms=3, capsize=2, lw=1, label=name)
        counts = part.drop_duplicates("yaw_bin").set_index("yaw_bin")["samples"]
        ax.set_xticks(range(len(bins)))
        ax.set_xticklabels([f"{b}\nn={counts[b]}" for b in bins], fontsize=7)
        ax.set_xlabel("|yaw| bin (degrees); n = test images per row, all seeds")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Errors per |yaw| bin (Ramon et al. 2019, Fig. 5), 95% CI over subjects and seeds", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, out_path, dpi=100)



def plot_fig6(fig6: pd.DataFrame, out_path: Path) -> Path:
    """Fig. 6: MRL's test shape (mm) and reprojection (px) error against V (log2 axis): mean over
    seeds with the 95 % CI over subjects and seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, label in ((axes[0], "shape_mm", "3D shape error (mm)"),
                              (axes[1], "reprojection_px", "reprojection error (px)")):
        mean = fig6[f"{metric}_mean"].to_numpy()
        err = np.vstack([mean - fig6[f"{metric}_ci_low"].to_numpy(), fig6[f"{metric}_ci_high"].to_numpy() - mean])
        ax.errorbar(fig6["views"], mean, yerr=err, marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(fig6["views"]))
        ax.set_xticklabels([str(v) for v in fig6["views"]])
        ax.set_xlabel(f"virtual views V (n = {int(fig6['samples'].iloc[0])} test images, all seeds)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle("MRL: test error vs number of views (Ramon et al. 2019, Fig. 6), 95% CI", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, out_path, dpi=100)


def plot_curves(curves: pd.DataFrame, out_path: Path) -> Path:
    """Validation shape error (mm, solid, left axis) and reprojection error (px, dashed, right axis)
    per epoch of every training: one panel per row, one colour per seed; the last epoch, where the
    plateau rule or the cap stopped it, marked with a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(curves["run"]))
    cols = 4
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.7 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        part = curves[curves["run"] == name]
        right = ax.twinx()
        for i, (seed, group) in enumerate(part.groupby("seed")):
            colour = colours[i % len(colours)]
            ax.plot(group["epoch"], group["val_shape_mm"], lw=1, color=colour, label=f"seed {seed}")
            ax.plot(group["epoch"].iloc[-1:], group["val_shape_mm"].iloc[-1:], "o", ms=3, color="k")
            if "val_reprojection_px" in group:
                right.plot(group["epoch"], group["val_reprojection_px"], lw=0.8, ls="--", color=colour)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("val shape (mm), solid", fontsize=7)
        right.set_ylabel("val reprojection (px), dashed", fontsize=7)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        right.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Validation errors per epoch (dot: the stopping epoch)", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, out_path, dpi=100)


def _curves(s: StandardSettings, seeds: list[int]) -> pd.DataFrame:
    """Per-epoch validation errors of every final training (from each run's ``log.csv``)."""
    from facebench.leaderboard.seeds import seed_folder

    frames = []
    names = [*ROWS, *(f"mrl-v{v}" for v in s.views if v != 2)]
    for seed in seeds:
        for name in names:
            log = pd.read_csv(seed_folder(s.out, seed) / "runs" / name / "log.csv")
            frames.append(pd.DataFrame({"run": name, "seed": seed, "epoch": log["epoch"],
                                        "val_shape_mm": log["val_shape_mm"],
                                        "val_reprojection_px": log["val_reprojection_px"]}))
    return pd.concat(frames, ignore_index=True)


def _tables(s: StandardSettings, stage) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    from facebench.leaderboard.seeds import per_sample_frames, seed_folder, seed_list, summarize_seeds

    out = Path(s.out)
    seeds = seed_list(s.seed, s.seeds)
    tables = [_seed_table(s, seed) for seed in seeds]
    for seed, table in zip(seeds, tables):
        _write_csv(table, seed_folder(out, seed) / "table2.csv")
    names = [str(v) for v in tables[0]["loss"]]
    frames = [per_sample_frames({n: seed_folder(out, seed) / "results" / n for n in names}) for seed in seeds]
    table2, _verdicts, files = summarize_seeds(out, "table2", tables, "loss",
                                               [*METRICS, "epochs", "time_per_epoch_s", "total_time_s",
                                                "trainings"], frames, METRICS, "shape_mm")
    pooled = _pooled(s, seeds, names)
    for metric in ("shape_mm", "reprojection_px"):
        cis = [_ci(pooled[n], metric) if n in pooled else (float("nan"), float("nan")) for n in table2["loss"]]
        table2[f"{metric}_ci_low"] = [c[0] for c in cis]
        table2[f"{metric}_ci_high"] = [c[1] for c in cis]
    weighting = dict(zip(tables[0]["loss"], tables[0]["weighting"]))
    table2.insert(1, "weighting", [weighting.get(n) for n in table2["loss"]])
    files["table2"] = _write_csv(table2, out / "table2.csv")

    fig5 = _fig5(pooled, names)
    files["fig5"] = _write_csv(fig5, out / "fig5.csv")
    files["fig5_png"] = plot_fig5(fig5, out / "fig5.png")

    fig_rows = []
    for v in s.views:
        name = "mrl" if v == 2 else f"mrl-v{v}"
        runs = [json.loads((seed_folder(out, seed) / "runs" / name / RESULT).read_text()) for seed in seeds]
        frame = _pooled(s, seeds, [name]).get(name, pd.DataFrame(columns=["unit", "seed", *METRICS]))
        row: dict[str, Any] = {"views": v, "samples": len(frame), "n_seeds": len(seeds)}
        for metric in METRICS:
            values = np.array([r["metrics"][metric] for r in runs], np.float64)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        for metric in ("shape_mm", "reprojection_px"):
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = _ci(frame, metric)
        row["epochs_mean"] = float(np.mean([r["epochs"] for r in runs]))
        row["time_per_epoch_s"] = float(np.mean([r["seconds_per_epoch"] for r in runs]))
        fig_rows.append(row)
    fig6 = pd.DataFrame(fig_rows).sort_values("views", ignore_index=True)
    files["fig6"] = _write_csv(fig6, out / "fig6.csv")
    files["fig6_png"] = plot_fig6(fig6, out / "fig6.png")

    curves = _curves(s, seeds)
    files["curves"] = _write_csv(curves, out / "curves.csv")
    files["curves_png"] = plot_curves(curves, out / "curves.png")
    searches = []
    for seed in seeds:
        for loss in ("coarse", "xqt"):
            r = json.loads((seed_folder(out, seed) / "search" / loss / RESULT).read_text())
            searches.append({"seed": seed, "loss": loss, **r["params"], "objective_shape_mm": r["objective_shape_mm"],
                             "trainings": r["trainings"], "epochs": r["epochs"], "seconds": r["seconds"]})
    files["search"] = _write_csv(pd.DataFrame(searches), out / "search.csv")
    return table2, fig6, files


# ------------------------------------------------------------------------------------------ entry
def _check_folder(s: StandardSettings) -> None:
    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    path = out / "settings.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text()).get("settings", {})
        except ValueError:
            raise InputFileError(path, "unreadable settings file; use a new --out") from None
        mine = s.keyed()
        changed = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if changed:
            detail = ", ".join(f"{k} {saved.get(k)!r} -> {mine.get(k)!r}" for k in changed)
            raise InputFileError(out, f"made with other settings ({detail}); rerun with the same settings to "
                                      "resume, or use a new --out")
    elif out.is_dir() and any(out.iterdir()):
        raise InputFileError(out, "output folder exists, is not empty and is not a standard-mode run; use a new --out")


def reproduce_standard(settings: StandardSettings, *, on_stage: Callable[[str], None] | None = None
                       ) -> StandardResult:
    """Run (or resume) the standard mode of the module docstring; return a :class:`StandardResult`.

    Raises FacebenchError / InputFileError (one line) on bad settings or a folder made with other
    settings, before any work."""
    started = time.perf_counter()
    check_standard(settings)
    s = dataclasses.replace(settings, out=Path(settings.out), views=tuple(int(v) for v in settings.views))
    _check_folder(s)
    stage = on_stage or (lambda _message: None)
    s.out.mkdir(parents=True, exist_ok=True)
    _write_json({"settings": s.keyed(), "note": "facebench reproduce table2 --standard"}, s.out / "settings.json")
    jobs = plan_jobs(s)
    stage(f"standard mode: {len(jobs)} jobs over {s.seeds} seed(s), {s.workers} worker(s), in {s.out}")
    ran, reused = _execute(jobs, s.workers, stage)
    stage("tables and figures")
    table2, fig6, files = _tables(s, stage)
    seconds = time.perf_counter() - started
    files["summary"] = _write_json({"settings": s.keyed(), "seeds": s.seeds, "workers": s.workers,
                                    "jobs": len(jobs), "ran": ran, "reused": reused, "seconds": seconds,
                                    "table2": table2.to_dict(orient="records"),
                                    "fig6": fig6.to_dict(orient="records")}, s.out / "summary.json")
    stage(f"done in {seconds:.0f} s ({ran} jobs run, {reused} reused): {files['table2']}")
    return StandardResult(table2=table2, fig6=fig6, out=s.out, files=files, ran=ran, reused=reused,
                          seconds=seconds)
