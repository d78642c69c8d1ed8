"""The checks a submission of either layout goes through, shared by the HDF5 and folder checks.

:class:`Expectations` holds what the dataset expects (ids, vertex count, faces, landmark count,
typical extent and translation); the checks record their findings into a
:class:`facebench.benchmark.validation_report.ValidationReport`: ids (duplicate, unknown), header
(format, version, method), poses (presence, finite, unit quaternions, in front of the camera,
translation scale) and per-sample geometry (finite, plausible extent in mm, degenerate triangles),
the last gathered per code by an :class:`IdCollector` and reported once, listing the ids. The
thresholds are the constants below.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from facebench.benchmark.method_name import MAX_LENGTH, check_method_name, method_name_problem
from facebench.benchmark.submission_format import FORMAT, VERSION, dataset_vertex_count
from facebench.benchmark.validation_report import ValidationReport

__all__ = ["MIN_EXTENT_MM", "MAX_EXTENT_MM", "QUATERNION_TOLERANCE", "DEGENERATE_AREA_MM2",
           "DEGENERATE_ERROR_FRACTION", "LONG_EDGE_FRACTION", "SIZE_RATIO_WARNING", "TRANSLATION_RATIO_WARNING", "EXTENT_SAMPLES",
           "EXTENT_SCANS", "SIZE_FACTOR", "MIN_VERTEX_BUDGET", "EXTRA_ROWS", "MAX_ID_BYTES", "MAX_ATTRIBUTE_BYTES",
           "SizeBudget", "size_budget", "Expectations", "expectations", "ground_truth_extent", "IdCollector", "check_ids",
           "check_header", "check_pose_presence", "check_poses", "degenerate_counts", "median_edge_lengths", "inspect_block",
           "report_found"]

#: Extent (largest bounding-box side, mm) below which a face is taken for metres.
MIN_EXTENT_MM = 10.0
#: Extent (mm) above which a face is taken for micrometres.
MAX_EXTENT_MM = 1000.0
#: Largest accepted ``| ‖q‖ − 1 |``.
QUATERNION_TOLERANCE = 1e-3
#: Triangles with a smaller area (mm²) count as degenerate.
DEGENERATE_AREA_MM2 = 1e-6
#: Fraction of degenerate triangles in a sample above which they are an error (else a warning).
DEGENERATE_ERROR_FRACTION = 0.01
#: Median triangle edge / extent above which a mesh is not a surface (``not-a-surface``): a face
#: mesh's edges are a few per cent of its extent even at 100 vertices; random faces give ~0.4.
LONG_EDGE_FRACTION = 0.25
#: Extent ratio prediction / ground truth beyond which ``size-mismatch`` is warned (and its inverse).
SIZE_RATIO_WARNING = 2.0
#: Median translation-norm ratio beyond which ``translation-scale`` is warned (and its inverse).
TRANSLATION_RATIO_WARNING = 10.0


@dataclasses.dataclass
class Expectations:
    """What the dataset expects of a submission."""

    ids: list[str]
    n_vertices: int
    faces: np.ndarray
    n_landmarks: int
    extent_mm: float            # median ground-truth extent (largest bounding-box side)
    t_norm_mm: float | None     # median ground-truth ‖t‖
    require_pose: bool
    topology: str
    budget: SizeBudget | None = None  # the most a submission may declare (None: no bound)


#: A prediction may have this many times the vertices / triangles of the largest ground-truth mesh.
SIZE_FACTOR = 4
#: ... or at least this many vertices (a floor, so small test datasets accept usual face models);
#: triangles: twice as many.
MIN_VERTEX_BUDGET = 100_000
#: Submission rows (ids, vertices, poses) accepted beyond the dataset's sample count.
EXTRA_ROWS = 64
#: Longest fixed-length id string (bytes) and header attribute (bytes) read.
MAX_ID_BYTES = 1024
MAX_ATTRIBUTE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class SizeBudget:
    """The largest sizes a submission may declare, derived from its dataset, checked on the declared
    shapes and types **before** any array is read, so no submission makes facebench allocate more
    than a small multiple of the ground truth (:data:`SIZE_FACTOR`, :data:`MIN_VERTEX_BUDGET`)."""

    max_rows: int       # ids, vertices, q, t, landmarks rows: 2 × samples + EXTRA_ROWS
    max_vertices: int   # per prediction
    max_faces: int      # triangles of the predicted topology
    max_landmarks: int  # landmark_indices entries / landmarks per sample

    def problem(self, name: str, shape) -> str | None:
        """Why a declared ``shape`` of field ``name`` is beyond the budget (None when within)."""
        if shape is None:
            return None
        limits = {"ids": (self.max_rows,), "vertices": (self.max_rows, self.max_vertices, None),
                  "faces": (self.max_faces, None), "landmark_indices": (self.max_landmarks,),
                  "landmarks": (self.max_rows, self.max_landmarks, None), "q": (self.max_rows, None),
                  "t": (self.max_rows, None)}.get(name)
        if limits is None:
            return None
        if len(shape) > 3 or any(int(s) > 16 for s in shape[len(limits):]):
            return f"'{name}' declares shape {tuple(int(s) for s in shape)}: refused unread"
        for axis, (size, limit) in enumerate(zip(shape, limits)):
            if limit is not None and int(size) > limit:
                what = {0: "rows", 1: "entries per row"}.get(axis, "entries")
                if name in ("faces",):
                    what = "triangles"
                elif name == "vertices" and axis == 1:
                    what = "vertices per prediction"
                return (f"'{name}' declares {int(size)} {what}, more than the {limit} this dataset allows "
                        f"(shape {tuple(int(s) for s in shape)}): refused unread")
        return None


def size_budget(dataset, n_vertices: int, faces: np.ndarray, n_landmarks: int) -> SizeBudget:
    """The :class:`SizeBudget` of ``dataset``: from its sample count and its largest ground-truth
    mesh (the shared topology, or every scan's declared shape, metadata only)."""
    max_v, max_f = int(n_vertices), int(len(faces))
    if getattr(dataset, "is_scan_dataset", False):
        try:
            scans = dataset._h5()["scans"]
            for name in scans:
                group = scans[name]
                max_v = max(max_v, int(group["vertices"].shape[0]))
                max_f = max(max_f, int(group["faces"].shape[0]))
        except (KeyError, OSError, TypeError, AttributeError):  # unreadable scans fail later, per sample
            pass
    vertices = max(SIZE_FACTOR * max_v, MIN_VERTEX_BUDGET)
    return SizeBudget(max_rows=2 * len(dataset.ids) + EXTRA_ROWS, max_vertices=vertices,
                      max_faces=max(SIZE_FACTOR * max_f, 2 * vertices), max_landmarks=max(4 * n_landmarks, 256))


def expectations(dataset, require_pose: bool, topology: str) -> Expectations:
    """What ``dataset`` (a :class:`facebench.datasets.dataset_file.FaceDataset`) expects of a submission."""
    n_vertices = dataset_vertex_count(dataset)
    t_norm = float(np.median(np.linalg.norm(dataset.read("t"), axis=-1))) if "t" in dataset.fields else None
    faces = np.asarray(dataset.faces, np.int64)
    n_landmarks = len(dataset.landmark_indices)
    return Expectations(list(dataset.ids), n_vertices, faces, n_landmarks, ground_truth_extent(dataset), t_norm,
                        require_pose, topology, size_budget(dataset, n_vertices, faces, n_landmarks))


#: Ground-truth samples read to estimate the typical extent (mm).
EXTENT_SAMPLES = 16
#: Scans read for the extent of a scan dataset (each is a separate, larger read).
EXTENT_SCANS = 5


def ground_truth_extent(dataset) -> float:
    """Median largest bounding-box side (mm) of the first ground-truth shapes: the first 16
    vertex rows of a synthetic file, the first 5 scans of a scan dataset (MICC, FaceWarehouse:
    ``dataset.scan(i)``); NaN when there is none."""
    if getattr(dataset, "is_scan_dataset", False):
        sides = [float(np.ptp(dataset.scan(i)[0], axis=0).max()) for i in range(min(len(dataset), EXTENT_SCANS))]
        return float(np.median(sides)) if sides else float("nan")
    sample = dataset.read("vertices", 0, min(len(dataset), EXTENT_SAMPLES)).astype(np.float64)
    return float(np.median(np.ptp(sample, axis=1).max(axis=-1))) if len(sample) else float("nan")


class IdCollector:
    """Per-sample findings of one code, reported as one problem at the end."""

    def __init__(self):
        self.ids: dict[str, list[str]] = {}
        self.values: dict[str, list[float]] = {}

    def add(self, code: str, sample_id: str, value: float | None = None) -> None:
        self.ids.setdefault(code, []).append(sample_id)
        if value is not None:
            self.values.setdefault(code, []).append(float(value))


def check_ids(ids: list[str], expect: Expectations, report: ValidationReport) -> None:
    report.n_submitted = len(ids)
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        report.add("error", "duplicate-ids", f"{len(duplicates)} id(s) given more than once", duplicates)
    known = set(expect.ids)
    unknown = sorted({i for i in ids if i not in known})
    if unknown:
        report.add("error", "unknown-ids", f"{len(unknown)} id(s) are not in the dataset (predictions for "
                                           "another dataset?)", unknown)


def _plain(value):
    """An attribute or JSON value as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (values from strangers can be megabytes long)."""
    text = repr(value) if not isinstance(value, str | bytes) or len(value) <= 4 * limit else repr(value[:limit])
    return text if len(text) <= limit else text[:limit] + f"… ({len(value) if hasattr(value, '__len__') else '?'} long)"


def check_header(fmt, version, method, report: ValidationReport, where: str) -> None:
    raw_method = method
    fmt, version, method = _plain(fmt), _plain(version), _plain(method)
    report.format = None if fmt is None else str(fmt)
    if fmt != FORMAT:
        report.add("error", "unknown-format", f"{where} 'format' is {_short(fmt)}, expected {FORMAT!r}")
    report.version = version if isinstance(version, int) and not isinstance(version, bool) else None
    if report.version != VERSION:
        report.add("error", "unsupported-version", f"{where} 'version' is {_short(version)}; this facebench reads "
                                                   f"version {VERSION}")
    if isinstance(raw_method, bytes | np.bytes_):
        method = bytes(raw_method)  # judged as bytes: non-UTF-8 is refused, never replaced
    if method is None or (isinstance(method, str | bytes) and not method.strip()):
        report.add("warning", "missing-method", f"no 'method' name in the {where} (results will be unnamed)")
        return
    problem = method_name_problem(method)
    if problem is not None:  # the rule score, leaderboard and the service apply: refused here too
        report.add("error", "bad-method-name", f"{where} 'method' {problem} (a method name is 1–{MAX_LENGTH} "
                                               "printable characters, trimmed)")
    else:
        report.method = check_method_name(method)


def check_pose_presence(has_q: bool, has_t: bool, expect: Expectations, report: ValidationReport) -> None:
    if has_q != has_t:
        report.add("error", "pose-incomplete", f"'{'q' if has_q else 't'}' given without '{'t' if has_q else 'q'}'")
    elif not has_q and expect.require_pose:
        report.add("error", "missing-pose", "this protocol needs camera poses ('q' and 't')")


def check_poses(ids: list[str], q, t, expect: Expectations, report: ValidationReport) -> None:
    """Per-sample checks of q (N,4) and t (N,3) (either may be None)."""
    bad_values: list[str] = []
    if q is not None:
        q = np.asarray(q, np.float64)
        finite = np.isfinite(q).all(axis=1)
        bad_values += [ids[i] for i in np.flatnonzero(~finite)]
        deviation = np.abs(np.linalg.norm(np.where(finite[:, None], q, 1.0), axis=1) - 1.0)
        non_unit = finite & (deviation > QUATERNION_TOLERANCE)
        if non_unit.any():
            report.add("error", "non-unit-quaternion",
                       f"{int(non_unit.sum())} quaternion(s) with |‖q‖ − 1| > {QUATERNION_TOLERANCE:g} (largest "
                       f"{deviation[non_unit].max():.3g}); q must be unit (w, x, y, z)",
                       [ids[i] for i in np.flatnonzero(non_unit)])
    if t is not None:
        t = np.asarray(t, np.float64)
        finite = np.isfinite(t).all(axis=1)
        bad_values += [ids[i] for i in np.flatnonzero(~finite)]
        behind = finite & (t[:, 2] <= 0)
        if behind.any():
            report.add("warning", "behind-camera", f"{int(behind.sum())} translation(s) with t_z <= 0: the head "
                                                   "origin is not in front of the camera", [ids[i] for i in np.flatnonzero(behind)])
        if expect.t_norm_mm and finite.any():
            ratio = float(np.median(np.linalg.norm(t[finite], axis=1))) / expect.t_norm_mm
            if not 1 / TRANSLATION_RATIO_WARNING <= ratio <= TRANSLATION_RATIO_WARNING:
                report.add("warning", "translation-scale",
                           f"median ‖t‖ is {ratio:.3g}× the ground truth's ({expect.t_norm_mm:.0f} mm): metres or "
                           "micrometres? t is in millimetres")
    if bad_values:
        unique = list(dict.fromkeys(bad_values))
        report.add("error", "non-finite-pose", f"{len(unique)} sample(s) with NaN or Inf in q or t", unique)


def degenerate_counts(coordinates: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Zero-area (< DEGENERATE_AREA_MM2) triangles per sample: ``coordinates (3,B,V)`` (x, y, z
    planes, the layout that makes the gathers contiguous), ``faces (F,3)``; returns ``(B,)``."""
    p0 = coordinates[:, :, faces[:, 0]]
    e1 = coordinates[:, :, faces[:, 1]] - p0
    e2 = coordinates[:, :, faces[:, 2]] - p0
    cx = e1[1] * e2[2] - e1[2] * e2[1]
    cy = e1[2] * e2[0] - e1[0] * e2[2]
    cz = e1[0] * e2[1] - e1[1] * e2[0]
    limit = (2.0 * DEGENERATE_AREA_MM2) ** 2  # |e1 × e2| is twice the area
    return np.count_nonzero(cx * cx + cy * cy + cz * cz < limit, axis=1)


def median_edge_lengths(coordinates: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Median length (mm) of each triangle's first edge per sample: ``coordinates (3,B,V)``,
    ``faces (F,3)``; returns ``(B,)`` float64."""
    e = coordinates[:, :, faces[:, 1]] - coordinates[:, :, faces[:, 0]]
    return np.median(np.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]), axis=1).astype(np.float64)


