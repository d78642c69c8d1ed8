"""Per-sample metrics (docs/metrics.md) and their aggregation (bootstrap CIs, |yaw| bins).

All functions take batches (leading dimension N = samples) as numpy arrays and compute in float64.

- shape error, corresponding topology: ``mean_n ||x_n - x̂_n||`` (mm), head frame;
- camera translation error: ``||t - t̂||`` reported in **cm**;
- camera rotation error: ``2 acos(|<q, q̂>|)`` in degrees;
- reprojection error: ``mean_n ||P(q,t)(x_n) - P(q̂,t̂)(x̂_n)||`` in pixels.
"""

from __future__ import annotations

import numpy as np

from facebench import conventions


def shape_error_mm(vertices, predicted) -> np.ndarray:
    """Mean per-vertex Euclidean distance ``(N,)`` mm of ``predicted (N,V,3)`` to ``vertices (N,V,3)``."""
    diff = np.asarray(predicted, np.float64) - np.asarray(vertices, np.float64)
    return np.linalg.norm(diff, axis=-1).mean(axis=-1)


def per_vertex_error_mm(vertices, predicted) -> np.ndarray:
    """Per-vertex Euclidean distances ``(N, V)`` mm (for heat maps and regional re-aggregation)."""
    diff = np.asarray(predicted, np.float64) - np.asarray(vertices, np.float64)
    return np.linalg.norm(diff, axis=-1)


def translation_error_cm(t, t_hat) -> np.ndarray:
    """``||t - t̂||`` for ``t, t̂ (N,3)`` in mm, returned in **cm** ``(N,)``."""
    return np.linalg.norm(np.asarray(t, np.float64) - np.asarray(t_hat, np.float64), axis=-1) / 10.0


def rotation_error_deg(q, q_hat) -> np.ndarray:
    """Rotation angle ``(N,)`` in degrees between camera rotations ``q, q̂ (N,4)``."""
    return np.asarray(conventions.rotation_error_deg(np.asarray(q, np.float64), np.asarray(q_hat, np.float64)))


def reprojection_error_px(vertices, q, t, predicted, q_hat, t_hat, K) -> np.ndarray:
    """Mean pixel distance ``(N,)`` between the ground truth projected with its camera and the
    prediction projected with the predicted camera; ``K (3,3)`` or ``(N,3,3)``."""
    K = np.asarray(K, np.float64)
    gt = conventions.project(np.asarray(vertices, np.float64), np.asarray(q, np.float64), np.asarray(t, np.float64), K)
    pred = conventions.project(
        np.asarray(predicted, np.float64), np.asarray(q_hat, np.float64), np.asarray(t_hat, np.float64), K
    )
    return np.linalg.norm(gt - pred, axis=-1).mean(axis=-1)


def yaw_bin_names(edges) -> list[str]:
    """Bin labels in increasing order: ``"[a,b)"``, the last one closed ``"[a,b]"``."""
    edges = np.asarray(edges, np.float64)
    names = [f"[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 2)]
    names.append(f"[{edges[-2]:g},{edges[-1]:g}]")
    return names


def yaw_bin_labels(yaw_deg, edges) -> list[str]:
    """Label (see :func:`yaw_bin_names`) of the |yaw| bin of each sample; ``"out"`` for |yaw|
    beyond the last edge."""
    edges = np.asarray(edges, np.float64)
    names = yaw_bin_names(edges)
    yaw = np.abs(np.asarray(yaw_deg, np.float64))
    index = np.searchsorted(edges, yaw, side="right") - 1
    index = np.where(yaw == edges[-1], len(edges) - 2, index)
    return [names[i] if 0 <= i < len(names) else "out" for i in index]


def bootstrap_mean_ci(values, *, resamples: int = 2000, seed: int = 0, level: float = 0.95,
                      chunk: int = 256) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of the mean of ``values`` (NaN
    ignored). Deterministic for a seed. ``(nan, nan)`` for no values; ``(v, v)`` for one."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (float("nan"), float("nan"))
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, len(x), size=(stop - start, len(x)))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def describe(values, *, resamples: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """Aggregates of one metric: n, mean, median, std, min, max, 95% CI of the mean (NaN ignored)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None,
                "ci95_low": None, "ci95_high": None}
    low, high = bootstrap_mean_ci(x, resamples=resamples, seed=seed)
    return {
        "n": int(len(x)),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "ci95_low": low,
        "ci95_high": high,
    }
