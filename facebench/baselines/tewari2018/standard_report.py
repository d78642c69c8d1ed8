"""Tables and figures of the standard mode (:mod:`facebench.baselines.tewari2018.standard`).

:func:`write_report` reads the per-image evaluations ``OUT/seed<S>/eval/NAME.csv`` of every seed
and the reference rows ``OUT/oracle/oracle.csv`` and writes, for each experiment asked:

- ``OUT/<experiment>.csv``: one row per variant or reference, each metric's mean over seeds and
  test images with its 95% CI (columns ``METRIC``, ``METRIC_lo``, ``METRIC_hi``; two-level
  bootstrap over seeds and test subjects, :func:`seeds_images_ci`),
  ``n_seeds``, ``n_images``, the mean stage-2 iterations and the stop reasons of the plateau rule;
- ``OUT/comparisons.csv``: paired differences ``a − b`` (per seed and image) with their CI and a
  verdict (``a lower`` / ``a higher`` when the CI excludes 0, else ``not resolved``);
- figures (matplotlib Agg, titles, units, sample counts): ``correctives.png`` (error vs C, base and
  final levels, oracle lines), ``corrective_spaces.png``, ``ablation.png``, ``reflectance.png``
  (both readings of the global shift, the paper's 0.072), ``curves.png`` (validation curves of
  every run, the plateau rule's stops) and ``schedule.png`` (stage 1 with AdaDelta as printed vs
  scaled vs Adam) when the schedule check ran;
- ``OUT/diagnostics/``: gradient norms per loss term, energy per corrective mode and renderings of
  the corrective offsets of the first seed's full model (:mod:`facebench.baselines.tewari2018.diagnostics`).

Metric units: photometric and reflectance errors in linear RGB [0, 1] (mean per-pixel Euclidean
distance over the face mask); shape errors and offsets in mm (mean per-vertex distance, head frame).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from facebench.atomic import write_csv, write_figure

__all__ = ["METRICS", "experiment_runs", "seeds_images_ci", "load_evaluations", "experiment_table", "comparisons",
           "write_report"]

#: Per-image metrics of a run's evaluation (``eval/NAME.csv``).
METRICS = ("photo_base", "photo_final", "shape_base_mm", "shape_final_mm", "refl_base_add", "refl_final_add",
           "refl_base_gain", "refl_final_gain", "offset_mm", "refl_offset")
#: The reflectance test's paper value (supplement).
PAPER_REFLECTANCE = 0.072


def _top(counts) -> str:
    return f"C{max(counts)}"


def experiment_runs(experiment: str, counts) -> list[str]:
    """The stage-2 runs an experiment needs (the largest C of the sweep is the full model)."""
    full = _top(counts)
    return {"correctives": [f"C{c}" for c in counts],
            "corrective-spaces": [full, "relu1", "relu2"],
            "reflectance": [full],
            "ablation": [full, "no-shape-regularizers", "no-reflectance-priors"]}[experiment]


def seeds_images_ci(values: np.ndarray, groups=None, *, resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values (S, N)`` (seeds × test images): the mean over both, and the
    percentile CI of a two-level bootstrap that draws S seeds and the test subjects (``groups (N,)``,
    images when None or all distinct) with replacement. NaNs are left out."""
    x = np.asarray(values, np.float64)
    if x.ndim == 1:
        x = x[None]
    S, N = x.shape
    mean = float(np.nanmean(x))
    if not np.isfinite(mean):
        return float("nan"), float("nan"), float("nan")
    g = np.arange(N) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    G = int(g.max()) + 1
    finite = np.isfinite(x)
    sums = np.stack([np.bincount(g, weights=np.where(finite[s], x[s], 0.0), minlength=G) for s in range(S)])
    counts = np.stack([np.bincount(g, weights=finite[s].astype(np.float64), minlength=G) for s in range(S)])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for k in range(resamples):
        ss = rng.integers(0, S, S)
        gg = rng.integers(0, G, G)
        c = counts[ss][:, gg].sum()
        means[k] = sums[ss][:, gg].sum() / c if c > 0 else np.nan
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def load_evaluations(out: Path, seeds, names) -> dict[str, dict[str, np.ndarray]]:
    """``{run: {metric: (S', N)}}`` for the runs evaluated in every seed (others left out)."""
    from facebench.leaderboard.seeds import seed_folder

    result = {}
    for name in names:
        frames = []
        for seed in seeds:
            path = seed_folder(out, seed) / "eval" / f"{name}.csv"
            if path.is_file():
                frames.append(pd.read_csv(path, dtype={"id": str}))
        if frames:
            result[name] = {m: np.stack([f[m].to_numpy(np.float64) for f in frames]) for m in METRICS if m in frames[0]}
    return result


