"""Several seeds of one experiment: the mean and spread across seeds, and orderings called only when
they hold in every seed.

Every ``facebench reproduce`` command takes ``--seeds N`` (default 1: one run, as before). With
N > 1 it runs the whole experiment N times, with seeds ``seed, seed + 1, …, seed + N - 1``, each in
its own subfolder ``OUT/seed<S>/`` (:func:`seed_folder`: data, runs, submissions, results and the
single-seed table of that seed), then writes in ``OUT``:

- the table (:func:`aggregate`): one row per method (and reference row) with, for each metric
  ``m``, ``m_mean`` and ``m_sd`` (the mean and sample standard deviation, ``ddof = 1``, of the
  per-seed values) and ``n_seeds``; and a ``verdict`` column (:func:`verdict_column`): each row
  against the row ranked just above it (next higher mean) on the headline metric;
- ``verdicts.csv`` (:func:`pairwise_verdicts`): every pair of rows on each metric that has
  per-sample values, with the verdict and the per-seed intervals it rests on.

**Verdict rule.** For methods A and B and a metric, in each seed the paired comparison of
:func:`facebench.leaderboard.compare.compare_per_sample` (the same test as ``facebench
leaderboard compare``: mean difference A − B over the samples scored by both, percentile bootstrap
CI resampling **subjects** when the test set's subject ids repeat, images otherwise) decides
``A`` / ``B`` / nothing. Across seeds the ordering is called — ``"A lower than B"`` — only when
**every** seed decides the same way (the ordering holds in every seed and each seed's interval
excludes 0); otherwise ``"not resolved"``. One seed that flips the ordering, or whose interval
contains 0, leaves it unresolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from facebench.errors import FacebenchError
from facebench.leaderboard.compare import compare_per_sample

__all__ = ["NOT_RESOLVED", "seed_list", "seed_folder", "aggregate", "SeedOrdering", "order_pair",
           "pairwise_verdicts", "verdict_column", "per_sample_frames", "summarize_seeds"]

NOT_RESOLVED = "not resolved"
VERDICT_COLUMNS = ("metric", "a", "b", "verdict", "seeds_deciding", "n_seeds", "mean_difference",
                   "ci_low_min", "ci_high_max", "resampling")


def seed_list(seed: int, n: int) -> list[int]:
    """``[seed, seed + 1, …, seed + n - 1]``; FacebenchError when ``n < 1``."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise FacebenchError(f"--seeds must be an integer >= 1, got {n}")
    return [int(seed) + i for i in range(int(n))]


def seed_folder(out: str | Path, seed: int) -> Path:
    """``out/seed<seed>``: the subfolder of one seed's run."""
    return Path(out) / f"seed{int(seed)}"


