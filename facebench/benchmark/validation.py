"""Validation of a submission against a dataset: every problem at once, as data.

:func:`validate_submission` never stops at the first problem: it returns a
:class:`ValidationReport` listing each :class:`Problem` (severity, code, message, the ids
concerned), the completion rate and counts. A submission is scored only when the report is
``ok`` (no errors). Only a submission that cannot be opened at all (missing, not HDF5, unsafe zip)
stops early, because nothing else can be inspected.

Problem codes (E: error, W: warning):

=========================  ==  =====================================================================
``unreadable``             E   missing file, not HDF5 / zip, unreadable mesh or manifest
``unsafe-zip``             E   a zip member outside the root, a link, a zip bomb (nothing extracted)
``unsafe-hdf5``            E   external or soft links, virtual or external storage (never followed)
``unsafe-path``            E   a symbolic link in a folder submission (never followed)
``unknown-format``         E   ``format`` attribute is not ``"facebench-submission"``
``unsupported-version``    E   ``version`` is not 1
``missing-method``         W   no ``method`` name
``missing-field``          E   no ``ids`` or no ``vertices``
``bad-dtype``              E   object / variable-length / opaque / compound / reference data (never
                               read, so never unpickled); integer vertices; float faces; non-string ids
``low-precision``          W   float16 coordinates (0.06 mm steps at 100 mm)
``bad-shape``              E   an array of the wrong shape (e.g. vertices not (N,V,3))
``unknown-field``          W   an extra dataset or manifest key (ignored)
``stray-files``            W   files of a folder submission that are not ``<id>.obj|.ply`` (ignored)
``duplicate-ids``          E   an id given more than once (also ``a.obj`` next to ``a.ply``)
``unknown-ids``            E   ids that are not in the dataset (the wrong dataset?)
``missing-ids``            W   dataset ids without prediction: listed, counted into ``completion``
``no-predictions``         E   no dataset id has a prediction (completion 0: nothing to score)
``non-finite-vertices``    E   NaN or Inf coordinates
``vertex-count``           E   vertex count differs from the declared topology: the dataset's when
                               no ``faces`` are given (give ``faces`` for another topology) or when
                               the protocol compares vertices by index (topology ``dataset``)
``faces-out-of-range``     E   a face index < 0 or >= V
``faces-differ``           W   topology ``dataset``: faces given that are not the dataset's
``degenerate-faces``       W/E zero-area triangles (repeated index; with topology ``any`` also
                               area < 1e-6 mm², per sample): a warning up to 1 % of the faces of a
                               sample, an error above
``landmark-count``         E   landmark indices / coordinates not in the dataset's landmark count
``landmark-out-of-range``  E   a landmark index < −1 or >= V (−1 means "undefined")
``non-finite-landmarks``   E   ±Inf landmark coordinates (NaN means "undefined" and is accepted)
``no-landmarks``           E   topology ``any``, a topology other than the dataset's and no way to
                               get landmarks (scan protocols align on them)
``pose-incomplete``        E   ``q`` without ``t`` or the reverse (also per id in a folder)
``missing-pose``           E   ``require_pose`` and no pose
``non-finite-pose``        E   NaN or Inf in q or t
``non-unit-quaternion``    E   ``| ‖q‖ − 1 | > 1e-3``
``behind-camera``          W   ``t_z <= 0``: the head origin is not in front of the camera
``translation-scale``      W   median ‖t‖ off the ground truth's by more than ×10 (metres? µm?)
``absurd-size``            E   a sample's extent (largest bounding-box side) < 10 mm or > 1000 mm:
                               probably metres or micrometres; facebench wants millimetres
``size-mismatch``          W   extent off the ground truth's median extent by more than ×2
                               (centimetres?)
``orphan-entries``         W   manifest poses / landmarks for ids without a mesh (ignored)
=========================  ==  =====================================================================

Scan datasets (MICC, FaceWarehouse files): the expected extent is the median largest
bounding-box side of the first 5 scans; there are no poses (no ``translation-scale`` check); the
landmark count is the dataset's scan landmark set (4 or 6); HDF5 predictions must give ``faces``.

Decisions: float32 and float64 coordinates are both accepted (float64 is read as is); a few
degenerate triangles are harmless (closest-point distances ignore them) but many mean a broken
surface; triangle areas are computed only for topology ``any`` (scan protocols use the surface;
corresponding-topology protocols compare vertices by index and never use it), where they cost
about 1.5 ms per 14.5k-vertex sample; ``missing-ids`` is a warning because the completion rate reports it. A mirrored
prediction is **not** detected here: a reflection only shows at alignment time, where it is
refused (no det < 0 alignment is ever accepted), so a mirrored shape scores as what it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facebench.benchmark.submission import (
    FIELDS,
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    UnsafeArchiveError,
    dataset_vertex_count,
    list_folder_meshes,
    open_source,
    read_manifest,
)
from facebench.errors import FacebenchError, InputFileError
from facebench.meshio import read_mesh

__all__ = ["Problem", "ValidationReport", "InvalidSubmission", "validate_submission", "TOPOLOGIES",
           "MIN_EXTENT_MM", "MAX_EXTENT_MM", "QUATERNION_TOLERANCE", "DEGENERATE_AREA_MM2",
           "DEGENERATE_ERROR_FRACTION"]

TOPOLOGIES = ("dataset", "any")
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
#: Extent ratio prediction / ground truth beyond which ``size-mismatch`` is warned (and its inverse).
SIZE_RATIO_WARNING = 2.0
#: Median translation-norm ratio beyond which ``translation-scale`` is warned (and its inverse).
TRANSLATION_RATIO_WARNING = 10.0


@dataclasses.dataclass
class Problem:
    """One problem of a submission.

    Attributes:
        severity: ``"error"`` (the submission is refused) or ``"warning"`` (scored anyway).
        code: stable machine-readable code (see the module table).
        message: one human sentence.
        ids: the sample ids concerned (all of them), empty for file-level problems.
    """

    severity: str
    code: str
    message: str
    ids: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "ids": list(self.ids)}


@dataclasses.dataclass
class ValidationReport:
    """Everything wrong with a submission, as data; ``to_text``/``to_dict`` render it.

    Attributes:
        submission, dataset: the paths checked.
        kind: ``"hdf5"``, ``"folder"`` or None (unreadable); ``method``, ``format``, ``version``:
            as declared (None when absent).
        n_expected: dataset ids; n_submitted: predictions in the submission (rows or meshes);
        n_scored: distinct dataset ids with a prediction; missing_ids: the others, dataset order.
        problems: every :class:`Problem` found.
    """

    submission: str
    dataset: str
    n_expected: int = 0
    kind: str | None = None
    method: str | None = None
    format: str | None = None
    version: int | None = None
    n_submitted: int = 0
    n_scored: int = 0
    missing_ids: list[str] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def completion(self) -> float:
        """Scored / expected ids, in [0, 1]."""
        return self.n_scored / self.n_expected if self.n_expected else 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def codes(self) -> set[str]:
        """The codes of all problems."""
        return {p.code for p in self.problems}

    def problem(self, code: str) -> Problem | None:
        """The first problem with ``code``, or None."""
        return next((p for p in self.problems if p.code == code), None)

    def add(self, severity: str, code: str, message: str, ids=()) -> None:
        if severity not in ("error", "warning"):
            raise ValueError(f"severity must be 'error' or 'warning', got {severity!r}")
        self.problems.append(Problem(severity, code, message, list(dict.fromkeys(str(i) for i in ids))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (every id listed)."""
        return {
            "submission": self.submission, "dataset": self.dataset, "kind": self.kind,
            "format": self.format, "version": self.version, "method": self.method,
            "ok": self.ok, "completion": self.completion, "n_expected": self.n_expected,
            "n_submitted": self.n_submitted, "n_scored": self.n_scored,
            "n_errors": len(self.errors), "n_warnings": len(self.warnings),
            "missing_ids": list(self.missing_ids), "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self, max_ids: int = 8) -> str:
        """A human report: header, completion, verdict, one line per problem (ids shortened)."""
        described = ", ".join(x for x in (self.kind, f"method {self.method!r}" if self.method else None,
                                          f"version {self.version}" if self.version is not None else None) if x)
        lines = [
            f"submission: {self.submission}" + (f" ({described})" if described else ""),
            f"dataset:    {self.dataset} ({self.n_expected} samples)",
            f"completion: {self.completion:.3f} ({self.n_scored} of {self.n_expected} dataset ids predicted, "
            f"{self.n_submitted} predictions submitted)",
        ]
        verdict = "OK" if self.ok else "INVALID"
        lines.append(f"result:     {verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        for p in sorted(self.problems, key=lambda p: p.severity != "error"):
            line = f"{p.severity:<8}{p.code}: {p.message}"
            if p.ids:
                shown = ", ".join(p.ids[:max_ids])
                more = f", ... and {len(p.ids) - max_ids} more" if len(p.ids) > max_ids else ""
                line += f" [ids: {shown}{more}]"
            lines.append(line)
        return "\n".join(lines)


class InvalidSubmission(FacebenchError):
    """A submission whose validation found errors; ``report`` holds all of them."""

    def __init__(self, report: ValidationReport):
        self.report = report
        first = report.errors[0] if report.errors else None
        detail = f" (first: {first.code}: {first.message})" if first else ""
        super().__init__(f"{report.submission}: invalid submission, {len(report.errors)} error(s){detail}")


# ---------------------------------------------------------------------------------------- context
@dataclasses.dataclass
class _Expectations:
    """What the dataset expects of a submission."""

    ids: list[str]
    n_vertices: int
    faces: np.ndarray
    n_landmarks: int
    extent_mm: float            # median ground-truth extent (largest bounding-box side)
    t_norm_mm: float | None     # median ground-truth ‖t‖
    require_pose: bool
    topology: str


def _expectations(dataset, require_pose: bool, topology: str) -> _Expectations:
    n_vertices = dataset_vertex_count(dataset)
    t_norm = float(np.median(np.linalg.norm(dataset.read("t"), axis=-1))) if "t" in dataset.fields else None
    return _Expectations(list(dataset.ids), n_vertices, np.asarray(dataset.faces, np.int64),
                         len(dataset.landmark_indices), _ground_truth_extent(dataset), t_norm, require_pose, topology)


#: Ground-truth samples read to estimate the typical extent (mm).
EXTENT_SAMPLES = 16
#: Scans read for the extent of a scan dataset (each is a separate, larger read).
EXTENT_SCANS = 5


def _ground_truth_extent(dataset) -> float:
    """Median largest bounding-box side (mm) of the first ground-truth shapes: the first 16
    vertex rows of a synthetic file, the first 5 scans of a scan dataset (MICC, FaceWarehouse:
    ``dataset.scan(i)``); NaN when there is none."""
    if getattr(dataset, "is_scan_dataset", False):
        sides = [float(np.ptp(dataset.scan(i)[0], axis=0).max()) for i in range(min(len(dataset), EXTENT_SCANS))]
        return float(np.median(sides)) if sides else float("nan")
    sample = dataset.read("vertices", 0, min(len(dataset), EXTENT_SAMPLES)).astype(np.float64)
    return float(np.median(np.ptp(sample, axis=1).max(axis=-1))) if len(sample) else float("nan")


class _IdCollector:
    """Per-sample findings of one code, reported as one problem at the end."""

    def __init__(self):
        self.ids: dict[str, list[str]] = {}
        self.values: dict[str, list[float]] = {}

    def add(self, code: str, sample_id: str, value: float | None = None) -> None:
        self.ids.setdefault(code, []).append(sample_id)
        if value is not None:
            self.values.setdefault(code, []).append(float(value))


# ---------------------------------------------------------------------------------------- entry
def validate_submission(submission_path: str | Path, dataset, *, require_pose: bool = False,
                        topology: str = "dataset", chunk_size: int = 64) -> ValidationReport:
    """Check a submission against a dataset and report every problem.

    Args:
        submission_path: ``.h5``, folder with ``manifest.json``, or ``.zip`` of either.
        dataset: a :class:`facebench.datasets.dataset_file.FaceDataset` or its path.
        require_pose: poses (q, t) are needed (pose and reprojection metrics).
        topology: ``"dataset"`` (corresponding-topology protocols: every prediction on the
            dataset's vertices) or ``"any"`` (scan protocols: any mesh, landmarks needed).
        chunk_size: HDF5 rows read at a time (memory ~ chunk_size × V × 12 bytes).

    Returns:
        The :class:`ValidationReport`; it prints nothing.

    Raises:
        ValueError: an unknown ``topology``. InputFileError: the dataset cannot be read.
    """
    from facebench.datasets.dataset_file import FaceDataset

    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset(dataset)
    expect = _expectations(dataset, require_pose, topology)
    report = ValidationReport(str(submission_path), str(dataset.path), n_expected=len(expect.ids))
    submitted = None
    try:
        with open_source(submission_path) as source:
            report.kind = source.kind
            try:
                if source.kind == "hdf5":
                    submitted = _check_hdf5(source.root, expect, report, chunk_size)
                else:
                    submitted = _check_folder(source.root, expect, report)
            except (OSError, KeyError, ValueError) as error:  # corrupt data, missing filter plugin...
                report.add("error", "unreadable", f"{source.root}: reading failed ({type(error).__name__}: {error})")
    except UnsafeArchiveError as error:
        report.add("error", "unsafe-zip", str(error))
    except InputFileError as error:
        report.add("error", "unreadable", str(error))
    _finish_ids(report, expect, submitted)
    return report


def _finish_ids(report: ValidationReport, expect: _Expectations, submitted: list[str] | None) -> None:
    """Completion and missing ids; ``submitted`` is None when the ids could not be read."""
    present = set(submitted or ())
    report.missing_ids = [i for i in expect.ids if i not in present]
    report.n_scored = len(expect.ids) - len(report.missing_ids)
    if submitted is None:
        return
    if report.missing_ids and report.n_scored:
        report.add("warning", "missing-ids",
                   f"{len(report.missing_ids)} of {len(expect.ids)} dataset ids have no prediction: they count as "
                   f"not scored (completion {report.completion:.3f})", report.missing_ids)
    if not report.n_scored:
        report.add("error", "no-predictions", "no dataset id has a prediction (completion 0): nothing to score",
                   report.missing_ids)


def _check_ids(ids: list[str], expect: _Expectations, report: ValidationReport) -> None:
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


def _check_header(fmt, version, method, report: ValidationReport, where: str) -> None:
    fmt, version, method = _plain(fmt), _plain(version), _plain(method)
    report.format = None if fmt is None else str(fmt)
    if fmt != FORMAT:
        report.add("error", "unknown-format", f"{where} 'format' is {fmt!r}, expected {FORMAT!r}")
    report.version = version if isinstance(version, int) and not isinstance(version, bool) else None
    if report.version != VERSION:
        report.add("error", "unsupported-version", f"{where} 'version' is {version!r}; this facebench reads "
                                                   f"version {VERSION}")
    if method is None or not str(method).strip():
        report.add("warning", "missing-method", f"no 'method' name in the {where} (results will be unnamed)")
    else:
        report.method = str(method)


# ---------------------------------------------------------------------------------------- hdf5
def _dtype_class(dtype: np.dtype) -> str:
    """``"string"``, ``"object"`` (vlen/reference: never read), ``"compound"``, ``"opaque"``,
    ``"array"`` or the numpy kind letter (``f``, ``i``, ``u``, ``b``, ``S``, ``c``)."""
    if h5py.check_string_dtype(dtype) is not None:
        return "string"
    if dtype.kind == "O" or h5py.check_vlen_dtype(dtype) is not None:
        return "object"
    if dtype.fields is not None:
        return "compound"
    if dtype.subdtype is not None:
        return "array"
    if dtype.kind == "V":
        return "opaque"
    return dtype.kind


_EXPECTED_KIND = {"vertices": "f", "landmarks": "f", "q": "f", "t": "f", "faces": "iu", "landmark_indices": "iu"}
_KIND_WORDS = {"f": "floating point", "iu": "integer"}


def _safe_objects(f: h5py.File, report: ValidationReport) -> dict[str, h5py.Dataset]:
    """The root datasets that can be read without following links or other files."""
    objects: dict[str, h5py.Dataset] = {}
    for name in f.keys():
        link = f.get(name, getlink=True)
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            report.add("error", "unsafe-hdf5", f"'{name}' is a {type(link).__name__} (links are never followed)")
            continue
        obj = f[name]
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual or obj.external:
                report.add("error", "unsafe-hdf5", f"'{name}' has virtual or external storage (other files are "
                                                   "never read)")
                continue
        if name not in FIELDS:
            report.add("warning", "unknown-field", f"'{name}' is not a submission field (ignored)")
            continue
        if not isinstance(obj, h5py.Dataset):
            report.add("error", "bad-shape", f"'{name}' is a group, expected an array")
            continue
        objects[name] = obj
    return objects


def _check_dtype(name: str, dset: h5py.Dataset, report: ValidationReport) -> bool:
    kind = _dtype_class(dset.dtype)
    if name == "ids":
        if kind in ("string", "S"):
            return True
        report.add("error", "bad-dtype", f"'ids' must hold strings, got {_describe(dset.dtype, kind)}")
        return False
    expected = _EXPECTED_KIND[name]
    if kind in expected:
        if kind == "f" and dset.dtype.itemsize < 4:
            report.add("warning", "low-precision", f"'{name}' is float16 (steps of 0.06 mm at 100 mm): use float32")
        return True
    if kind in ("object", "compound", "opaque", "array", "string"):
        report.add("error", "bad-dtype", f"'{name}' holds {_describe(dset.dtype, kind)} data: refused and not read "
                                         f"(expected {_KIND_WORDS[expected]} numbers)")
    else:
        report.add("error", "bad-dtype", f"'{name}' has dtype {dset.dtype}, expected {_KIND_WORDS[expected]} numbers")
    return False


def _describe(dtype: np.dtype, kind: str) -> str:
    return {"object": "variable-length or reference (object)", "compound": "compound", "opaque": "opaque (raw bytes)",
            "array": "array-typed", "string": "string"}.get(kind, str(dtype))


def _check_shape(name: str, dset: h5py.Dataset, expected: tuple, report: ValidationReport) -> bool:
    """``expected`` holds ints or None (any size) per axis."""
    shape = dset.shape
    if shape is None or len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        readable = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        report.add("error", "bad-shape", f"'{name}' has shape {shape}, expected {readable}")
        return False
    return True


def _check_hdf5(path: Path, expect: _Expectations, report: ValidationReport, chunk_size: int) -> list[str] | None:
    """Check an HDF5 submission; return its ids (None when unreadable)."""
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        report.add("error", "unreadable", f"{path}: not a readable HDF5 file ({error})")
        return None
    with f:
        _check_header(f.attrs.get("format"), f.attrs.get("version"), f.attrs.get("method"), report, "file attribute")
        objects = _safe_objects(f, report)
        names = set(f.keys())  # link names, never resolved
        for name in ("ids", "vertices"):
            if name not in names:
                report.add("error", "missing-field", f"no '{name}' dataset")
        good = {name: dset for name, dset in objects.items() if _check_dtype(name, dset, report)}
        ids = None
        if "ids" in good and _check_shape("ids", good["ids"], (None,), report):
            try:
                ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in good["ids"][()]]
            except UnicodeDecodeError:
                report.add("error", "bad-dtype", "'ids' are not valid UTF-8 strings")
        n = len(ids) if ids is not None else None
        if ids is not None:
            _check_ids(ids, expect, report)
        n_vertices = None
        if "vertices" in good and _check_shape("vertices", good["vertices"], (n, None, 3), report):
            n_vertices = int(good["vertices"].shape[1])
            if n is None:
                n = int(good["vertices"].shape[0])
        faces = None if "faces" in names and "faces" not in good else _hdf5_faces(good, n_vertices, expect, report)
        _hdf5_landmark_indices(good, n_vertices, expect, report)
        has_landmarks = "landmarks" in good and _check_shape("landmarks", good["landmarks"],
                                                             (n, expect.n_landmarks, 3), report)
        if has_landmarks:
            _check_landmark_values(good["landmarks"][()], ids, report)
        elif "landmarks" in good:
            _landmark_count_hint(good["landmarks"].shape, expect, report)
        on_dataset_topology = (n_vertices == expect.n_vertices and faces is not None
                               and np.array_equal(faces, expect.faces))
        if (expect.topology == "any" and n_vertices is not None and not on_dataset_topology
                and "landmark_indices" not in good and "landmarks" not in good):
            report.add("error", "no-landmarks", "the predicted topology is not the dataset's and neither "
                                                "'landmark_indices' nor 'landmarks' are given: scan protocols align "
                                                "on landmarks")
        q = good["q"][()] if "q" in good and _check_shape("q", good["q"], (n, 4), report) else None
        t = good["t"][()] if "t" in good and _check_shape("t", good["t"], (n, 3), report) else None
        _check_pose_presence("q" in names, "t" in names, expect, report)
        if ids is not None:
            _check_poses(ids, q, t, expect, report)
        if n_vertices is not None and ids is not None:
            _scan_vertices(good["vertices"], ids, faces, expect, report, chunk_size)
    return ids


def _hdf5_faces(good, n_vertices, expect: _Expectations, report: ValidationReport) -> np.ndarray | None:
    """The faces to check the vertices against (given or the dataset's), after checking them."""
    if "faces" not in good:
        if n_vertices is not None and expect.n_vertices == 0:
            report.add("error", "vertex-count", f"predictions have {n_vertices} vertices but no 'faces': the "
                                                "dataset's samples are scans of their own topology, so the "
                                                "predicted triangles must be given ('faces')")
            return None
        if n_vertices is not None and n_vertices != expect.n_vertices:
            hint = (" (give 'faces' for another topology)" if expect.topology == "any"
                    else " (this protocol compares vertices by index)")
            report.add("error", "vertex-count", f"predictions have {n_vertices} vertices but no 'faces', so the "
                                                f"dataset's topology with {expect.n_vertices} vertices is assumed{hint}")
            return None
        return expect.faces
    if not _check_shape("faces", good["faces"], (None, 3), report):
        return None
    faces = np.asarray(good["faces"][()], np.int64)
    if faces.shape[0] == 0:
        report.add("error", "bad-shape", "'faces' is empty")
        return None
    if n_vertices is None:
        return None
    if expect.topology == "dataset" and n_vertices != expect.n_vertices:
        report.add("error", "vertex-count", f"predictions have {n_vertices} vertices, the dataset's topology "
                                            f"{expect.n_vertices}: this protocol compares vertices by index")
    bad = (faces < 0) | (faces >= n_vertices)
    if bad.any():
        report.add("error", "faces-out-of-range", f"{int(bad.any(axis=1).sum())} face(s) index outside "
                                                  f"0..{n_vertices - 1} (e.g. face {int(np.flatnonzero(bad.any(1))[0])}: "
                                                  f"{faces[bad.any(1)][0].tolist()}); 1-based indices?")
        return None
    if expect.topology == "dataset" and not np.array_equal(faces, expect.faces):
        report.add("warning", "faces-differ", "'faces' differ from the dataset's; corresponding-topology "
                                              "scoring compares vertices by index and ignores them")
    return faces


def _hdf5_landmark_indices(good, n_vertices, expect: _Expectations, report: ValidationReport) -> np.ndarray | None:
    if "landmark_indices" not in good or not _check_shape("landmark_indices", good["landmark_indices"], (None,), report):
        return None
    indices = np.asarray(good["landmark_indices"][()], np.int64)
    ok = True
    if len(indices) != expect.n_landmarks:
        report.add("error", "landmark-count", f"'landmark_indices' has {len(indices)} entries, the dataset's landmark "
                                              f"set {expect.n_landmarks} (same order; −1 where undefined)")
        ok = False
    if n_vertices is not None:
        bad = (indices < -1) | (indices >= n_vertices)
        if bad.any():
            report.add("error", "landmark-out-of-range", f"{int(bad.sum())} landmark index(es) outside −1..{n_vertices - 1}"
                                                         f" (e.g. {int(indices[bad][0])})")
            ok = False
    return indices if ok else None


def _landmark_count_hint(shape, expect: _Expectations, report: ValidationReport) -> None:
    if len(shape) == 3 and shape[1] != expect.n_landmarks:
        report.add("error", "landmark-count", f"'landmarks' hold {shape[1]} landmarks per sample, the dataset's "
                                              f"landmark set {expect.n_landmarks}")


def _check_landmark_values(landmarks: np.ndarray, ids, report: ValidationReport) -> None:
    infinite = np.isinf(landmarks).any(axis=(1, 2))
    if infinite.any():
        bad = [ids[i] for i in np.flatnonzero(infinite)] if ids else []
        report.add("error", "non-finite-landmarks", f"{int(infinite.sum())} sample(s) with ±Inf landmark coordinates "
                                                    "(NaN marks an undefined landmark)", bad)


def _check_pose_presence(has_q: bool, has_t: bool, expect: _Expectations, report: ValidationReport) -> None:
    if has_q != has_t:
        report.add("error", "pose-incomplete", f"'{'q' if has_q else 't'}' given without '{'t' if has_q else 'q'}'")
    elif not has_q and expect.require_pose:
        report.add("error", "missing-pose", "this protocol needs camera poses ('q' and 't')")


def _check_poses(ids: list[str], q, t, expect: _Expectations, report: ValidationReport) -> None:
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


# ---------------------------------------------------------------------------------------- per sample
def _degenerate_counts(coordinates: np.ndarray, faces: np.ndarray) -> np.ndarray:
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


def _inspect_block(block: np.ndarray, ids: list[str], faces: np.ndarray | None, expect: _Expectations,
                   found: _IdCollector) -> None:
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
        counts = _degenerate_counts(coordinates, faces)
    else:
        repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
        counts = np.full(len(good), np.count_nonzero(repeated))
    for i, c in zip(good, counts):
        if c:
            fraction = c / len(faces)
            found.add("degenerate-faces-error" if fraction > DEGENERATE_ERROR_FRACTION else "degenerate-faces",
                      ids[i], fraction)


def _report_found(found: _IdCollector, expect: _Expectations, report: ValidationReport) -> None:
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
    for code, severity in (("degenerate-faces-error", "error"), ("degenerate-faces", "warning")):
        if code in ids:
            worst = max(found.values[code])
            report.add(severity, "degenerate-faces",
                       f"{len(ids[code])} sample(s) with zero-area triangles (up to {100 * worst:.2g} % of the faces; "
                       f"{'more than' if severity == 'error' else 'at most'} {100 * DEGENERATE_ERROR_FRACTION:g} % "
                       f"is {'an error: the surface is broken' if severity == 'error' else 'tolerated'})", ids[code])


def _scan_vertices(dset: h5py.Dataset, ids: list[str], faces, expect: _Expectations, report: ValidationReport,
                   chunk_size: int) -> None:
    """Read ``vertices`` a chunk of rows at a time and check every sample."""
    found = _IdCollector()
    for start in range(0, len(ids), chunk_size):
        block = dset[start:start + chunk_size]
        _inspect_block(block, ids[start:start + chunk_size], faces, expect, found)
    _report_found(found, expect, report)


# ---------------------------------------------------------------------------------------- folder
_MANIFEST_KEYS = {"format", "version", "method", "landmark_indices", "q", "t", "landmarks"}


def _manifest_mapping(manifest: dict, key: str, report: ValidationReport) -> dict:
    value = manifest.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        report.add("error", "bad-shape", f"manifest '{key}' must map ids to values, got {type(value).__name__}")
        return {}
    return value


def _manifest_array(mapping: dict, key: str, shape: tuple, report: ValidationReport) -> dict[str, np.ndarray]:
    """Per-id arrays of a manifest mapping, checked for shape and number type."""
    arrays, bad = {}, []
    for sample_id, value in mapping.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            bad.append(sample_id)
            continue
        fits = array.ndim == len(shape) and all(w is None or a == w for a, w in zip(array.shape, shape))
        if not fits:
            bad.append(sample_id)
            continue
        arrays[sample_id] = array
    if bad:
        wanted = "(" + ", ".join("L" if s is None else str(s) for s in shape) + ")"
        report.add("error", "bad-shape", f"manifest '{key}' entries that are not {wanted} numbers", bad)
    return arrays


def _check_folder(folder: Path, expect: _Expectations, report: ValidationReport) -> list[str]:
    """Check a folder submission; return its ids (one per mesh file)."""
    try:
        manifest = read_manifest(folder)
    except InputFileError as error:
        report.add("error", "unreadable", str(error))
        manifest = None
    if manifest is not None:
        _check_header(manifest.get("format"), manifest.get("version"), manifest.get("method"), report,
                      MANIFEST_NAME)
        extra = sorted(set(manifest) - _MANIFEST_KEYS)
        if extra:
            report.add("warning", "unknown-field", f"{MANIFEST_NAME} keys ignored: {', '.join(extra)}")
    manifest = manifest or {}
    listing = list_folder_meshes(folder)
    if listing.links:
        report.add("error", "unsafe-path", f"symbolic links are never followed: {', '.join(listing.links[:8])}")
    if listing.stray:
        report.add("warning", "stray-files", f"{len(listing.stray)} entr(y/ies) that are not <id>.obj|.ply "
                                             f"(ignored): {', '.join(listing.stray[:8])}")
    ids = sorted(listing.meshes)
    submitted = [i for i, paths in listing.meshes.items() for _ in paths]
    _check_ids(submitted, expect, report)
    indices = _folder_landmark_indices(manifest, expect, report)
    q_map = _manifest_array(_manifest_mapping(manifest, "q", report), "q", (4,), report)
    t_map = _manifest_array(_manifest_mapping(manifest, "t", report), "t", (3,), report)
    lm_map = _manifest_array(_manifest_mapping(manifest, "landmarks", report), "landmarks", (None, 3), report)
    _check_folder_poses(ids, manifest, q_map, t_map, expect, report)
    _check_folder_landmarks(ids, lm_map, expect, report)
    orphans = sorted((set(q_map) | set(t_map) | set(lm_map)) - set(ids))
    if orphans:
        report.add("warning", "orphan-entries", f"{len(orphans)} manifest entr(y/ies) for ids without a mesh "
                                                "(ignored)", orphans)
    _check_meshes(listing, ids, indices, lm_map, expect, report)
    return submitted


def _folder_landmark_indices(manifest: dict, expect: _Expectations, report: ValidationReport) -> np.ndarray | None:
    value = manifest.get("landmark_indices")
    if value is None:
        return None
    try:
        indices = np.asarray(value)
        if indices.ndim != 1 or not (indices.dtype.kind in "iu" or indices.size == 0):
            raise ValueError
    except (TypeError, ValueError):
        report.add("error", "bad-shape", "manifest 'landmark_indices' must be a list of integers")
        return None
    if len(indices) != expect.n_landmarks:
        report.add("error", "landmark-count", f"'landmark_indices' has {len(indices)} entries, the dataset's landmark "
                                              f"set {expect.n_landmarks} (same order; −1 where undefined)")
        return None
    return indices.astype(np.int64)


def _check_folder_poses(ids, manifest, q_map, t_map, expect: _Expectations, report: ValidationReport) -> None:
    has_q, has_t = "q" in manifest, "t" in manifest
    _check_pose_presence(has_q, has_t, expect, report)
    if not (has_q and has_t):
        return
    lacking = [i for i in ids if i not in q_map or i not in t_map]
    if lacking:
        report.add("error", "pose-incomplete", f"{len(lacking)} mesh(es) without both q and t in the manifest "
                                               "(give a pose for every mesh or none)", lacking)
    both = [i for i in ids if i in q_map and i in t_map]
    if both:
        _check_poses(both, np.stack([q_map[i] for i in both]), np.stack([t_map[i] for i in both]), expect, report)


def _check_folder_landmarks(ids, lm_map, expect: _Expectations, report: ValidationReport) -> None:
    wrong = [i for i in ids if i in lm_map and len(lm_map[i]) != expect.n_landmarks]
    if wrong:
        report.add("error", "landmark-count", f"manifest 'landmarks' of {len(wrong)} id(s) do not hold the dataset's "
                                              f"{expect.n_landmarks} landmarks", wrong)
    infinite = [i for i in ids if i in lm_map and np.isinf(lm_map[i]).any()]
    if infinite:
        report.add("error", "non-finite-landmarks", f"{len(infinite)} sample(s) with ±Inf landmark coordinates "
                                                    "(NaN marks an undefined landmark)", infinite)


def _check_meshes(listing, ids, indices, lm_map, expect: _Expectations, report: ValidationReport) -> None:
    """Read every mesh once and check it (one problem per code, listing the ids)."""
    found = _IdCollector()
    unreadable: list[str] = []
    first_error = ""
    for sample_id in ids:
        for path in listing.meshes[sample_id]:
            try:
                mesh = read_mesh(path)
            except (InputFileError, ValueError, IndexError, OSError) as error:
                unreadable.append(sample_id)
                first_error = first_error or str(error)
                continue
            _check_one_mesh(sample_id, mesh, indices, lm_map, expect, found)
    if unreadable:
        report.add("error", "unreadable", f"{len(unreadable)} mesh(es) cannot be read (first: {first_error})", unreadable)
    _report_found(found, expect, report)
    for code, severity, message in (
        ("vertex-count", "error", f"mesh(es) whose vertex count is not the dataset's {expect.n_vertices} (this "
                                  "protocol compares vertices by index)"),
        ("faces-differ", "warning", "mesh(es) whose faces differ from the dataset's (corresponding-topology scoring "
                                    "ignores them)"),
        ("landmark-out-of-range", "error", "mesh(es) with fewer vertices than a manifest 'landmark_indices' entry needs"),
        ("no-landmarks", "error", "mesh(es) not on the dataset's topology without landmarks (scan protocols align on "
                                  "landmarks: give 'landmark_indices' or 'landmarks')"),
    ):
        if code in found.ids:
            report.add(severity, code, f"{len(found.ids[code])} {message}", found.ids[code])


def _check_one_mesh(sample_id, mesh, indices, lm_map, expect: _Expectations, found: _IdCollector) -> None:
    n_vertices = mesh.n_vertices
    same = n_vertices == expect.n_vertices
    if expect.topology == "dataset":
        if not same:
            found.add("vertex-count", sample_id)
        elif not np.array_equal(mesh.faces, expect.faces):
            found.add("faces-differ", sample_id)
    if indices is not None and ((indices < -1) | (indices >= n_vertices)).any():
        found.add("landmark-out-of-range", sample_id)
    on_dataset_topology = same and np.array_equal(mesh.faces, expect.faces)
    if expect.topology == "any" and indices is None and sample_id not in lm_map and not on_dataset_topology:
        found.add("no-landmarks", sample_id)
    _inspect_block(mesh.vertices[None], [sample_id], mesh.faces, expect, found)
