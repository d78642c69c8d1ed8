"""Scoring a submission against a dataset under a protocol: evaluate → accumulate → summarize.

:func:`score` is the library entry point: it validates the submission (an invalid one raises
:class:`~facebench.benchmark.validation.InvalidSubmission` carrying the full report), computes the
per-sample metrics of docs/metrics.md, aggregates them (mean, median, std and a bootstrap 95 % CI of each
mean, overall and per |yaw| bin), and returns a :class:`ScoreResult`; it prints nothing.
:func:`write_results` writes ``per_sample.csv``, ``summary.json`` and ``per_vertex.npz`` atomically.

Corresponding-topology protocols compare vertex n with vertex n in the head frame, in chunks of
samples (vectorized). Scan protocols align each prediction onto its ground truth (landmark
similarity, ICP; never a reflection) and measure ground-truth-to-surface distances, one sample at a
time; a failure in one sample (e.g. degenerate landmarks) marks that sample unscored with its
reason and never stops the others. Missing predictions are never scored as zero: they lower the
completion rate. Scan datasets (MICC, FaceWarehouse) give each sample its own scan of its own
topology (``FaceDataset.scan``); their ``per_vertex.npz`` holds the ragged per-sample distances on
each scan's vertices only (no mean face: the scans share no topology), and ``summary.json``
records the dataset's kind, landmark names and ``mm_per_unit``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facebench import __version__
from facebench.atomic import atomic_path
from facebench.benchmark import metrics, statistics
from facebench.benchmark.method_name import check_method_name
from facebench.benchmark.protocols import Protocol
from facebench.datasets.dataset_file import FaceDataset
from facebench.errors import FacebenchError
from facebench.hashing import file_sha256

RESULTS_FORMAT = "facebench-results"
RESULTS_VERSION = 1

#: Metric keys of corresponding-topology protocols (pose metrics only when poses are given).
POSE_METRICS = ("translation_cm", "rotation_deg", "reprojection_px")
#: Extra per-sample statistics of scan protocols.
SCAN_METRICS = ("median_mm", "rmse_mm")

#: Store the full (N, V) per-vertex error matrix only up to this many entries.
MAX_DENSE_PER_VERTEX = 20_000_000

Progress = Callable[[int, int], None]


@dataclasses.dataclass
class ScoreResult:
    """Everything one score produces (what :func:`write_results` writes).

    Attributes:
        summary: the ``summary.json`` content (see the README, "Results").
        per_sample: one row per dataset id: ``id, scored, error, yaw, pitch, roll, yaw_bin`` and
            one column per metric key (NaN where not scored or not applicable).
        per_vertex: arrays of ``per_vertex.npz`` (mean per-vertex error, counts, faces, mean shape;
            dense or ragged per-sample distances).
    """

    summary: dict[str, Any]
    per_sample: pd.DataFrame
    per_vertex: dict[str, np.ndarray]

    @property
    def metric_keys(self) -> list[str]:
        return list(self.summary["metrics"])


def score(
    dataset_path: str | Path,
    submission_path: str | Path,
    protocol: Protocol,
    *,
    method: str | None = None,
    chunk_size: int = 16,
    progress: Progress | None = None,
    workers: int = 1,
    dask_address: str | None = None,
) -> ScoreResult:
    """Score ``submission_path`` against ``dataset_path`` under ``protocol``.

    Args:
        dataset_path: a facebench dataset file (``*.h5``).
        submission_path: an HDF5 submission, a folder of meshes with ``manifest.json``, or a zip.
        protocol: e.g. ``get_protocol("synthetic")``.
        method: name of the method (default: the submission's ``method`` attribute).
        chunk_size: samples per vectorized step (corresponding topology); small chunks keep the
            arrays in cache and are fastest (16: 3.7 s for 2,000 samples here, 256: 8.2 s).
        progress: optional ``callback(done, total)``.
        workers: processes on this machine (> 1: the chunks, or under a scan protocol the samples,
            are scored in parallel by :mod:`facebench.benchmark.parallel_scoring`, with the same
            bytes as one process; each worker runs one thread).
        dask_address: score them on the workers of this dask.distributed scheduler instead
            (they must see the same dataset and submission paths).

    Raises:
        InvalidSubmission: the submission failed validation (``error.report`` has every problem).
        FacebenchError: the dataset does not suit the protocol.
        ScoringWorkerLost: a worker process died (parallel scoring; nothing is returned).
    """
    from facebench.benchmark.submission import load_submission

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = FaceDataset(dataset_path)
    _check_dataset(dataset, protocol)
    topology = "dataset" if protocol.topology == "corresponding" else "any"
    with load_submission(submission_path, dataset, topology=topology) as submission:
        timings["validate"] = time.perf_counter() - t0
        method = (check_method_name(method, where="--method") if method is not None
                  else (submission.report.method if submission.report else None) or "unnamed")  # validated name
        t1 = time.perf_counter()
        warnings: dict[int, str] = {}
        if protocol.topology == "corresponding":
            values, per_vertex, errors = _evaluate_corresponding(dataset, submission, protocol, chunk_size, progress,
                                                                 workers, dask_address)
        else:
            values, per_vertex, errors = _evaluate_scan(dataset, submission, protocol, progress, warnings, workers,
                                                        dask_address)
        timings["evaluate"] = time.perf_counter() - t1
        submission_info = {
            "path": str(submission_path),
            "sha256": submission.sha256,
            "format": submission.kind,
            "has_pose": bool(submission.has_pose),
            "warnings": [p.message for p in submission.report.warnings][:50],
        }
    t2 = time.perf_counter()
    per_sample = _per_sample_table(dataset, values, errors, protocol)
    per_sample.insert(int(per_sample.columns.get_loc("error")) + 1, "warning",
                      [warnings.get(i, "") for i in range(len(dataset))])
    summary = _summarize(dataset, per_sample, protocol, method, submission_info, values)
    summary["n_warnings"] = len(warnings)
    if protocol.topology == "scan":  # NoW's aggregation: every distance of every scan pooled
        summary["pooled"] = metrics.pooled_distance_stats(
            np.split(per_vertex["distances"].astype(np.float64), per_vertex["offsets"][1:-1]))
    timings["summarize"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    summary["timings_s"] = timings
    return ScoreResult(summary=summary, per_sample=per_sample, per_vertex=per_vertex)


def _check_dataset(dataset: FaceDataset, protocol: Protocol) -> None:
    kind = dataset.kind
    if kind != protocol.dataset_kind:
        raise FacebenchError(
            f"protocol {protocol.name} scores {protocol.dataset_kind} datasets, but {dataset.path} is {kind!r}"
        )


# ---------------------------------------------------------------------------- evaluate
def _evaluate_corresponding(dataset: FaceDataset, submission, protocol: Protocol, chunk_size: int,
                            progress: Progress | None, workers: int = 1, dask_address: str | None = None):
    from facebench.benchmark.parallel_scoring import accumulate, evaluate_chunk, parallel_chunks

    n, V = len(dataset), dataset.n_vertices
    keys = ["shape_mm", *(POSE_METRICS if protocol.pose_metrics and submission.has_pose else ())]
    values = {key: np.full(n, np.nan) for key in keys}
    sum_per_vertex, count = np.zeros(V), np.zeros(V, np.int64)
    sum_gt = np.zeros((V, 3))
    dense = np.full((n, V), np.nan, np.float16) if n * V <= MAX_DENSE_PER_VERTEX else None
    if workers > 1 or dask_address:  # same chunks, other processes, added here in chunk order: same bytes
        pieces = parallel_chunks(dataset.path, submission.path, n, keys, chunk_size, dense is not None,
                                 workers=workers, dask_address=dask_address)
    else:
        samples = iter(submission.samples(chunk_size=chunk_size))
        pieces = (evaluate_chunk(dataset, [next(samples) for _ in range(start, stop)], start, stop, keys,
                                 dataset.shared_K, dense is not None)
                  for start, stop in ((s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)))
    for piece in pieces:
        accumulate(piece, values, sum_per_vertex, count, sum_gt, dense)
        _report(progress, piece.stop, n)
    per_vertex = _per_vertex_common(dataset, sum_per_vertex, count, sum_gt / max(n, 1))
    if dense is not None:
        per_vertex["ids"] = np.array(dataset.ids, dtype=np.str_)
        per_vertex["distances"] = dense
    return values, per_vertex, {}


def _scan_params(protocol: Protocol):
    from facebench.benchmark.align import ScanAlignmentParams

    return ScanAlignmentParams(
        with_scale=protocol.alignment == "similarity",
        init="landmarks",
        icp=protocol.icp != "none",
        method=protocol.icp if protocol.icp != "none" else "point_to_plane",
        max_iterations=protocol.icp_max_iterations,
        tolerance=protocol.icp_tolerance,
        max_correspondence_mm=(math.inf if protocol.icp_max_correspondence_mm is None
                               else protocol.icp_max_correspondence_mm),
        icp_max_points=protocol.icp_max_points,
        crop_center=protocol.crop_center or "nose_tip",
        crop_radius_mm=protocol.crop_radius_mm,
        crop_search_mm=protocol.crop_search_mm,
        direction=protocol.distance_direction,
        final=protocol.icp_final,
        crop_rule=protocol.crop_rule,
        landmark_residual_limit=protocol.landmark_residual_limit,
        stop_implausible=protocol.stop_implausible,
    )


def _evaluate_scan(dataset: FaceDataset, submission, protocol: Protocol, progress: Progress | None,
                   warnings: dict[int, str] | None = None, workers: int = 1, dask_address: str | None = None):
    """Align and measure one sample at a time (:func:`facebench.benchmark.parallel_scoring.evaluate_scan_sample`;
    with ``workers`` > 1 or ``dask_address``, in other processes, added here in sample order: the
    same bytes). Ground truth: ``dataset.scan(i)`` (the sample's own scan for MICC/FaceWarehouse
    files, the vertices with the shared faces for synthetic ones) and ``dataset.scan_landmarks(i)``
    in the protocol's landmark order. Per-vertex results: ragged ``offsets``/``vertex_indices``/
    ``distances`` on each scan's own vertices; the mean per-vertex error on the mean face only when
    every sample shares one topology (synthetic files)."""
    from facebench.benchmark.parallel_scoring import accumulate_scan, evaluate_scan_sample, parallel_scan_samples

    params = _scan_params(protocol)
    n = len(dataset)
    shared = not dataset.is_scan_dataset
    V = dataset.n_vertices if shared else 0
    values = {key: np.full(n, np.nan) for key in ("shape_mm", *SCAN_METRICS)}
    errors: dict[int, str] = {}
    sum_per_vertex, count = np.zeros(V), np.zeros(V, np.int64)
    offsets, vertex_indices, distances = [0], [], []
    if workers > 1 or dask_address:
        pieces = parallel_scan_samples(dataset.path, submission.path, n, params, workers=workers,
                                       dask_address=dask_address)
    else:
        pieces = (evaluate_scan_sample(dataset, sample, i, params) for i, sample in enumerate(submission.samples()))
    for piece in pieces:
        kept = accumulate_scan(piece, values, errors, warnings, sum_per_vertex if shared else None,
                               count if shared else None, vertex_indices, distances)
        offsets.append(offsets[-1] + kept)
        _report(progress, piece.index + 1, n)
    per_vertex = _per_vertex_common(dataset, sum_per_vertex, count) if shared else {}
    per_vertex["ids"] = np.array(dataset.ids, dtype=np.str_)
    per_vertex["offsets"] = np.asarray(offsets, np.int64)
    per_vertex["vertex_indices"] = np.concatenate(vertex_indices) if vertex_indices else np.zeros(0, np.int32)
    per_vertex["distances"] = np.concatenate(distances) if distances else np.zeros(0, np.float32)
    return values, per_vertex, errors


def _per_vertex_common(dataset: FaceDataset, sums: np.ndarray, count: np.ndarray,
                       mean_vertices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Mean per-vertex error and the mean ground-truth shape (read here unless given); only for
    datasets whose samples share one topology (never called for scan datasets)."""
    if dataset.is_scan_dataset:
        raise FacebenchError(f"{dataset.path}: per-sample scans have no shared topology for a mean face")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    if mean_vertices is None:
        mean_vertices = dataset.mean_vertices()
    return {
        "mean_per_vertex": mean.astype(np.float32),
        "count": count,
        "faces": np.asarray(dataset.faces, np.int32),
        "mean_vertices": mean_vertices.astype(np.float32),
    }


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


# ---------------------------------------------------------------------------- accumulate
def _per_sample_table(dataset: FaceDataset, values: dict[str, np.ndarray], errors: dict[int, str],
                      protocol: Protocol) -> pd.DataFrame:
    n = len(dataset)
    yaw, pitch, roll = (dataset.read(k) if k in dataset.fields else np.full(n, np.nan)
                        for k in ("yaw", "pitch", "roll"))
    table = pd.DataFrame({"id": dataset.ids})
    table["scored"] = np.isfinite(values["shape_mm"])
    table["error"] = [errors.get(i, "") for i in range(n)]
    table["yaw"], table["pitch"], table["roll"] = yaw, pitch, roll
    table["yaw_bin"] = metrics.yaw_bin_labels(yaw, protocol.yaw_bins) if np.isfinite(yaw).all() else ""
    if "subject" in dataset.extra_fields:  # the bootstrap's resampling unit (benchmark/statistics.py)
        table["subject"] = np.asarray(dataset.read("subject"), np.int64)
    for key, column in values.items():
        table[key] = column
    return table


# ---------------------------------------------------------------------------- summarize
def _summarize(dataset: FaceDataset, table: pd.DataFrame, protocol: Protocol, method: str,
               submission_info: dict, values: dict[str, np.ndarray]) -> dict[str, Any]:
    n_expected = len(table)
    n_scored = int(table["scored"].sum())
    resamples, seed = protocol.bootstrap_resamples, protocol.bootstrap_seed
    subjects = table["subject"] if "subject" in table else None
    summary_metrics = {key: statistics.describe(table[key], subjects, resamples=resamples, seed=seed)
                       for key in values}
    bins: dict[str, dict[str, Any]] = {}
    if (table["yaw_bin"] != "").all():
        groups = dict(tuple(table.groupby("yaw_bin", sort=False)))
        order = [name for name in (*metrics.yaw_bin_names(protocol.yaw_bins), "out") if name in groups]
        for key in values:
            bins[key] = {label: statistics.describe(groups[label][key], groups[label].get("subject"),
                                                    resamples=resamples, seed=seed)
                         for label in order}
    summary = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "method": method,
        "protocol": protocol.to_dict(),
        "protocol_id": protocol.id,
        "dataset": {
            "path": str(dataset.path),
            "name": dataset.path.stem,
            "sha256": file_sha256(dataset.path),
            "n": n_expected,
            "model": dataset.attrs.get("model"),
            "model_version": dataset.attrs.get("model_version"),
            "kind": dataset.kind,
            "mm_per_unit": float(dataset.attrs.get("mm_per_unit", 1.0)),
            "landmark_names": list(dataset.landmark_names) if dataset.landmark_names else None,
        },
        "submission": submission_info,
        "facebench_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_expected": n_expected,
        "n_scored": n_scored,
        "completion": n_scored / n_expected if n_expected else 0.0,
        "n_failed": int((table["error"] != "").sum()),
        "metrics": summary_metrics,
        "bins": bins,
        "bin_edges_yaw_deg": list(protocol.yaw_bins),
        # bootstrap CIs resample subjects when the dataset's subject ids repeat, else images
        "resampling": statistics.resampling_unit(None if subjects is None else subjects[table["scored"]]),
    }
    if protocol.aggregation == "rmse_mean_std" and "rmse_mm" in summary_metrics:
        summary["headline"] = {"metric": "rmse_mm", "mean": summary_metrics["rmse_mm"]["mean"],
                               "std": summary_metrics["rmse_mm"]["std"]}
    else:
        summary["headline"] = {"metric": "shape_mm", "mean": summary_metrics["shape_mm"]["mean"],
                               "std": summary_metrics["shape_mm"]["std"]}
    return summary


# ---------------------------------------------------------------------------- write
def write_results(result: ScoreResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, ``per_sample.csv`` and ``per_vertex.npz`` into ``out_dir``, each
    atomically (``summary.json`` last, so a folder with a summary is complete)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_sample": out_dir / "per_sample.csv",
        "per_vertex": out_dir / "per_vertex.npz",
        "summary": out_dir / "summary.json",
    }
    with atomic_path(paths["per_sample"]) as tmp:
        result.per_sample.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(paths["per_vertex"], suffix=".npz") as tmp:
        np.savez_compressed(tmp, **result.per_vertex)
    with atomic_path(paths["summary"]) as tmp:
        tmp.write_text(json.dumps(result.summary, indent=2, allow_nan=False, default=_json_default) + "\n")
    return paths


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
