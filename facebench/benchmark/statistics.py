"""Confidence intervals that match the design of a test set: resample subjects, not images.

A synthetic test set with ``--identities`` (and any real set with several images per person)
holds correlated samples: the images of one subject share its shape, so a method's errors on them
move together. Resampling images then treats them as independent and gives intervals that are too
narrow. :func:`bootstrap_mean_ci` resamples **subjects** (clusters) with replacement when the
samples carry subject ids that repeat, and images otherwise:

- the statistic is the mean over the resampled samples, ``Σ_c sum_c / Σ_c count_c`` over the
  drawn clusters ``c`` (a subject drawn twice counts twice);
- percentile interval at ``level`` from ``resamples`` draws of ``default_rng(seed)``;
- when every subject id is distinct (or none is given) it **is** the image bootstrap of
  :func:`facebench.benchmark.metrics.bootstrap_mean_ci`, bit for bit.

:func:`resampling_unit` names the unit (``"subjects"`` or ``"images"``) for reports. Values are in
the metric's unit; NaN values are left out (with their cluster if it has no other value).
"""

from __future__ import annotations

import numpy as np

from facebench.benchmark import metrics

__all__ = ["resampling_unit", "bootstrap_mean_ci", "describe"]


def _finite(values, groups):
    x = np.asarray(values, np.float64)
    keep = np.isfinite(x)
    g = None if groups is None else np.asarray(groups)[keep]
    return x[keep], g


def resampling_unit(groups) -> str:
    """``"subjects"`` when ``groups`` has a repeated id, else ``"images"``."""
    if groups is None:
        return "images"
    g = np.asarray(groups)
    return "subjects" if len(np.unique(g)) < len(g) else "images"


def bootstrap_mean_ci(values, groups=None, *, resamples: int = 2000, seed: int = 0, level: float = 0.95,
                      chunk: int = 256) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of the mean of ``values (n,)``, resampling the clusters
    of ``groups (n,)`` (subject ids) when they repeat, else the values (module docstring)."""
    x, g = _finite(values, groups)
    if resampling_unit(g) == "images":
        return metrics.bootstrap_mean_ci(x, resamples=resamples, seed=seed, level=level, chunk=chunk)
    _, inverse = np.unique(g, return_inverse=True)
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse).astype(np.float64)
    G = len(sums)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, G, size=(stop - start, G))
        means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def describe(values, groups=None, *, resamples: int = 2000, seed: int = 0) -> dict:
    """:func:`facebench.benchmark.metrics.describe` with the CI of :func:`bootstrap_mean_ci`
    (subjects when ``groups`` repeat; the same keys, so reports name the unit separately)."""
    out = metrics.describe(values, resamples=resamples, seed=seed)
    x, g = _finite(values, groups)
    if resampling_unit(g) == "subjects" and len(x) > 1:
        out["ci95_low"], out["ci95_high"] = bootstrap_mean_ci(x, g, resamples=resamples, seed=seed)
    return out