def _runs_info(out: Path, seeds, name: str) -> dict:
    from facebench.leaderboard.seeds import seed_folder

    infos = []
    for seed in seeds:
        path = seed_folder(out, seed) / "runs" / name / "done.json"
        if path.is_file():
            infos.append(json.loads(path.read_text()))
    return {"iterations": float(np.mean([i["iterations"] for i in infos])) if infos else float("nan"),
            "stops": " ".join(sorted({i["reason"] for i in infos}))}


def _ci_columns(values: dict[str, np.ndarray], groups, metrics) -> dict:
    row = {}
    for m in metrics:
        if m in values:
            mean, lo, hi = seeds_images_ci(values[m], groups)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean, lo, hi
    return row


def experiment_table(out: Path, experiment: str, runs: list[str], evaluations, reference: pd.DataFrame,
                     seeds, counts) -> pd.DataFrame:
    """The table of one experiment (module docstring)."""
    groups = reference["subject"].to_numpy()
    rows = []
    for name in runs:
        if name not in evaluations:
            continue
        values = evaluations[name]
        n_seeds = next(iter(values.values())).shape[0]
        rows.append({"row": name, "kind": "model", **_ci_columns(values, groups, METRICS), "n_seeds": n_seeds,
                     "n_images": next(iter(values.values())).shape[1], **_runs_info(out, seeds, name)})
    references = ["base-oracle", *[f"C{c}-oracle" for c in counts if c > 0], "mean"]
    if experiment != "correctives":
        references = ["base-oracle", f"C{max(counts)}-oracle", "mean"]
    for name in references:
        values = {}
        for metric, column in (("shape_final_mm", "shape_mm"), ("refl_final_add", "refl_add"),
                               ("refl_final_gain", "refl_gain")):
            if f"{name}/{column}" in reference:
                values[metric] = reference[f"{name}/{column}"].to_numpy(np.float64)[None]
        rows.append({"row": name, "kind": "reference", **_ci_columns(values, groups, tuple(values)),
                     "n_seeds": 0, "n_images": len(reference)})
    return pd.DataFrame(rows)


def _pairs(experiment: str, counts) -> list[tuple[str, str, str, str]]:
    """``(a, b, metric_a, metric_b)`` pairs each experiment reports."""
    full = f"C{max(counts)}"
    if experiment == "correctives":
        out = []
        for c in counts:
            out += [(f"C{c}", f"C{c}", "photo_final", "photo_base"), (f"C{c}", f"C{c}", "shape_final_mm", "shape_base_mm")]
        for c in counts:
            if c > 0:
                out += [(f"C{c}", "C0", m, m) for m in ("photo_final", "photo_base", "shape_final_mm", "shape_base_mm",
                                                         "refl_final_add")]
        for c in counts:
            if 0 < c < max(counts):
                out += [(full, f"C{c}", m, m) for m in ("photo_final", "shape_final_mm")]
        return out
    if experiment == "corrective-spaces":
        return [(k, full, m, m) for k in ("relu1", "relu2") for m in ("photo_final", "shape_final_mm", "refl_final_add")]
    if experiment == "ablation":
        return [(k, full, m, m) for k in ("no-shape-regularizers", "no-reflectance-priors")
                for m in ("photo_final", "shape_final_mm", "refl_final_add", "offset_mm", "refl_offset")]
    return [(full, full, f"refl_final_{r}", f"refl_base_{r}") for r in ("add", "gain")]


