"""Leaderboard plots (matplotlib Agg, PNG, written atomically; nothing is shown or printed).

For one group of comparable results (same protocol, version and dataset):

- :func:`plot_bins`: mean error per |yaw| bin, one line per method with 95% CI error bars
  (Ramon et al. 2019, Fig. 5);
- :func:`plot_cumulative`: fraction of the dataset's samples with error <= x (missing samples
  count as failures, so a curve tops out at the method's completion);
- :func:`plot_heatmap`: per-vertex mean shape error painted on the mean ground-truth face, one
  column per method, front and side views, one shared colour scale with a colour bar (Fig. 7).

Method names are untrusted text: labels are shortened and ``$`` is escaped so matplotlib never
reads them as mathtext.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facebench.atomic import atomic_path
from facebench.leaderboard.results import PerVertex, Results, metric_label, ordered_metric_keys

__all__ = [
    "Plot", "plot_label", "group_slug", "error_colors", "srgb_to_linear", "plot_bins", "plot_cumulative",
    "render_heatmap_panels", "plot_heatmap", "plot_group", "HEATMAP_CMAP",
]

HEATMAP_CMAP = "turbo"
_NO_DATA_RGB = np.array([0.5, 0.5, 0.5])  # linear grey for vertices with no error
_MAX_LABEL = 40
_DPI = 110


@dataclasses.dataclass(frozen=True)
class Plot:
    """One written figure: ``kind`` ("bins", "cumulative" or "heatmap"), the metric (or
    "shape_mm" for heat maps), the PNG path and a caption (plain text, unescaped)."""

    kind: str
    metric: str
    path: Path
    caption: str


def plot_label(text: str, limit: int = _MAX_LABEL) -> str:
    """``text`` safe for a matplotlib label: one line, at most ``limit`` characters, ``$`` escaped."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("$", r"\$")


def group_slug(protocol: str, version: str, dataset: str) -> str:
    """A file-name-safe, unique name for a (protocol, version, dataset) group."""
    key = f"{protocol}\x00{version}\x00{dataset}"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{protocol}@{version}_{dataset}").strip("-.")[:60]
    return f"{readable}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_path: Path) -> Path:
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white", bbox_inches="tight")
    return out_path


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _group_title(results: Sequence[Results]) -> str:
    first = results[0]
    return plot_label(f"{first.protocol_id} on {first.dataset_name}", 70)


# ----------------------------------------------------------------------------------- yaw bins


def plot_bins(results: Sequence[Results], metric: str, out_path: str | Path) -> Path:
    """Mean ``metric`` per |yaw| bin with 95% CI error bars, one line per method; return the path.

    Bins are taken in file order from the first result holding them; a method without the metric
    is left out.
    """
    with_bins = [r for r in results if metric in r.bins and r.bins[metric]]
    if not with_bins:
        raise ValueError(f"no result has per-bin values of {metric!r}")
    labels: list[str] = []
    for r in with_bins:
        labels += [label for label in r.bins[metric] if label not in labels]
    fig = _figure(max(6.0, 1.1 * len(labels) + 2.5), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels), dtype=float)
    width = 0.5 / max(len(with_bins), 1)
    for i, (r, color) in enumerate(zip(with_bins, _colors(len(with_bins)))):
        stats = [r.bins[metric].get(label) for label in labels]
        mean = np.array([np.nan if s is None else s.mean for s in stats])
        low = np.array([np.nan if s is None else s.ci95_low for s in stats])
        high = np.array([np.nan if s is None else s.ci95_high for s in stats])
        yerr = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
        yerr = np.nan_to_num(yerr)
        offset = (i - (len(with_bins) - 1) / 2) * width
        ax.errorbar(x + offset, mean, yerr=yerr, color=color, marker="o", markersize=4, capsize=3,
                    linewidth=1.5, label=plot_label(r.method))
    ax.set_xticks(x)
    counts = [max((r.bins[metric][label].n for r in with_bins if r.bins[metric].get(label) is not None), default=0)
              for label in labels]  # samples scored in each bin (the most any method scored)
    ax.set_xticklabels([f"{plot_label(label)}\nn = {n}" for label, n in zip(labels, counts)])
    ax.set_xlabel("|yaw| bin (degrees), n: samples in the bin")
    ax.set_ylabel(f"mean {plot_label(metric_label(metric))}")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{plot_label(metric_label(metric)).capitalize()} per |yaw| bin — {_group_title(results)}\n"
                 "(mean over the samples of each bin, bars: bootstrap 95% CI)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="method", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, Path(out_path))