def inspect_block(block: np.ndarray, ids: list[str], faces: np.ndarray | None, expect: Expectations,
                   found: IdCollector) -> None:
    """Checks of ``block (B,V,3)`` coordinates (mm) of samples ``ids``, recorded into ``found``.

    Degenerate triangles: under topology ``any`` (scan protocols measure distances to the
    surface) every triangle's area is computed per sample; under ``dataset`` (vertices compared
    by index, the surface is never used) only triangles with a repeated vertex index are counted.
    """
    # a sum is non-finite iff an element is (float64 accumulation cannot overflow float32 data)
    finite = np.isfinite(block.reshape(len(block), -1).sum(axis=1, dtype=np.float64))
    for i in np.flatnonzero(~finite):
        found.add("non-finite-vertices", ids[i])
    if not finite.any():
        return
    good = np.flatnonzero(finite)
    coordinates = np.ascontiguousarray(block[good].transpose(2, 0, 1), dtype=np.float32)  # (3,B,V)
    extent = (coordinates.max(axis=2) - coordinates.min(axis=2)).max(axis=0).astype(np.float64)
    for i, e in zip(good, extent):
        if e < MIN_EXTENT_MM or e > MAX_EXTENT_MM:
            found.add("absurd-size", ids[i], e)
        elif np.isfinite(expect.extent_mm) and not (1 / SIZE_RATIO_WARNING <= e / expect.extent_mm <= SIZE_RATIO_WARNING):
            found.add("size-mismatch", ids[i], e)
    if faces is None or not len(faces):
        return
    if expect.topology == "any":
        counts = degenerate_counts(coordinates, faces)
        edges = median_edge_lengths(coordinates, faces)
        for i, e, x in zip(good, edges, extent):
            if e > LONG_EDGE_FRACTION * x:
                found.add("not-a-surface", ids[i], e / x)
    else:
        repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
        counts = np.full(len(good), np.count_nonzero(repeated))
    for i, c in zip(good, counts):
        if c:
            fraction = c / len(faces)
            found.add("degenerate-faces-error" if fraction > DEGENERATE_ERROR_FRACTION else "degenerate-faces",
                      ids[i], fraction)


