"""Read and validate the results folders written by ``facebench score``.

One folder per method x protocol x dataset (docs/file-formats.md, results):

- ``summary.json`` (required): format ``facebench-results`` version 1, method, protocol, dataset,
  submission, completion, ``metrics`` (aggregates of each metric), ``bins`` (aggregates per |yaw|
  bin), ``bin_edges_yaw_deg``;
- ``per_sample.csv`` (required): ``id, scored, yaw, pitch, roll, yaw_bin`` and one column per metric;
- ``per_vertex.npz`` (optional): ``mean_per_vertex (V,)`` mm, ``faces (F,3)``, ``mean_vertices (V,3)``
  head frame mm, for heat maps. A missing file only means no heat map.

A malformed folder raises :class:`~facebench.errors.InputFileError` naming the file and the problem.
Nothing here prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facebench.benchmark.method_name import method_name_problem
from facebench.errors import InputFileError

__all__ = [
    "RESULTS_FORMAT", "RESULTS_VERSION", "METRIC_KEYS", "METRIC_LABELS", "STAT_KEYS",
    "MetricSummary", "PerVertex", "Results", "read_results", "find_results_dirs", "read_per_sample",
    "read_per_vertex", "metric_label",
]

RESULTS_FORMAT = "facebench-results"
RESULTS_VERSION = 1
SUMMARY_FILE = "summary.json"
PER_SAMPLE_FILE = "per_sample.csv"
PER_VERTEX_FILE = "per_vertex.npz"

#: Known metric keys in display order; other keys found in results are kept after these.
METRIC_KEYS: tuple[str, ...] = ("shape_mm", "translation_cm", "rotation_deg", "reprojection_px", "rmse_mm", "median_mm")
#: Human labels with units.
METRIC_LABELS: dict[str, str] = {
    "shape_mm": "shape error (mm)",
    "translation_cm": "camera translation error (cm)",
    "rotation_deg": "camera rotation error (deg)",
    "reprojection_px": "reprojection error (px)",
    "rmse_mm": "per-sample RMSE (mm)",
    "median_mm": "per-sample median distance (mm)",
}
#: Aggregates of a metric copied into leaderboard rows.
STAT_KEYS: tuple[str, ...] = ("mean", "median", "std", "ci95_low", "ci95_high")
_DESCRIBE_KEYS = ("n", "mean", "median", "std", "min", "max", "ci95_low", "ci95_high")


def metric_label(key: str) -> str:
    """``"shape error (mm)"`` for ``"shape_mm"``; the key itself for unknown metrics."""
    return METRIC_LABELS.get(key, key)


@dataclasses.dataclass(frozen=True)
class MetricSummary:
    """Aggregates of one metric over the scored samples (NaN where not computed; units of the metric)."""

    n: int
    mean: float
    median: float
    std: float
    min: float
    max: float
    ci95_low: float
    ci95_high: float


@dataclasses.dataclass(frozen=True)
class PerVertex:
    """Per-vertex mean error of one results folder (corresponding topology or single-topology scans).

    Attributes:
        mean_per_vertex: ``(V,)`` float, mean over scored samples of the per-vertex error, mm
            (NaN where ``count`` is 0).
        count: ``(V,)`` number of samples contributing to each vertex, or None.
        faces: ``(F,3)`` int triangles of the ground-truth topology.
        mean_vertices: ``(V,3)`` float mean ground-truth shape, head frame, mm.
    """

    mean_per_vertex: np.ndarray
    count: np.ndarray | None
    faces: np.ndarray
    mean_vertices: np.ndarray


@dataclasses.dataclass(frozen=True)
class Results:
    """One results folder, validated.

    Attributes:
        path: the folder.
        method: the method name as submitted (untrusted text: escape it before putting it in HTML).
        protocol: every protocol parameter (the ``protocol`` object of summary.json).
        protocol_id: ``name@version``.
        dataset: the ``dataset`` object (``name``, ``sha256``, ``n``, ...).
        n_expected, n_scored, completion: samples in the dataset, samples scored, their ratio.
        metrics: metric key -> aggregates over the scored samples.
        bins: metric key -> yaw-bin label -> aggregates (bins in file order).
        bin_edges_yaw_deg: |yaw| bin edges in degrees.
        summary: the whole summary.json as read.
    """

    path: Path
    method: str
    protocol: dict[str, Any]
    protocol_id: str
    dataset: dict[str, Any]
    n_expected: int
    n_scored: int
    completion: float
    metrics: dict[str, MetricSummary]
    bins: dict[str, dict[str, MetricSummary]]
    bin_edges_yaw_deg: tuple[float, ...]
    summary: dict[str, Any]
    per_sample_frame: pd.DataFrame = dataclasses.field(repr=False, compare=False, default=None)
    per_vertex_data: PerVertex | None = dataclasses.field(repr=False, compare=False, default=None)

    @property
    def protocol_name(self) -> str:
        return str(self.protocol["name"])

    @property
    def protocol_version(self) -> str:
        return str(self.protocol["version"])

    @property
    def dataset_name(self) -> str:
        return str(self.dataset.get("name", ""))

    @property
    def dataset_sha256(self) -> str:
        return str(self.dataset.get("sha256", "") or "")

    @property
    def created(self) -> str:
        return str(self.summary.get("created", "") or "")

    @property
    def facebench_version(self) -> str:
        return str(self.summary.get("facebench_version", "") or "")

    @property
    def submission_sha256(self) -> str:
        submission = self.summary.get("submission") or {}
        return str(submission.get("sha256", "") or "") if isinstance(submission, Mapping) else ""

    @property
    def group(self) -> tuple[str, str, str]:
        """``(protocol name, protocol version, dataset name)``: rows comparable with each other."""
        return (self.protocol_name, self.protocol_version, self.dataset_name)

    @property
    def metric_keys(self) -> list[str]:
        """Metric keys present, known ones first in :data:`METRIC_KEYS` order."""
        return ordered_metric_keys(self.metrics)

    def per_sample(self) -> pd.DataFrame:
        """``per_sample.csv`` as a DataFrame (``id`` str, ``scored`` bool, metric columns float);
        a copy of what :func:`read_results` read."""
        if self.per_sample_frame is None:
            return read_per_sample(self.path / PER_SAMPLE_FILE, self.metric_keys)
        return self.per_sample_frame.copy()

    def per_vertex(self) -> PerVertex | None:
        """The per-vertex mean error, or None when ``per_vertex.npz`` is absent or has no
        single-topology mean (e.g. scans of many topologies)."""
        return self.per_vertex_data


def ordered_metric_keys(keys: Iterable[str]) -> list[str]:
    """Known metric keys in :data:`METRIC_KEYS` order, then the others sorted."""
    keys = set(keys)
    return [k for k in METRIC_KEYS if k in keys] + sorted(keys - set(METRIC_KEYS))


# ----------------------------------------------------------------------------------------- summary


def _number(value: Any, path: Path, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputFileError(path, f"{where} must be a number or null, got {type(value).__name__}")
    return float(value)


def _metric_summary(data: Any, path: Path, where: str) -> MetricSummary:
    if not isinstance(data, Mapping):
        raise InputFileError(path, f"{where} must be an object of aggregates, got {type(data).__name__}")
    if "mean" not in data:
        raise InputFileError(path, f"{where} has no 'mean'")
    values = {key: _number(data.get(key), path, f"{where}.{key}") for key in _DESCRIBE_KEYS}
    n = values.pop("n")
    return MetricSummary(n=0 if math.isnan(n) else int(n), **values)


def _require(data: Mapping, key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    if key not in data:
        raise InputFileError(path, f"missing key '{where}{key}'")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputFileError(path, f"'{where}{key}' must be {names}, got {type(value).__name__}")
    return value


def parse_summary(data: Any, path: Path) -> dict[str, Any]:
    """Check a summary.json object (as loaded from ``path``) and return it; raise InputFileError."""
    if not isinstance(data, Mapping):
        raise InputFileError(path, "not a JSON object")
    if data.get("format") != RESULTS_FORMAT:
        raise InputFileError(path, f"format is {data.get('format')!r}, expected {RESULTS_FORMAT!r}")
    version = data.get("version")
    if version != RESULTS_VERSION:
        raise InputFileError(path, f"unsupported results version {version!r} (this facebench reads {RESULTS_VERSION})")
    method = _require(data, "method", str, path)
    problem = method_name_problem(method)  # the rule validate and score apply
    if problem is not None:
        raise InputFileError(path, f"'method' {problem}")
    protocol = _require(data, "protocol", Mapping, path)
    for key in ("name", "version"):
        _require(protocol, key, (str, int, float), path, "protocol.")
    dataset = _require(data, "dataset", Mapping, path)
    _require(dataset, "name", str, path, "dataset.")
    n_expected = _require(data, "n_expected", int, path)
    n_scored = _require(data, "n_scored", int, path)
    completion = _number(_require(data, "completion", (int, float), path), path, "completion")
    if n_expected < 0 or not 0 <= n_scored <= max(n_expected, 0) or not 0.0 <= completion <= 1.0:
        raise InputFileError(path, f"inconsistent counts: n_expected={n_expected}, n_scored={n_scored}, "
                                   f"completion={completion}")
    metrics = _require(data, "metrics", Mapping, path)
    if "shape_mm" not in metrics:
        raise InputFileError(path, "'metrics' has no 'shape_mm'")
    bins = data.get("bins", {}) or {}
    if not isinstance(bins, Mapping) or not all(isinstance(v, Mapping) for v in bins.values()):
        raise InputFileError(path, "'bins' must map metric -> {bin label: aggregates}")
    edges = data.get("bin_edges_yaw_deg", protocol.get("yaw_bins", []))
    if not isinstance(edges, list) or not all(isinstance(e, (int, float)) for e in edges):
        raise InputFileError(path, "'bin_edges_yaw_deg' must be a list of numbers")
    return dict(data)


def read_results(path: str | Path) -> Results:
    """Read and validate a results folder: ``summary.json`` and ``per_sample.csv`` must exist and
    be well formed; ``per_vertex.npz`` is optional but must be well formed when present. All three
    are read now, so a malformed folder fails here, before anything is written.

    Raises:
        InputFileError: naming the file that is missing or malformed.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputFileError(path, "not a results folder (no such directory)")
    summary_path = path / SUMMARY_FILE
    if not summary_path.is_file():
        raise InputFileError(summary_path, "missing: not a facebench results folder")
    try:
        data = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(summary_path, f"not valid JSON ({error})") from None
    data = parse_summary(data, summary_path)
    if not (path / PER_SAMPLE_FILE).is_file():
        raise InputFileError(path / PER_SAMPLE_FILE, "missing")
    protocol = dict(data["protocol"])
    protocol_id = str(data.get("protocol_id") or f"{protocol['name']}@{protocol['version']}")
    metrics = {key: _metric_summary(value, summary_path, f"metrics.{key}") for key, value in data["metrics"].items()}
    bins = {
        metric: {str(label): _metric_summary(value, summary_path, f"bins.{metric}.{label}")
                 for label, value in per_bin.items()}
        for metric, per_bin in (data.get("bins") or {}).items()
    }
    edges = data.get("bin_edges_yaw_deg", protocol.get("yaw_bins", []))
    per_sample = read_per_sample(path / PER_SAMPLE_FILE, ordered_metric_keys(metrics))
    per_vertex_path = path / PER_VERTEX_FILE
    per_vertex = read_per_vertex(per_vertex_path) if per_vertex_path.is_file() else None
    return Results(
        path=path, method=data["method"], protocol=protocol, protocol_id=protocol_id,
        dataset=dict(data["dataset"]), n_expected=int(data["n_expected"]), n_scored=int(data["n_scored"]),
        completion=float(data["completion"]), metrics=metrics, bins=bins,
        bin_edges_yaw_deg=tuple(float(e) for e in edges), summary=data,
        per_sample_frame=per_sample, per_vertex_data=per_vertex,
    )


