"""Reproduce Ramon et al. 2019, Table 2, Fig. 5 and Fig. 6 on facebench's synthetic data.

:func:`reproduce_table2` runs, in ``out``:

1. ``data/``: synthetic train/val/test sets with disjoint subjects
   (:func:`facebench.datasets.generator.generate`, ``angles="ramon2019"``, split 70/10/20), or the
   sets of ``data`` (one ``*_train.h5``, ``*_val.h5``, ``*_test.h5`` each);
2. the weights of the multiterm losses: ``hpo/coarse`` and ``hpo/xqt``
   (:func:`facebench.baselines.ramon2019.hpo.run_hpo`: learning rate and weights), or with ``quick`` the
   scale-compensating weights (:func:`facebench.baselines.ramon2019.losses.ramon2019_scale_weights`) and the
   given learning rate;
3. ``runs/LOSS/``: one training per loss (coarse, xqt, gal, srl, mrl with 2 views);
4. ``submissions/LOSS.h5`` (predictions on the test set of the last epoch's ``model.pt``, or with
   ``checkpoint="best"`` of ``best.pt``, the epoch of lowest validation shape error) and ``results/LOSS/``
   (scored under the ``synthetic`` protocol);
5. the reference rows (:data:`REFERENCES`, :func:`facebench.benchmark.templates.write_template`),
   scored like the losses in ``submissions/`` and ``results/``: ``mean-shape`` (the model's mean face
   at the true pose: what predicting nothing scores) and ``projection-oracle`` (the ground truth's
   least-squares fit in the regressor's span — its identity modes, no expression — at the true pose:
   the shape floor of any regressor of this model); ``table2.csv`` (:data:`TABLE2_COLUMNS`; the
   losses, then the reference rows), ``leaderboard/`` (Fig. 5: ``plots/bins_*.png``, the
   errors per |yaw| bin, and the cumulative curves);
6. Fig. 6: MRL trained with ``V`` virtual views for each V of ``views`` (the V = 2 run of step 3
   is reused), ``fig6.csv`` (:data:`FIG6_COLUMNS`) and ``fig6.png``.

``summary.json`` records the settings and the wall time. With ``seeds`` N > 1 the whole run is
repeated for seeds ``seed … seed + N - 1`` in ``seed<S>/`` subfolders and ``table2.csv`` /
``fig6.csv`` hold the mean and sd across seeds, ``verdicts.csv`` the orderings that hold in every
seed (:mod:`facebench.leaderboard.seeds`). torch runs with ``threads`` CPU threads
(default 1: on 2 shared cores the small encoder trains at 174 images/s with 1 thread and 63 with
2, and rendering is 6× faster with 1).
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

from facebench.atomic import write_csv as _write_csv
from facebench.atomic import write_figure
from facebench.atomic import write_json as _write_json
from facebench.benchmark.reference_rows import REFERENCES
from facebench.errors import FacebenchError, InputFileError

__all__ = ["LOSS_ORDER", "REFERENCES", "TABLE2_COLUMNS", "FIG6_COLUMNS", "QUICK", "FULL", "ReproduceSettings",
           "ReproduceResult", "resolve_settings", "find_splits", "reproduce_table2", "plot_fig6"]

LOSS_ORDER = ("coarse", "xqt", "gal", "srl", "mrl")
#: Columns of ``table2.csv`` (the paper's, plus the hyperparameters used).
TABLE2_COLUMNS = ("loss", "reprojection_px", "shape_mm", "translation_cm", "rotation_deg", "time_per_epoch_s",
                  "epochs", "trainings", "total_time_s", "lr", "alpha", "beta", "gamma", "views", "best_epoch")
#: Columns of ``fig6.csv``.
FIG6_COLUMNS = ("views", "shape_mm", "reprojection_px", "translation_cm", "rotation_deg", "time_per_epoch_s",
                "total_time_s")
#: ``--quick``: small encoder, 64 px, 2,000 training images (2,858 in all), 5 epochs, no search.
QUICK: dict[str, Any] = {"train": 2000, "size": 64, "epochs": 5, "encoder": "small", "batch": 32, "lr": 3e-4,
                         "trials": 0, "hpo_epochs": 0}
#: The full run (the paper's setup as far as it applies: 20,349 training images at 224 px, VGG-16,
#: 20 search trials); meant for a GPU.
FULL: dict[str, Any] = {"train": 20349, "size": 224, "epochs": 20, "encoder": "vgg16", "batch": 32, "lr": 1e-4,
                        "trials": 20, "hpo_epochs": 5}
SPLIT = (0.7, 0.1, 0.2)
#: Metrics of the table with per-sample values (verdicts across seeds).
METRICS = ("reprojection_px", "shape_mm", "translation_cm", "rotation_deg")


@dataclasses.dataclass
class ReproduceSettings:
    """Settings of :func:`reproduce_table2` (None: the value of :data:`QUICK` or :data:`FULL`).

    ``checkpoint``: ``last`` (score each loss after its E epochs; default) or ``best`` (the epoch
    of lowest validation shape error — this favours early, barely trained epochs for GAL and SRL,
    whose head-frame shape drifts while the camera-frame fit improves).
    ``train``: training images (the generated set has ``train / 0.7`` samples, split 70/10/20 by
    subject); ``size`` px; ``views``: the V of Fig. 6; ``losses``: the rows of Table 2."""

    out: Path
    quick: bool = False
    data: Path | None = None
    train: int | None = None
    size: int | None = None
    epochs: int | None = None
    encoder: str | None = None
    batch: int | None = None
    lr: float | None = None
    trials: int | None = None
    hpo_epochs: int | None = None
    views: tuple[int, ...] = (1, 2, 4, 8)
    losses: tuple[str, ...] = LOSS_ORDER
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    checkpoint: str = "last"
    overwrite: bool = False
    seeds: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class ReproduceResult:
    """Tables and paths :func:`reproduce_table2` wrote; ``seconds`` is the wall time."""

    table2: pd.DataFrame
    fig6: pd.DataFrame
    out: Path
    files: dict[str, Path]
    seconds: float


def resolve_settings(settings: ReproduceSettings) -> ReproduceSettings:
    """``settings`` with every None filled from :data:`QUICK` / :data:`FULL`, checked
    (FacebenchError with one line)."""
    from facebench.baselines.ramon2019.losses import LOSSES

    defaults = QUICK if settings.quick else FULL
    filled = dataclasses.replace(settings, **{k: v for k, v in defaults.items() if getattr(settings, k) is None})
    for name in ("train", "size", "epochs", "batch"):
        if getattr(filled, name) < 1:
            raise FacebenchError(f"--{name} must be >= 1, got {getattr(filled, name)}")
    if not filled.quick and (filled.trials < 1 or filled.hpo_epochs < 1):
        raise FacebenchError("the full run needs --trials >= 1 and --hpo-epochs >= 1 (or use --quick)")
    if not (math.isfinite(filled.lr) and filled.lr > 0):
        raise FacebenchError(f"--lr must be a finite number > 0, got {filled.lr}")
    if not filled.views or any(v < 1 for v in filled.views):
        raise FacebenchError(f"--views must be integers >= 1, got {filled.views}")
    for loss in filled.losses:
        if loss not in LOSSES:
            raise FacebenchError(f"unknown loss {loss!r}; choose among {', '.join(LOSS_ORDER)}")
    if filled.checkpoint not in ("last", "best"):
        raise FacebenchError(f"--checkpoint must be last or best, got {filled.checkpoint!r}")
    if filled.threads is not None and filled.threads < 1:
        raise FacebenchError(f"--threads must be >= 1, got {filled.threads}")
    from facebench.leaderboard.seeds import seed_list

    seed_list(filled.seed, filled.seeds)
    return filled


def find_splits(folder: str | Path) -> dict[str, Path]:
    """``{"train", "val", "test"}`` → the one ``*_train.h5`` / ``*_val.h5`` / ``*_test.h5`` of
    ``folder``; InputFileError when a split is missing or ambiguous."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "data folder not found")
    found = {}
    for split in ("train", "val", "test"):
        matches = sorted(folder.glob(f"*_{split}.h5"))
        if len(matches) != 1:
            what = "no" if not matches else f"{len(matches)}"
            raise InputFileError(folder, f"{what} *_{split}.h5 file(s); expected exactly one")
        found[split] = matches[0]
    return found




