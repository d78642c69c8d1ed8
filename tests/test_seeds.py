"""Several seeds (facebench.leaderboard.seeds): mean and sd across seeds, and the verdict rule — an
ordering is called only when it holds in every seed with a paired interval excluding 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facebench.errors import FacebenchError
from facebench.leaderboard.seeds import (
    NOT_RESOLVED,
    aggregate,
    order_pair,
    pairwise_verdicts,
    seed_list,
    verdict_column,
)


def _frame(values, subjects=None):
    frame = pd.DataFrame({"id": [f"s{i:03d}" for i in range(len(values))], "scored": True, "shape_mm": values})
    if subjects is not None:
        frame["subject"] = subjects
    return frame


def _seeds(shifts, n=40, seed=0):
    """Per seed: method B = A + shift + small noise (A random)."""
    rng = np.random.default_rng(seed)
    out = []
    for shift in shifts:
        a = rng.uniform(2.0, 4.0, n)
        b = a + shift + rng.normal(0.0, 0.05, n)
        out.append({"A": _frame(a), "B": _frame(b)})
    return out


def test_ordering_that_holds_in_every_seed_is_called():
    seeds = _seeds([0.5, 0.6, 0.4])
    ordering = order_pair([s["A"] for s in seeds], [s["B"] for s in seeds], "shape_mm", names=("A", "B"),
                          resamples=2000)
    assert ordering.better == "A" and ordering.verdict == "A lower than B"
    assert all(p[0] == "A" and p[3] < 0 for p in ordering.per_seed)  # every interval of A - B below 0
    reverse = order_pair([s["B"] for s in seeds], [s["A"] for s in seeds], "shape_mm", names=("B", "A"),
                         resamples=2000)
    assert reverse.verdict == "A lower than B"  # named, not positional


def test_one_seed_that_flips_leaves_it_unresolved():
    seeds = _seeds([0.5, -0.5, 0.4])  # seed 1 clearly orders them the other way
    ordering = order_pair([s["A"] for s in seeds], [s["B"] for s in seeds], "shape_mm", names=("A", "B"),
                          resamples=2000)
    assert [p[0] for p in ordering.per_seed] == ["A", "B", "A"]
    assert ordering.better is None and ordering.verdict == NOT_RESOLVED


def test_an_interval_containing_zero_in_one_seed_leaves_it_unresolved():
    seeds = _seeds([0.5, 0.0, 0.4])  # seed 1: no difference beyond the noise
    ordering = order_pair([s["A"] for s in seeds], [s["B"] for s in seeds], "shape_mm", names=("A", "B"),
                          resamples=2000)
    assert ordering.per_seed[1][0] is None and ordering.per_seed[1][2] < 0 < ordering.per_seed[1][3]
    assert ordering.verdict == NOT_RESOLVED


def test_subject_ids_widen_the_interval_to_unresolved():
    """40 images of 4 subjects whose errors move together: the image bootstrap would resolve the
    difference, the subject bootstrap does not."""
    rng = np.random.default_rng(3)
    subjects = np.repeat(np.arange(4), 10)
    effect = np.array([0.6, -0.5, 0.4, -0.45])[subjects]  # B - A differs by subject, mean ~0.01
    a = rng.uniform(2.0, 4.0, 40)
    b = a + effect + 0.02 + rng.normal(0, 0.01, 40)
    with_subjects = order_pair([_frame(a, subjects)], [_frame(b, subjects)], "shape_mm", resamples=2000)
    without = order_pair([_frame(a)], [_frame(b)], "shape_mm", resamples=2000)
    assert with_subjects.resampling == "subjects" and with_subjects.verdict == NOT_RESOLVED
    assert without.resampling == "images"
    assert (with_subjects.per_seed[0][3] - with_subjects.per_seed[0][2]) > 3 * (without.per_seed[0][3]
                                                                              - without.per_seed[0][2])


def test_aggregate_mean_sd_and_verdict_column():
    tables = [pd.DataFrame({"loss": ["A", "B", "C"], "shape_mm": [1.0, 2.0, 3.0]}),
              pd.DataFrame({"loss": ["A", "B", "C"], "shape_mm": [3.0, 2.0, 3.5]})]
    table = aggregate(tables, "loss", ["shape_mm", "absent"])
    assert list(table.columns) == ["loss", "shape_mm_mean", "shape_mm_sd", "n_seeds"]
    assert table["shape_mm_mean"].tolist() == [2.0, 2.0, 3.25]
    assert table["shape_mm_sd"].tolist() == pytest.approx([np.sqrt(2.0), 0.0, np.sqrt(0.125)])
    verdicts = pd.DataFrame({"metric": "shape_mm", "a": ["A", "A", "B"], "b": ["B", "C", "C"],
                             "verdict": [NOT_RESOLVED, "A lower than C", "B lower than C"]})
    assert verdict_column(table, "loss", "shape_mm", verdicts) == ["not resolved vs B", "lower than C", ""]
    single = aggregate(tables[:1], "loss", ["shape_mm"])
    assert single["shape_mm_sd"].isna().all() and (single["n_seeds"] == 1).all()


def test_pairwise_verdicts_table():
    seeds = _seeds([0.5, 0.6])
    for s in seeds:
        s["C"] = s["B"].assign(shape_mm=s["B"]["shape_mm"] + 1.0)
    verdicts = pairwise_verdicts(seeds, ["A", "B", "C"], ["shape_mm", "rmse_mm"], resamples=1000)
    assert list(zip(verdicts["a"], verdicts["b"])) == [("A", "B"), ("A", "C"), ("B", "C")]  # no rmse_mm: left out
    assert verdicts["verdict"].tolist() == ["A lower than B", "A lower than C", "B lower than C"]
    assert (verdicts["seeds_deciding"] == 2).all() and (verdicts["ci_high_max"] < 0).all()


def test_seed_list_checks_n():
    assert seed_list(5, 3) == [5, 6, 7]
    for bad in (0, -1):
        with pytest.raises(FacebenchError, match="--seeds"):
            seed_list(0, bad)