# -------------------------------------------------------------------------------- cumulative


def plot_cumulative(results: Sequence[Results], metric: str, out_path: str | Path,
                    per_sample: Sequence | None = None) -> Path:
    """Cumulative error curves: fraction of the dataset's samples with ``metric`` <= x.

    The denominator is the number of expected samples (missing or unscored samples are failures).

    Args:
        per_sample: the DataFrames of ``results`` (read from disk when None).
    """
    frames = list(per_sample) if per_sample is not None else [r.per_sample() for r in results]
    curves = []
    for r, frame in zip(results, frames):
        if metric not in r.metrics or metric not in frame.columns:
            continue
        values = frame.loc[frame["scored"], metric].to_numpy(dtype=float)
        values = np.sort(values[np.isfinite(values)])
        curves.append((r, values, max(r.n_expected, len(frame), 1)))
    if not curves:
        raise ValueError(f"no result has per-sample values of {metric!r}")
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    tails = [np.quantile(v, 0.99) for _, v, _ in curves if len(v)]
    x_max = max(tails) * 1.1 if tails and max(tails) > 0 else 1.0
    for (r, values, total), color in zip(curves, _colors(len(curves))):
        x = np.concatenate([[0.0], values, [max(x_max, values[-1] if len(values) else 0.0)]])
        y = np.concatenate([[0.0], np.arange(1, len(values) + 1) / total, [len(values) / total]])
        mean = r.metrics[metric].mean
        label = plot_label(r.method) + (f"  (mean {mean:.3g})" if np.isfinite(mean) else "")
        ax.step(x, y, where="post", color=color, linewidth=1.6, label=label)
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(plot_label(metric_label(metric)))
    ax.set_ylabel("fraction of samples with error ≤ x")
    ax.set_title(f"Cumulative {plot_label(metric_label(metric))} — {_group_title(results)}\n"
                 "(missing samples count as failures)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="method", fontsize=8, title_fontsize=8, loc="lower right")
    return _save(fig, Path(out_path))


# ----------------------------------------------------------------------------------- heat map


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer function on values in [0, 1] (same shape)."""
    x = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def error_colors(errors: np.ndarray, vmax: float, vmin: float = 0.0, cmap: str = HEATMAP_CMAP) -> np.ndarray:
    """Linear-RGB colours ``(V,3)`` of per-vertex errors ``(V,)`` (mm) on the colormap ``cmap``
    between ``vmin`` and ``vmax`` (clipped); NaN errors are grey. Linear, so that
    :func:`facebench.models.preview.render_preview` shows the colormap's own sRGB colours on lit
    surfaces."""
    import matplotlib

    errors = np.asarray(errors, np.float64)
    span = max(vmax - vmin, 1e-12)
    t = np.clip((errors - vmin) / span, 0.0, 1.0)
    rgb = srgb_to_linear(matplotlib.colormaps[cmap](np.nan_to_num(t))[:, :3])
    rgb[~np.isfinite(errors)] = _NO_DATA_RGB
    return rgb


def render_heatmap_panels(per_vertex: Sequence[PerVertex], titles: Sequence[str], out_path: str | Path,
                          vmax: float, *, vmin: float = 0.0, views: Sequence[str] = ("front", "side"),
                          panel_px: int = 260) -> Path:
    """Faces only: each mean face coloured by its per-vertex error, one column per entry; a thin
    wrapper of :func:`facebench.models.preview.render_preview`. Entries must share a topology."""
    from facebench.models.preview import render_preview

    faces = per_vertex[0].faces
    if any(p.faces.shape != faces.shape or not np.array_equal(p.faces, faces) for p in per_vertex):
        raise ValueError("heat-map panels need one topology")
    return render_preview(
        [p.mean_vertices for p in per_vertex], faces, out_path,
        titles=[plot_label(t, 28) for t in titles],
        colors=[error_colors(p.mean_per_vertex, vmax, vmin) for p in per_vertex],
        views=views, panel_px=panel_px,
    )


def heatmap_scale(per_vertex: Sequence[PerVertex], percentile: float = 98.0) -> float:
    """Shared upper end of the colour scale (mm): the largest per-method ``percentile`` of the
    finite per-vertex errors (at least 1e-3)."""
    tops = [np.percentile(p.mean_per_vertex[np.isfinite(p.mean_per_vertex)], percentile)
            for p in per_vertex if np.isfinite(p.mean_per_vertex).any()]
    return max([1e-3, *tops])


def plot_heatmap(results: Sequence[Results], out_path: str | Path, *, max_methods: int = 8,
                 per_vertex: Sequence[PerVertex | None] | None = None) -> Path | None:
    """Per-vertex mean error on the mean face with a colour bar; None when no result has a
    single-topology ``per_vertex.npz``. Keeps the ``max_methods`` first results (pass them ranked)
    of the topology of the first one that has per-vertex data."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.image import imread

    loaded = list(per_vertex) if per_vertex is not None else [r.per_vertex() for r in results]
    pairs = [(r, p) for r, p in zip(results, loaded) if p is not None]
    if not pairs:
        return None
    faces = pairs[0][1].faces
    pairs = [(r, p) for r, p in pairs if np.array_equal(p.faces, faces)][:max_methods]
    vmax = heatmap_scale([p for _, p in pairs])
    with tempfile.TemporaryDirectory() as tmp:
        panels_png = render_heatmap_panels([p for _, p in pairs], [r.method for r, _ in pairs],
                                           Path(tmp) / "panels.png", vmax)
        image = imread(panels_png)
    height, width = image.shape[:2]
    fig_w = max(width / _DPI, 4.5)
    bar_h = 0.9
    fig = _figure(fig_w, height / _DPI + bar_h + 0.6)
    total_h = height / _DPI + bar_h + 0.6
    ax = fig.add_axes((0.0, (bar_h) / total_h, 1.0, (height / _DPI) / total_h))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes((0.15, 0.45 / total_h, 0.7, 0.16 / total_h))
    mappable = ScalarMappable(norm=Normalize(0.0, vmax), cmap=matplotlib.colormaps[HEATMAP_CMAP])
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal", extend="max")
    bar.set_label("mean per-vertex shape error (mm); grey: no data", fontsize=9)
    fig.suptitle(f"Per-vertex mean error on the mean face — {_group_title(results)}", fontsize=10,
                 y=1.0 - 0.05 / total_h, va="top")
    return _save(fig, Path(out_path))


# ------------------------------------------------------------------------------------- group


def plot_group(results: Sequence[Results], out_dir: str | Path, *, heatmap: bool = True) -> list[Plot]:
    """Every plot of one comparable group (pass it ranked, best first) into ``out_dir``.

    Files: ``bins_<metric>_<group>.png``, ``cumulative_<metric>_<group>.png``,
    ``heatmap_<group>.png``; returns what was written.
    """
    if not results:
        return []
    out_dir = Path(out_dir)
    slug = group_slug(*results[0].group)
    plots: list[Plot] = []
    bin_metrics = ordered_metric_keys({m for r in results for m, b in r.bins.items() if b})
    for metric in bin_metrics:
        path = plot_bins(results, metric, out_dir / f"bins_{metric}_{slug}.png")
        plots.append(Plot("bins", metric, path, f"{metric_label(metric)} per |yaw| bin (95% CI)"))
    frames = [r.per_sample() for r in results]
    for metric in ordered_metric_keys({m for r in results for m in r.metrics}):
        if not any(metric in r.metrics and metric in f.columns for r, f in zip(results, frames)):
            continue
        path = plot_cumulative(results, metric, out_dir / f"cumulative_{metric}_{slug}.png", frames)
        plots.append(Plot("cumulative", metric, path, f"cumulative {metric_label(metric)}"))
    if heatmap:
        path = plot_heatmap(results, out_dir / f"heatmap_{slug}.png")
        if path is not None:
            plots.append(Plot("heatmap", "shape_mm", path, "per-vertex mean shape error on the mean face"))
    return plots