def comparisons(experiment: str, evaluations, reference: pd.DataFrame, counts) -> pd.DataFrame:
    """Paired differences of ``experiment`` (module docstring)."""
    groups = reference["subject"].to_numpy()
    rows = []
    for a, b, ma, mb in _pairs(experiment, counts):
        if a not in evaluations or b not in evaluations:
            continue
        va, vb = evaluations[a][ma], evaluations[b][mb]
        s = min(len(va), len(vb))
        mean, lo, hi = seeds_images_ci(va[:s] - vb[:s], groups)
        verdict = "a lower" if hi < 0 else "a higher" if lo > 0 else "not resolved"
        rows.append({"experiment": experiment, "a": f"{a}:{ma}", "b": f"{b}:{mb}", "diff": mean, "lo": lo, "hi": hi,
                     "verdict": verdict, "n_seeds": s, "n_images": va.shape[1]})
    if experiment == "reflectance" and f"C{max(counts)}" in evaluations:
        va = evaluations[f"C{max(counts)}"]
        for r in ("add", "gain"):
            for ref in ("mean", "base-oracle", f"C{max(counts)}-oracle"):
                vb = reference[f"{ref}/refl_{r}"].to_numpy(np.float64)[None]
                mean, lo, hi = seeds_images_ci(va[f"refl_final_{r}"] - vb, groups)
                verdict = "a lower" if hi < 0 else "a higher" if lo > 0 else "not resolved"
                rows.append({"experiment": experiment, "a": f"C{max(counts)}:refl_final_{r}", "b": f"{ref}:refl_{r}",
                             "diff": mean, "lo": lo, "hi": hi, "verdict": verdict, "n_seeds": len(va[f"refl_final_{r}"]),
                             "n_images": vb.shape[1]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def _err(table, metric):
    return np.stack([table[metric] - table[f"{metric}_lo"], table[f"{metric}_hi"] - table[metric]])


def _counts_note(table) -> str:
    models = table[table["kind"] == "model"]
    if models.empty:
        return ""
    return f"{int(models['n_images'].iloc[0])} test images x {int(models['n_seeds'].min())} seed(s), 95% CI"


def plot_correctives(table: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    models = table[table["kind"] == "model"].copy()
    models["C"] = models["row"].str[1:].astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (metric, label) in zip(axes, (("photo", "photometric error (RGB)"), ("shape", "shape error (mm)"),
                                          ("refl", "reflectance error (RGB, additive shift)"))):
        for level, style in (("base", "o--"), ("final", "s-")):
            column = f"{metric}_{level}_mm" if metric == "shape" else f"{metric}_{level}_add" if metric == "refl" \
                else f"{metric}_{level}"
            if column in models:
                ax.errorbar(models["C"], models[column], yerr=_err(models, column), fmt=style, capsize=3,
                            label=f"{level} level")
        if metric in ("shape", "refl"):
            refs = table[table["kind"] == "reference"]
            column = "shape_final_mm" if metric == "shape" else "refl_final_add"
            base = refs[refs["row"] == "base-oracle"]
            if not base.empty and column in base:
                ax.axhline(float(base[column].iloc[0]), color="grey", ls=":", label="base-span oracle")
            oracles = refs[refs["row"].str.match(r"C\d+-oracle")]
            if not oracles.empty and column in oracles:
                ax.plot(oracles["row"].str.extract(r"C(\d+)")[0].astype(int), oracles[column], "k^:",
                        label="C-dim linear oracle")
        ax.set_xlabel("number of correctives C")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"Correctives sweep on the out-of-span world (supp. Fig. 4 layout); {_counts_note(table)}",
                 fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, dpi=110)


def plot_bars(table: pd.DataFrame, path: Path, title: str, metrics) -> Path:
    plt = _plt()
    models = table[table["kind"] == "model"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, (metric, label) in zip(np.atleast_1d(axes), metrics):
        if metric not in models:
            continue
        x = np.arange(len(models))
        ax.bar(x, models[metric], yerr=_err(models, metric), capsize=3, color="tab:blue")
        ax.set_xticks(x, models["row"], rotation=15, fontsize=8)
        ax.set_ylabel(label)
        lo = float(np.nanmin(models[f"{metric}_lo"]))
        hi = float(np.nanmax(models[f"{metric}_hi"]))
        pad = (hi - lo) * 0.5 + 1e-9
        ax.set_ylim(max(lo - pad, 0), hi + pad)
    fig.suptitle(f"{title}; {_counts_note(table)}", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, dpi=110)


def plot_reflectance(table: pd.DataFrame, path: Path, full: str) -> Path:
    plt = _plt()
    labels, adds, gains = [], [], []
    for _, r in table.iterrows():
        if r["kind"] == "reference":
            labels.append(r["row"])
            adds.append((r.get("refl_final_add"), r.get("refl_final_add_lo"), r.get("refl_final_add_hi")))
            gains.append((r.get("refl_final_gain"), r.get("refl_final_gain_lo"), r.get("refl_final_gain_hi")))
        elif r["row"] == full:
            for level in ("base", "final"):
                labels.append(f"{level} level")
                adds.append((r[f"refl_{level}_add"], r[f"refl_{level}_add_lo"], r[f"refl_{level}_add_hi"]))
                gains.append((r[f"refl_{level}_gain"], r[f"refl_{level}_gain_lo"], r[f"refl_{level}_gain_hi"]))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(labels))
    for k, (values, name) in enumerate(((adds, "additive offset removed"), (gains, "per-channel gain removed"))):
        v = np.array(values, np.float64)
        ax.bar(x + (k - 0.5) * 0.38, v[:, 0], 0.38, yerr=np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])),
               capsize=3, label=name)
    ax.axhline(PAPER_REFLECTANCE, color="red", ls="--", label="paper 0.072")
    ax.set_xticks(x, labels, rotation=15, fontsize=8)
    ax.set_ylabel("reflectance error (RGB)")
    ax.legend(fontsize=7)
    ax.set_title(f"Reflectance test on the out-of-span world ({full} model); {_counts_note(table)}", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, dpi=110)