def report_found(found: IdCollector, expect: Expectations, report: ValidationReport) -> None:
    ids = found.ids
    if "non-finite-vertices" in ids:
        report.add("error", "non-finite-vertices", f"{len(ids['non-finite-vertices'])} sample(s) with NaN or Inf "
                                                   "vertex coordinates", ids["non-finite-vertices"])
    if "absurd-size" in ids:
        values = np.asarray(found.values["absurd-size"])
        small = int((values < MIN_EXTENT_MM).sum())
        hint = []
        if small:
            hint.append(f"{small} smaller than {MIN_EXTENT_MM:g} mm (metres?)")
        if len(values) - small:
            hint.append(f"{len(values) - small} larger than {MAX_EXTENT_MM:g} mm (micrometres?)")
        report.add("error", "absurd-size", f"{len(values)} sample(s) with an implausible face extent "
                                           f"({', '.join(hint)}; extents {values.min():.3g}..{values.max():.3g} mm): "
                                           "coordinates must be in millimetres", ids["absurd-size"])
    if "size-mismatch" in ids:
        values = np.asarray(found.values["size-mismatch"])
        report.add("warning", "size-mismatch", f"{len(values)} sample(s) with an extent off the ground truth's "
                                               f"median {expect.extent_mm:.0f} mm by more than ×{SIZE_RATIO_WARNING:g} "
                                               f"(median {np.median(values):.3g} mm): centimetres?", ids["size-mismatch"])
    if "not-a-surface" in ids:
        values = np.asarray(found.values["not-a-surface"])
        report.add("error", "not-a-surface", f"{len(values)} sample(s) whose triangles join distant vertices (median "
                                             f"edge up to {values.max():.2g} of the face's extent, more than "
                                             f"{LONG_EDGE_FRACTION:g}): the faces do not form a surface",
                   ids["not-a-surface"])
    for code, severity in (("degenerate-faces-error", "error"), ("degenerate-faces", "warning")):
        if code in ids:
            worst = max(found.values[code])
            report.add(severity, "degenerate-faces",
                       f"{len(ids[code])} sample(s) with zero-area triangles (up to {100 * worst:.2g} % of the faces; "
                       f"{'more than' if severity == 'error' else 'at most'} {100 * DEGENERATE_ERROR_FRACTION:g} % "
                       f"is {'an error: the surface is broken' if severity == 'error' else 'tolerated'})", ids[code])