def find_results_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Results folders among ``paths``: each is a results folder (holds summary.json) or a parent
    searched recursively. Sorted, without duplicates.

    Raises:
        InputFileError: a path does not exist or holds no results folder.
    """
    found: dict[Path, None] = {}
    for item in paths:
        item = Path(item)
        if not item.exists():
            raise InputFileError(item, "no such file or directory")
        if item.is_file():
            if item.name != SUMMARY_FILE:
                raise InputFileError(item, "expected a results folder (or its summary.json)")
            item = item.parent
        if (item / SUMMARY_FILE).is_file():
            found[item.resolve()] = None
            continue
        inside = sorted(p.parent.resolve() for p in item.rglob(SUMMARY_FILE))
        if not inside:
            raise InputFileError(item, f"holds no results folder (no {SUMMARY_FILE} below it)")
        found.update(dict.fromkeys(inside))
    return sorted(found)


# ------------------------------------------------------------------------------------- per sample


def _as_bool(series: pd.Series, path: Path) -> pd.Series:
    if series.dtype == bool:
        return series
    text = series.astype(str).str.strip().str.lower()
    mapping = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    bad = ~text.isin(list(mapping))
    if bad.any():
        raise InputFileError(path, f"column 'scored' must be True/False, got {series[bad].iloc[0]!r}")
    return text.map(mapping).astype(bool)


def read_per_sample(path: str | Path, metric_keys: Iterable[str] = ("shape_mm",)) -> pd.DataFrame:
    """``per_sample.csv`` with ``id`` (str), ``scored`` (bool) and the ``metric_keys`` columns (float).

    Raises:
        InputFileError: unreadable CSV, missing columns, duplicate ids, non-numeric metric values.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"id": str, "yaw_bin": str}, keep_default_na=True)
    except FileNotFoundError:
        raise InputFileError(path, "missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise InputFileError(path, f"not a readable CSV ({str(error).strip().splitlines()[0]})") from None
    missing = [c for c in ("id", "scored", *metric_keys) if c not in frame.columns]
    if missing:
        raise InputFileError(path, f"missing column(s) {', '.join(missing)}")
    if frame["id"].isna().any():
        raise InputFileError(path, "empty id")
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        raise InputFileError(path, f"duplicate id {duplicated.iloc[0]!r}")
    frame["scored"] = _as_bool(frame["scored"], path)
    for key in (*metric_keys, *[c for c in ("yaw", "pitch", "roll") if c in frame.columns]):
        values = pd.to_numeric(frame[key], errors="coerce")
        bad = values.isna() & frame[key].notna()
        if bad.any():
            raise InputFileError(path, f"column {key!r} has a non-numeric value {frame[key][bad].iloc[0]!r}")
        frame[key] = values.astype(float)
    return frame


# ------------------------------------------------------------------------------------- per vertex


def read_per_vertex(path: str | Path) -> PerVertex | None:
    """The mean per-vertex error of ``per_vertex.npz``, or None when it holds no single-topology
    mean (no ``mean_per_vertex``/``faces``/``mean_vertices``). Never unpickles.

    Raises:
        InputFileError: unreadable file, or arrays with inconsistent shapes or out-of-range faces.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("mean_per_vertex", "count", "faces", "mean_vertices") if k in data.files}
    except FileNotFoundError:
        raise InputFileError(path, "missing") from None
    except (ValueError, OSError, EOFError) as error:
        raise InputFileError(path, f"not a readable .npz without pickles ({error})") from None
    if not {"mean_per_vertex", "faces", "mean_vertices"} <= set(arrays):
        return None
    error = np.asarray(arrays["mean_per_vertex"], np.float64)
    faces = np.asarray(arrays["faces"])
    vertices = np.asarray(arrays["mean_vertices"], np.float64)
    if error.ndim != 1 or vertices.shape != (len(error), 3):
        raise InputFileError(path, f"mean_per_vertex {error.shape} and mean_vertices {vertices.shape} "
                                   "must be (V,) and (V,3)")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise InputFileError(path, f"faces must be (F,3) integers, got {faces.shape} {faces.dtype}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputFileError(path, f"faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise InputFileError(path, "mean_vertices has NaN/Inf")
    count = arrays.get("count")
    if count is not None and np.shape(count) != error.shape:
        raise InputFileError(path, f"count {np.shape(count)} does not match mean_per_vertex {error.shape}")
    return PerVertex(mean_per_vertex=error, count=None if count is None else np.asarray(count),
                     faces=faces.astype(np.int64), mean_vertices=vertices)