def plot_curves(out: Path, seeds, names, path: Path) -> Path:
    from facebench.leaderboard.seeds import seed_folder

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(["pretrain", *names]):
        ax = axes[0] if name == "pretrain" else axes[1]
        for j, seed in enumerate(seeds):
            path_done = seed_folder(out, seed) / "runs" / name / "done.json"
            if not path_done.is_file():
                continue
            info = json.loads(path_done.read_text())
            curve = info["curve"]
            ax.plot(curve["iteration"], curve["val"], "-", color=colors[k % len(colors)], alpha=0.8,
                    label=name if j == 0 else None)
            if curve["iteration"]:
                ax.plot(curve["iteration"][-1], curve["val"][-1], "x" if info["reason"] == "cap" else "o",
                        color=colors[k % len(colors)])
            log = path_done.parent / "log.csv"
            if name != "pretrain" and log.is_file():  # the base level's curve during stage 2, dashed
                frame = pd.read_csv(log)
                if "val_photo_base" in frame:
                    frame = frame.dropna(subset=["val_photo_base"])
                    ax.plot(frame["iteration"], frame["val_photo_base"], "--", color=colors[k % len(colors)],
                            alpha=0.5)
    axes[0].set_title("stage 1: validation photometric error, base level", fontsize=9)
    axes[1].set_title("stage 2: validation photometric error, final level (solid), base level (dashed)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("iteration (batch 5)")
        ax.set_ylabel("photometric error (RGB)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Training curves, {len(seeds)} seed(s), 24 validation images (o: plateau rule stop, x: iteration cap)",
                 fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path, dpi=110)


def plot_schedule(out: Path, path: Path) -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    found = False
    for run in sorted((out / "schedule").glob("*/done.json")):
        info = json.loads(run.read_text())
        ax.plot(info["curve"]["iteration"], info["curve"]["val"], "o-", label=run.parent.name)
        found = True
    if not found:
        _plt().close(fig)
        return None
    ax.set_xlabel("stage-1 iteration (batch 5)")
    ax.set_ylabel("validation photometric error, base (RGB)")
    ax.set_title("Stage 1 with the supplement's AdaDelta (rate 0.01) vs scaled vs Adam", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return write_figure(fig, path, dpi=110)


# ---------------------------------------------------------------------------------------- report
def write_report(s, experiments, seeds, data, reference: pd.DataFrame,
                 on_stage: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write every table and figure of ``experiments`` (module docstring); returns the files."""
    out = Path(s.out)
    counts = list(s.counts)
    files: dict[str, Path] = {}
    names = []
    for experiment in experiments:
        for name in experiment_runs(experiment, counts):
            if name not in names:
                names.append(name)
    evaluations = load_evaluations(out, seeds, names)
    comparison_frames = []
    for experiment in experiments:
        runs = experiment_runs(experiment, counts)
        table = experiment_table(out, experiment, runs, evaluations, reference, seeds, counts)
        key = experiment.replace("-", "_")
        files[key] = write_csv(table, out / f"{key}.csv")
        comparison_frames.append(comparisons(experiment, evaluations, reference, counts))
        if table[table["kind"] == "model"].empty:
            continue
        if experiment == "correctives":
            files[f"{key}_plot"] = plot_correctives(table, out / "correctives.png")
        elif experiment == "corrective-spaces":
            files[f"{key}_plot"] = plot_bars(table, out / "corrective_spaces.png",
                                             f"Corrective spaces at C = {max(counts)}: affine vs ReLU (supp. Figs. 2-3)",
                                             (("photo_final", "photometric error, final (RGB)"),
                                              ("shape_final_mm", "shape error, final (mm)"),
                                              ("refl_final_add", "reflectance error, final (RGB)")))
        elif experiment == "ablation":
            files[f"{key}_plot"] = plot_bars(table, out / "ablation.png",
                                             "Ablation of the corrective priors (supp. Figs. 5-7)",
                                             (("photo_final", "photometric error, final (RGB)"),
                                              ("offset_mm", "shape corrective offset (mm)"),
                                              ("refl_offset", "reflectance corrective offset (RGB)")))
        else:
            files[f"{key}_plot"] = plot_reflectance(table, out / "reflectance.png", f"C{max(counts)}")
    printed = _printed_schedule(out, seeds, counts, reference)
    if printed is not None:
        files["schedule_table"] = write_csv(printed[0], out / "schedule.csv")
        comparison_frames.append(printed[1])
    frame = pd.concat(comparison_frames, ignore_index=True) if comparison_frames else pd.DataFrame()
    files["comparisons"] = write_csv(frame, out / "comparisons.csv")
    files["curves"] = plot_curves(out, seeds, names, out / "curves.png")
    schedule = plot_schedule(out, out / "schedule.png")
    if schedule is not None:
        files["schedule"] = schedule
    files.update(_diagnostics(s, seeds, data, on_stage))
    return files


def _printed_schedule(out: Path, seeds, counts, reference: pd.DataFrame):
    """``(table, comparisons)`` of the first seed's top-C run trained with Adam (the standard runs)
    and with the supplement's AdaDelta as printed (``OUT/schedule-printed``), or None before both exist."""
    from facebench.leaderboard.seeds import seed_folder

    name = f"C{max(counts)}"
    paths = {"adam (standard)": seed_folder(out, seeds[0]) / "eval" / f"{name}.csv",
             "adadelta as printed": out / "schedule-printed" / "eval" / f"{name}.csv"}
    if not all(p.is_file() for p in paths.values()):
        return None
    groups = reference["subject"].to_numpy()
    values = {k: pd.read_csv(p, dtype={"id": str}) for k, p in paths.items()}
    rows = []
    for label, frame in values.items():
        run = (seed_folder(out, seeds[0]) / "runs" / name) if label.startswith("adam") else \
            (out / "schedule-printed" / "runs" / name)
        info = json.loads((run / "done.json").read_text())
        rows.append({"row": label, "kind": "model",
                     **_ci_columns({m: frame[m].to_numpy(np.float64)[None] for m in METRICS}, groups, METRICS),
                     "n_seeds": 1, "n_images": len(frame), "iterations": info["iterations"], "stops": info["reason"]})
    a, b = values["adadelta as printed"], values["adam (standard)"]
    comparison = []
    for m in ("photo_base", "photo_final", "shape_final_mm", "refl_final_add"):
        mean, lo, hi = seeds_images_ci((a[m] - b[m]).to_numpy(np.float64)[None], groups)
        comparison.append({"experiment": "schedule", "a": f"adadelta-printed {name}:{m}", "b": f"adam {name}:{m}",
                           "diff": mean, "lo": lo, "hi": hi,
                           "verdict": "a lower" if hi < 0 else "a higher" if lo > 0 else "not resolved",
                           "n_seeds": 1, "n_images": len(a)})
    return pd.DataFrame(rows), pd.DataFrame(comparison)


def _diagnostics(s, seeds, data, on_stage) -> dict[str, Path]:
    """:func:`~facebench.baselines.tewari2018.diagnostics.write_diagnostics` of the first seed's
    full model (``OUT/diagnostics/``), once."""
    from facebench.baselines.tewari2018.diagnostics import write_diagnostics
    from facebench.leaderboard.seeds import seed_folder

    out = Path(s.out)
    name = _top(s.counts)
    run = seed_folder(out, seeds[0]) / "runs" / name
    folder = out / "diagnostics"
    if not (run / "done.json").is_file():
        return {}
    if (folder / "reflectance_panels.png").is_file():
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".png")}
    if on_stage is not None:
        on_stage(f"diagnostics of seed {seeds[0]}'s {name} in {folder}")
    albedo_path = out / "oracle" / "test_albedo.npy"
    albedo = np.load(albedo_path, allow_pickle=False) if albedo_path.is_file() else None
    return write_diagnostics(run / "model.pt", data["train"], data["test"], folder, name=f"{name}, seed {seeds[0]}",
                             device=s.device, albedo=albedo)