def _generate(s: ReproduceSettings, folder: Path, on_rows: Callable[[int], None] | None) -> dict[str, Path]:
    from facebench.datasets.generator import GeneratorSettings, generate

    n = max(3, int(round(s.train / SPLIT[0])))
    identities = max(3, n // 10)  # 10 images per subject
    settings = GeneratorSettings(n=n, size=s.size, seed=s.seed, angles="ramon2019", identities=identities,
                                 split="70/10/20")
    generate(settings, folder / "synthetic.h5", overwrite=True, batch_size=16, progress=on_rows)
    return find_splits(folder)


def _score(test: Path, submission: Path, results: Path) -> dict[str, float]:
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results

    result = score(test, submission, get_protocol("synthetic"))
    write_results(result, results)
    return {k: float(v["mean"]) for k, v in result.summary["metrics"].items()}


@dataclasses.dataclass
class _Run:
    metrics: dict[str, float]
    time_per_epoch: float
    seconds: float
    best_epoch: int | None


def _train_and_score(s: ReproduceSettings, splits: dict[str, Path], name: str, loss: str, params: dict,
                     lr: float, out: Path, on_step) -> _Run:
    from facebench.baselines.ramon2019.predict import predict
    from facebench.baselines.ramon2019.training import TrainConfig, train

    t0 = time.perf_counter()
    run = out / "runs" / name
    config = TrainConfig(dataset=splits["train"], val=splits["val"], out=run, loss=loss, encoder=s.encoder,
                         epochs=s.epochs, batch=s.batch, lr=lr, device=s.device, seed=s.seed, overwrite=True,
                         method=f"ramon2019-{name}", **params)
    result = train(config, on_step=on_step)
    seconds = time.perf_counter() - t0
    submission = out / "submissions" / f"{name}.h5"
    submission.parent.mkdir(parents=True, exist_ok=True)
    chosen = result.checkpoint if s.checkpoint == "last" else result.best
    predict(chosen, splits["test"], submission, device=s.device, overwrite=True, method=f"ramon2019-{name}")
    metrics = _score(splits["test"], submission, out / "results" / name)
    per_epoch = float(np.mean([r["seconds"] for r in result.history])) if result.history else float("nan")
    return _Run(metrics, per_epoch, seconds, result.best_epoch)


def _reference_rows(test: Path, out: Path, stage) -> list[dict[str, Any]]:
    """The rows of Table 2 of the reference submissions
    (:func:`facebench.benchmark.reference_rows.score_reference_rows` on ``test``, into ``out``). The
    oracle's span is the regressor's: at most its 100 identity modes, no expression."""
    from facebench.benchmark.reference_rows import score_reference_rows

    scored = score_reference_rows(test, out, identity_dims=100, expression_dims=0, stage=stage)
    return [{"loss": name, **{k: metrics[k] for k in METRICS}} for name, metrics in scored.items()]


def plot_fig6(fig6: pd.DataFrame, out_path: str | Path) -> Path:
    """Fig. 6: test shape error (mm) and reprojection error (px) of MRL against the number of
    virtual views V (log2 axis); return the path (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, column, label in ((axes[0], "shape_mm", "3D shape error (mm)"),
                              (axes[1], "reprojection_px", "reprojection error (px)")):
        ax.plot(fig6["views"], fig6[column], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(fig6["views"]))
        ax.set_xticklabels([str(v) for v in fig6["views"]])
        ax.set_xlabel("virtual views V")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle("MRL: test error vs number of views (Ramon et al. 2019, Fig. 6)", fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    write_figure(fig, out_path, dpi=110)
    return out_path


def reproduce_table2(
    settings: ReproduceSettings,
    *,
    on_stage: Callable[[str], None] | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ReproduceResult:
    """Run the experiment of the module docstring; return a :class:`ReproduceResult`.

    Args:
        settings: what to run (:class:`ReproduceSettings`; None entries from QUICK / FULL).
        on_stage: called with one line per stage (the CLI prints it).
        on_step: training progress, as :func:`facebench.baselines.ramon2019.training.train`'s ``on_step``.
        on_rows: data generation progress (rows written after each batch).

    Raises FacebenchError / InputFileError (one line) on bad settings or input, before any work
    where it can be checked.
    """
    import torch

    started = time.perf_counter()
    s = resolve_settings(settings)
    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not s.overwrite:
        raise InputFileError(out, "output folder exists and is not empty (use --overwrite)")
    splits = find_splits(s.data) if s.data is not None else None
    stage = on_stage or (lambda _message: None)
    previous_threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        if s.seeds > 1:
            return _reproduce_seeds(s, out, splits, stage, on_step, on_rows, started)
        return _reproduce(s, out, splits, stage, on_step, on_rows, started)
    finally:
        torch.set_num_threads(previous_threads)


def _reproduce_seeds(s, out: Path, splits, stage, on_step, on_rows, started) -> ReproduceResult:
    """The run once per seed in ``seed<S>/``, then the tables across seeds (module docstring)."""
    from facebench.leaderboard.seeds import aggregate, per_sample_frames, seed_folder, seed_list, summarize_seeds

    runs = []
    seeds = seed_list(s.seed, s.seeds)
    for i, seed in enumerate(seeds):
        folder = seed_folder(out, seed)
        stage(f"seed {seed} ({i + 1}/{len(seeds)}) in {folder}")
        one = dataclasses.replace(s, out=folder, seed=seed, seeds=1, overwrite=True)
        runs.append(_reproduce(one, folder, splits, stage, on_step, on_rows, time.perf_counter()))
    names = [str(v) for v in runs[0].table2["loss"]]
    frames = [per_sample_frames({n: r.out / "results" / n for n in names}) for r in runs]
    table2, verdicts, files = summarize_seeds(out, "table2", [r.table2 for r in runs], "loss",
                                              [*METRICS, "time_per_epoch_s", "total_time_s"], frames, METRICS,
                                              "shape_mm")
    fig6 = aggregate([r.fig6 for r in runs], "views", [c for c in FIG6_COLUMNS if c != "views"])
    files["fig6"] = _write_csv(fig6, out / "fig6.csv")
    seconds = time.perf_counter() - started
    files["summary"] = _write_json({"settings": s.as_dict(), "seeds": seeds, "seconds": seconds,
                                    "table2": table2.to_dict(orient="records"),
                                    "fig6": fig6.to_dict(orient="records"),
                                    "verdicts": verdicts.to_dict(orient="records"),
                                    "per_seed": {str(seed): str(r.out) for r, seed in zip(runs, seeds)}},
                                   out / "summary.json")
    stage(f"done in {seconds:.0f} s over {len(seeds)} seeds: {files['table2']}, {files['verdicts']}")
    return ReproduceResult(table2=table2, fig6=fig6, out=out, files=files, seconds=seconds)


def _reproduce(s, out: Path, splits, stage, on_step, on_rows, started) -> ReproduceResult:
    from facebench.baselines.ramon2019.hpo import HPO_LOSSES, run_hpo
    from facebench.baselines.ramon2019.losses import ramon2019_scale_weights
    from facebench.leaderboard import build_leaderboard

    out.mkdir(parents=True, exist_ok=True)
    if splits is None:
        stage(f"[1/6] generating {int(round(s.train / SPLIT[0]))} synthetic images of {s.size} px in {out / 'data'}")
        t0 = time.perf_counter()
        splits = _generate(s, out / "data", on_rows)
        stage(f"      data ready in {time.perf_counter() - t0:.0f} s")
    else:
        stage(f"[1/6] using the data sets in {s.data}")
    scale = ramon2019_scale_weights(splits["train"])
    searched: dict[str, dict[str, Any]] = {}
    for loss in (name for name in s.losses if name in HPO_LOSSES):
        if s.quick:
            searched[loss] = {"lr": s.lr, **{w: scale[w] for w in HPO_LOSSES[loss]}, "trainings": 0, "seconds": 0.0}
            continue
        stage(f"[2/6] Bayesian search for {loss}: {s.trials} trials of {s.hpo_epochs} epochs")
        result = run_hpo(loss, splits["train"], splits["val"], out / "hpo" / loss, trials=s.trials,
                         epochs=s.hpo_epochs, encoder=s.encoder, batch=s.batch, seed=s.seed, device=s.device,
                         overwrite=True, scale_weights=scale, on_step=on_step)
        searched[loss] = {**result.best_params, "trainings": len(result.trials),
                          "seconds": float(result.trials["seconds"].sum())}
    if s.quick:
        stage(f"[2/6] --quick: scale-compensating weights, lr {s.lr:g}: "
              + ", ".join(f"{k}={v:.4g}" for k, v in scale.items() if k in ("alpha", "beta", "gamma")))

    rows, runs = [], {}
    for i, loss in enumerate(s.losses):
        params: dict[str, Any] = {}
        lr, trainings, extra = s.lr, 1, 0.0
        if loss in searched:
            found = searched[loss]
            params = {w: found[w] for w in HPO_LOSSES[loss]}
            lr, trainings, extra = found["lr"], 1 + found["trainings"], found["seconds"]
        if loss == "mrl":
            params["views"] = 2
        stage(f"[3/6] training {loss} ({i + 1}/{len(s.losses)}): {s.epochs} epochs, lr {lr:.3g}"
              + "".join(f", {k} {v:.4g}" for k, v in params.items()))
        run = _train_and_score(s, splits, loss, loss, params, lr, out, on_step)
        runs[loss] = run
        stage(f"      {loss}: shape {run.metrics['shape_mm']:.3f} mm, reprojection "
              f"{run.metrics['reprojection_px']:.3f} px, {run.time_per_epoch:.1f} s/epoch")
        rows.append({"loss": loss, "reprojection_px": run.metrics["reprojection_px"],
                     "shape_mm": run.metrics["shape_mm"], "translation_cm": run.metrics["translation_cm"],
                     "rotation_deg": run.metrics["rotation_deg"], "time_per_epoch_s": run.time_per_epoch,
                     "epochs": s.epochs, "trainings": trainings, "total_time_s": run.seconds + extra, "lr": lr,
                     "alpha": params.get("alpha"), "beta": params.get("beta"), "gamma": params.get("gamma"),
                     "views": params.get("views"), "best_epoch": run.best_epoch})
    stage("[4/6] reference rows: the mean face and the projection oracle at the true pose")
    references = _reference_rows(splits["test"], out, stage)
    table2 = pd.DataFrame(rows + references, columns=list(TABLE2_COLUMNS))
    files = {"table2": _write_csv(table2, out / "table2.csv")}
    stage(f"[4/6] wrote {files['table2']}")

    stage("[5/6] Fig. 5: leaderboard plots of the errors per |yaw| bin")
    board = out / "leaderboard"
    build_leaderboard([out / "results" / name for name in [*s.losses, *(r["loss"] for r in references)]], board,
                      fresh=True)
    files["fig5"] = board / "plots"

    fig_rows = []
    for v in s.views:
        if v == 2 and "mrl" in runs:
            run = runs["mrl"]
        else:
            stage(f"[6/6] Fig. 6: training mrl with V = {v} views")
            run = _train_and_score(s, splits, f"mrl_v{v}", "mrl", {"views": v}, s.lr, out, on_step)
        fig_rows.append({"views": v, "shape_mm": run.metrics["shape_mm"],
                         "reprojection_px": run.metrics["reprojection_px"],
                         "translation_cm": run.metrics["translation_cm"], "rotation_deg": run.metrics["rotation_deg"],
                         "time_per_epoch_s": run.time_per_epoch, "total_time_s": run.seconds})
    fig6 = pd.DataFrame(fig_rows, columns=list(FIG6_COLUMNS)).sort_values("views", ignore_index=True)
    files["fig6"] = _write_csv(fig6, out / "fig6.csv")
    files["fig6_png"] = plot_fig6(fig6, out / "fig6.png")
    seconds = time.perf_counter() - started
    files["summary"] = _write_json({"settings": s.as_dict(), "splits": {k: str(v) for k, v in splits.items()},
                                    "scale_weights": scale, "searched": searched, "seconds": seconds,
                                    "table2": table2.to_dict(orient="records"),
                                    "fig6": fig6.to_dict(orient="records")}, out / "summary.json")
    stage(f"done in {seconds:.0f} s: {out / 'table2.csv'}, {out / 'fig6.png'}, {board / 'plots'}")
    return ReproduceResult(table2=table2, fig6=fig6, out=out, files=files, seconds=seconds)
