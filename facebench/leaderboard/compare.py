"""Paired comparison of two methods scored under the same protocol on the same dataset.

Over the sample ids scored by both (finite values of the metric in both ``per_sample.csv``): the
mean difference ``A - B`` with a percentile-bootstrap 95% CI, the Wilcoxon signed-rank test and
the paired t-test (two-sided p-values). The bootstrap resamples **subjects** when the results carry
subject ids that repeat (``per_sample.csv`` column ``subject``, written for datasets with subject
ids), images otherwise (:mod:`facebench.benchmark.statistics`); the report says which. Errors are
"lower is better"; the verdict is ``"A lower than B"`` (or B than A) only when the CI of
``A - B`` excludes zero, ``"no difference resolved"`` otherwise, and it quotes that interval.
The rank and t-tests treat the pairs as independent, so on data with several images per subject
they are reported for information only.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from facebench.errors import FacebenchError
from facebench.leaderboard.results import Results, metric_label, read_results

__all__ = ["Comparison", "compare_results", "compare_per_sample", "paired_statistics"]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_results` (values in the metric's units; difference = A - B).

    Attributes:
        better: ``"A"`` or ``"B"``, the one with the lower mean error, when the bootstrap CI of
            the mean difference excludes zero; None otherwise (see :attr:`better_method`).
        resampling: ``"subjects"`` or ``"images"``: the bootstrap's unit; ``n_subjects`` the
            number of subjects among the pairs (0 without subject ids).
        n_only_a, n_only_b: ids with a value in one results folder only (left out of the test).
    """

    metric: str
    protocol_id: str
    dataset: str
    method_a: str
    method_b: str
    path_a: str
    path_b: str
    n_pairs: int
    n_only_a: int
    n_only_b: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci95_low: float
    ci95_high: float
    wilcoxon_p: float
    ttest_p: float
    alpha: float
    better: str | None
    resampling: str = "images"
    n_subjects: int = 0

    @property
    def better_method(self) -> str | None:
        """The name of the better method, or None."""
        return {"A": self.method_a, "B": self.method_b}.get(self.better or "")

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN as None)."""
        data = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}
        data["better_method"] = self.better_method
        data["verdict"] = self.verdict
        return data

    @property
    def verdict(self) -> str:
        """``"A lower than B"``, ``"B lower than A"`` or ``"no difference resolved"``, with the
        interval it rests on."""
        unit = f"{self.n_subjects} subjects" if self.resampling == "subjects" else f"{self.n_pairs} images"
        interval = (f"{100 * (1 - self.alpha):g}% CI of A - B [{self.ci95_low:.4g}, {self.ci95_high:.4g}], "
                    f"bootstrap over {unit}")
        if self.better == "A":
            return f"A lower than B: {self.method_a} has the lower error ({interval} excludes 0)"
        if self.better == "B":
            return f"B lower than A: {self.method_b} has the lower error ({interval} excludes 0)"
        return f"no difference resolved ({interval} includes 0)"

    def lines(self) -> list[str]:
        """A short human-readable report, one line each."""
        unit = metric_label(self.metric)
        return [
            f"protocol {self.protocol_id}, dataset {self.dataset}, metric {unit}",
            f"A: {self.method_a}  mean {self.mean_a:.4g}   ({self.path_a})",
            f"B: {self.method_b}  mean {self.mean_b:.4g}   ({self.path_b})",
            f"pairs: {self.n_pairs} ids scored in both (only A: {self.n_only_a}, only B: {self.n_only_b})",
            f"mean difference A - B: {self.mean_difference:.4g}  {100 * (1 - self.alpha):g}% CI "
            f"[{self.ci95_low:.4g}, {self.ci95_high:.4g}] "
            f"(bootstrap resampling {self.resampling})",
            f"Wilcoxon signed-rank p = {self.wilcoxon_p:.3g}; paired t-test p = {self.ttest_p:.3g}"
            + (" (pairs treated as independent: for information)" if self.resampling == "subjects" else ""),
            f"verdict: {self.verdict}",
        ]


def paired_statistics(a: np.ndarray, b: np.ndarray, *, resamples: int = 10000, seed: int = 0, level: float = 0.95,
                      groups=None) -> tuple[float, float, float, float, float]:
    """``(mean difference, ci_low, ci_high, wilcoxon_p, ttest_p)`` of paired values ``a, b (n,)``; the
    bootstrap resamples the clusters of ``groups (n,)`` (subject ids) when they repeat.

    All-zero differences give p = 1 for both tests (scipy's are undefined there); n < 2 gives NaN
    p-values.
    """
    from facebench.benchmark.statistics import bootstrap_mean_ci  # lazy: it imports torch via conventions

    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean = float(diff.mean()) if len(diff) else math.nan
    low, high = bootstrap_mean_ci(diff, groups, resamples=resamples, seed=seed, level=level)
    if len(diff) < 2:
        return mean, low, high, math.nan, math.nan
    if not np.any(diff != 0):
        return mean, low, high, 1.0, 1.0
    wilcoxon_p = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
    if np.allclose(diff, diff[0], rtol=1e-12, atol=1e-12):  # constant difference: infinite t statistic
        ttest_p = 0.0
    else:
        ttest_p = float(stats.ttest_rel(a, b).pvalue)
    return mean, low, high, wilcoxon_p, ttest_p


def _same_dataset(a: Results, b: Results) -> bool:
    if a.dataset_sha256 and b.dataset_sha256:
        return a.dataset_sha256 == b.dataset_sha256
    return a.dataset_name == b.dataset_name


def compare_results(a: Results | str | Path, b: Results | str | Path, metric: str = "shape_mm", *,
                    alpha: float = 0.05, resamples: int = 10000, seed: int = 0) -> Comparison:
    """Paired test of two results folders (or :class:`Results`) on ``metric``.

    Raises:
        FacebenchError: different protocols or datasets, a metric missing from either, or fewer
            than 2 ids scored in both.
    """
    a = a if isinstance(a, Results) else read_results(a)
    b = b if isinstance(b, Results) else read_results(b)
    if a.protocol_id != b.protocol_id:
        raise FacebenchError(f"cannot compare results of different protocols: {a.protocol_id} ({a.path}) "
                             f"vs {b.protocol_id} ({b.path})")
    if not _same_dataset(a, b):
        raise FacebenchError(f"cannot compare results on different datasets: {a.dataset_name} ({a.path}) "
                             f"vs {b.dataset_name} ({b.path})")
    for r in (a, b):
        if metric not in r.metrics:
            known = ", ".join(r.metric_keys)
            raise FacebenchError(f"{r.path}: metric {metric!r} was not computed (has: {known})")
    paired = compare_per_sample(a.per_sample(), b.per_sample(), metric, alpha=alpha, resamples=resamples, seed=seed,
                                where=f"{a.path} and {b.path}")
    return Comparison(metric=metric, protocol_id=a.protocol_id, dataset=a.dataset_name, method_a=a.method,
                      method_b=b.method, path_a=str(a.path), path_b=str(b.path), alpha=alpha, **paired)


def compare_per_sample(frame_a: pd.DataFrame, frame_b: pd.DataFrame, metric: str = "shape_mm", *,
                       alpha: float = 0.05, resamples: int = 10000, seed: int = 0, where: str = "A and B") -> dict:
    """The paired test and verdict of :func:`compare_results` on two ``per_sample.csv`` frames
    (columns ``id``, ``metric``, optional ``scored`` and ``subject``): the :class:`Comparison`
    fields ``n_pairs, n_only_a, n_only_b, mean_a, mean_b, mean_difference, ci95_low, ci95_high,
    wilcoxon_p, ttest_p, better, resampling, n_subjects``. ``better`` is ``"A"``/``"B"`` only when
    the CI of A - B excludes 0 (the one verdict rule of facebench; :mod:`facebench.leaderboard.seeds`
    applies it per seed). FacebenchError when fewer than 2 ids are scored in both."""
    values, frames = [], []
    for frame in (frame_a, frame_b):
        keep = np.isfinite(pd.to_numeric(frame[metric], errors="coerce"))
        if "scored" in frame.columns:
            keep &= frame["scored"].astype(bool)
        frame = frame[keep].set_index("id")
        frames.append(frame)
        values.append(frame[metric].astype(np.float64))
    common = values[0].index.intersection(values[1].index, sort=False)
    if len(common) < 2:
        raise FacebenchError(f"only {len(common)} id(s) scored in both {where}: need at least 2")
    va, vb = values[0].loc[common].to_numpy(), values[1].loc[common].to_numpy()
    groups = _subjects(frames, common)
    mean, low, high, wilcoxon_p, ttest_p = paired_statistics(va, vb, resamples=resamples, seed=seed,
                                                             level=1.0 - alpha, groups=groups)
    better = None
    if mean != 0 and (low > 0 or high < 0):
        better = "A" if mean < 0 else "B"
    from facebench.benchmark.statistics import resampling_unit

    resampling = resampling_unit(groups)
    return dict(n_pairs=len(common), n_only_a=len(values[0]) - len(common), n_only_b=len(values[1]) - len(common),
                mean_a=float(va.mean()), mean_b=float(vb.mean()), mean_difference=mean, ci95_low=low, ci95_high=high,
                wilcoxon_p=wilcoxon_p, ttest_p=ttest_p, better=better, resampling=resampling,
                n_subjects=len(np.unique(groups)) if resampling == "subjects" else 0)


def _subjects(frames, ids) -> np.ndarray | None:
    """Subject ids of ``ids`` from the ``subject`` column of both results (None when either lacks
    it or they disagree: the images are then the unit)."""
    columns = [f["subject"].loc[ids] for f in frames if "subject" in f.columns]
    if len(columns) != 2 or not np.array_equal(columns[0].to_numpy(), columns[1].to_numpy()):
        return None
    subjects = pd.to_numeric(columns[0], errors="coerce").to_numpy()
    return subjects if np.isfinite(subjects).all() else None