def aggregate(tables: Sequence[pd.DataFrame], key: str, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per value of ``key`` (in first-seen order): ``key``, ``m_mean``, ``m_sd`` for each
    metric ``m`` of ``metrics`` present in the tables (NaN ignored; sd NaN with fewer than two
    finite values), ``n_seeds`` (tables holding the row)."""
    if not tables:
        raise FacebenchError("no per-seed table to aggregate")
    stacked = pd.concat([t.assign(_seed=i) for i, t in enumerate(tables)], ignore_index=True)
    order = list(dict.fromkeys(stacked[key].tolist()))
    rows = []
    for name in order:
        part = stacked[stacked[key] == name]
        row = {key: name}
        for metric in metrics:
            if metric not in part.columns:
                continue
            values = pd.to_numeric(part[metric], errors="coerce").to_numpy(np.float64)
            finite = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(finite.mean()) if len(finite) else float("nan")
            row[f"{metric}_sd"] = float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")
        row["n_seeds"] = int(part["_seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class SeedOrdering:
    """The verdict on one pair over the seeds (module docstring). ``per_seed``: for each seed,
    ``(better, mean_difference, ci95_low, ci95_high)`` of A − B with ``better`` ``"A"``, ``"B"`` or
    None."""

    metric: str
    a: str
    b: str
    per_seed: tuple[tuple[str | None, float, float, float], ...]
    resampling: str

    @property
    def better(self) -> str | None:
        decided = {p[0] for p in self.per_seed}
        return decided.pop() if len(decided) == 1 and None not in decided else None

    @property
    def verdict(self) -> str:
        """``"A lower than B"`` (the names), or :data:`NOT_RESOLVED`."""
        if self.better == "A":
            return f"{self.a} lower than {self.b}"
        if self.better == "B":
            return f"{self.b} lower than {self.a}"
        return NOT_RESOLVED

    def row(self) -> dict:
        """A row of ``verdicts.csv`` (:data:`VERDICT_COLUMNS`)."""
        majority = max(("A", "B"), key=lambda side: sum(p[0] == side for p in self.per_seed))
        return {"metric": self.metric, "a": self.a, "b": self.b, "verdict": self.verdict,
                "seeds_deciding": sum(p[0] == (self.better or majority) for p in self.per_seed),
                "n_seeds": len(self.per_seed),
                "mean_difference": float(np.mean([p[1] for p in self.per_seed])),
                "ci_low_min": float(min(p[2] for p in self.per_seed)),
                "ci_high_max": float(max(p[3] for p in self.per_seed)), "resampling": self.resampling}


def order_pair(frames_a: Sequence[pd.DataFrame], frames_b: Sequence[pd.DataFrame], metric: str, *,
               names: tuple[str, str] = ("A", "B"), alpha: float = 0.05, resamples: int = 10000,
               seed: int = 0) -> SeedOrdering:
    """The verdict on A vs B over the seeds: ``frames_a[i]``, ``frames_b[i]`` are the per-sample
    frames (``id``, ``metric``, optional ``subject``, ``scored``) of seed i."""
    if len(frames_a) != len(frames_b) or not frames_a:
        raise FacebenchError(f"need the same number (>= 1) of seeds for both methods, got {len(frames_a)} "
                             f"and {len(frames_b)}")
    per_seed, units = [], set()
    for fa, fb in zip(frames_a, frames_b):
        paired = compare_per_sample(fa, fb, metric, alpha=alpha, resamples=resamples, seed=seed,
                                    where=f"{names[0]} and {names[1]}")
        per_seed.append((paired["better"], paired["mean_difference"], paired["ci95_low"], paired["ci95_high"]))
        units.add(paired["resampling"])
    return SeedOrdering(metric=metric, a=names[0], b=names[1], per_seed=tuple(per_seed),
                        resampling="/".join(sorted(units)))


def pairwise_verdicts(per_seed: Sequence[Mapping[str, pd.DataFrame]], names: Sequence[str],
                      metrics: Sequence[str], **kwargs) -> pd.DataFrame:
    """Every pair of ``names`` (in order) on each of ``metrics`` that all their frames carry:
    ``verdicts.csv`` rows (:data:`VERDICT_COLUMNS`). ``per_seed[i][name]`` is the per-sample frame
    of method ``name`` in seed i; a pair with fewer than 2 common samples in some seed is left out."""
    rows = []
    for metric in metrics:
        usable = [n for n in names if all(n in seed and metric in seed[n].columns for seed in per_seed)]
        for i, a in enumerate(usable):
            for b in usable[i + 1:]:
                try:
                    ordering = order_pair([s[a] for s in per_seed], [s[b] for s in per_seed], metric,
                                          names=(a, b), **kwargs)
                except FacebenchError:
                    continue
                rows.append(ordering.row())
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def verdict_column(table: pd.DataFrame, key: str, metric: str, verdicts: pd.DataFrame) -> list[str]:
    """For each row of ``table`` (an :func:`aggregate` table), its verdict on ``metric`` against the
    row with the next higher ``metric_mean``: ``"lower than NEXT"`` when :func:`pairwise_verdicts`
    called that ordering, ``"not resolved vs NEXT"`` otherwise; ``""`` for the highest row, a row
    without a mean, or a pair without per-sample values."""
    column = f"{metric}_mean"
    out = [""] * len(table)
    if column not in table.columns:
        return out
    means = pd.to_numeric(table[column], errors="coerce")
    ranked = [i for i in np.argsort(means.to_numpy(), kind="stable") if np.isfinite(means.iloc[i])]
    lookup = {}
    for row in verdicts[verdicts["metric"] == metric].itertuples(index=False):
        lookup[(row.a, row.b)] = lookup[(row.b, row.a)] = row.verdict
    for position, index in enumerate(ranked[:-1]):
        name, above = str(table[key].iloc[index]), str(table[key].iloc[ranked[position + 1]])
        verdict = lookup.get((name, above))
        if verdict is None:
            continue
        if verdict == f"{name} lower than {above}":
            out[index] = f"lower than {above}"
        elif verdict == f"{above} lower than {name}":  # every seed orders them the other way than the means
            out[index] = f"higher than {above}"
        else:
            out[index] = f"{NOT_RESOLVED} vs {above}"
    return out


def summarize_seeds(out: str | Path, name: str, tables: Sequence[pd.DataFrame], key: str, metrics: Sequence[str],
                    frames: Sequence[Mapping[str, pd.DataFrame]], verdict_metrics: Sequence[str],
                    headline: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """Aggregate the per-seed ``tables`` (:func:`aggregate`), call the verdicts on ``verdict_metrics``
    from the per-seed per-sample ``frames`` (:func:`pairwise_verdicts`), add the ``verdict`` column
    on ``headline``, write ``out/NAME.csv`` and ``out/verdicts.csv``; return ``(table, verdicts,
    files)``."""
    from facebench.atomic import write_csv

    table = aggregate(tables, key, metrics)
    names = [str(v) for v in table[key]]
    verdicts = pairwise_verdicts(frames, names, verdict_metrics)
    table["verdict"] = verdict_column(table, key, headline, verdicts)
    out = Path(out)
    files = {name: write_csv(table, out / f"{name}.csv"), "verdicts": write_csv(verdicts, out / "verdicts.csv")}
    return table, verdicts, files


def per_sample_frames(results: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """``{name: per_sample.csv frame}`` of results folders (those that exist)."""
    from facebench.leaderboard.results import read_results

    return {name: read_results(path).per_sample() for name, path in results.items()
            if (Path(path) / "summary.json").is_file()}
