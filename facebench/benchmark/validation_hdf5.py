"""Validation of an HDF5 submission: header, safe members, dtypes, shapes, then every sample.

:func:`check_hdf5` opens the file with h5py, refuses links and virtual or external storage
without following them, never reads object, variable-length, opaque, compound or reference data
(so nothing is ever unpickled), checks each field's dtype and shape, the faces and landmark
indices against the vertex count, the poses, and reads ``vertices`` a chunk of rows at a time to
check every sample (:mod:`facebench.benchmark.validation_checks`).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from facebench.benchmark.submission_format import FIELDS
from facebench.benchmark.validation_checks import (
    MAX_ATTRIBUTE_BYTES,
    MAX_ID_BYTES,
    Expectations,
    IdCollector,
    check_header,
    check_ids,
    check_pose_presence,
    check_poses,
    inspect_block,
    report_found,
)
from facebench.benchmark.validation_report import ValidationReport
from facebench.errors import InputFileError
from facebench.safe_hdf5 import check_structure

__all__ = ["check_hdf5"]


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


def _header_attribute(f: h5py.File, name: str, report: ValidationReport):
    """A header attribute, read only when its declared size is small (None when absent or refused)."""
    if name not in f.attrs:
        return None
    try:
        attr = f.attrs.get_id(name)
        declared = int(np.prod(attr.shape or (), dtype=object)) * attr.dtype.itemsize
        if declared > MAX_ATTRIBUTE_BYTES:
            report.add("error", "too-large", f"file attribute '{name}' declares {declared} bytes, more than "
                                             f"{MAX_ATTRIBUTE_BYTES}: refused unread")
            return None
        value = f.attrs[name]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        report.add("error", "unreadable", f"file attribute '{name}' is unreadable ({type(error).__name__})")
        return None
    if isinstance(value, str | bytes) and len(value) > MAX_ATTRIBUTE_BYTES:
        report.add("error", "too-large", f"file attribute '{name}' holds {len(value)} characters, more than "
                                         f"{MAX_ATTRIBUTE_BYTES}")
        return None
    return value


def _within_budget(name: str, dset: h5py.Dataset, expect: Expectations, report: ValidationReport) -> bool:
    """The declared shape (and, for ids, the string width) fits the dataset's size budget; checked
    before anything of ``dset`` is read."""
    problem = expect.budget.problem(name, dset.shape) if expect.budget is not None else None
    if problem is None and name == "ids" and dset.dtype.kind == "S" and dset.dtype.itemsize > MAX_ID_BYTES:
        problem = f"'ids' are {dset.dtype.itemsize}-byte strings, more than {MAX_ID_BYTES}: refused unread"
    if problem is None:
        return True
    report.add("error", "too-large", problem)
    return False


def _check_shape(name: str, dset: h5py.Dataset, expected: tuple, report: ValidationReport) -> bool:
    """``expected`` holds ints or None (any size) per axis."""
    shape = dset.shape
    if shape is None or len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        readable = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        report.add("error", "bad-shape", f"'{name}' has shape {shape}, expected {readable}")
        return False
    return True


def check_hdf5(path: Path, expect: Expectations, report: ValidationReport, chunk_size: int) -> list[str] | None:
    """Check an HDF5 submission; return its ids (None when unreadable)."""
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        report.add("error", "unreadable", f"{path}: not a readable HDF5 file ({error})")
        return None
    with f:
        check_header(*(_header_attribute(f, name, report) for name in ("format", "version", "method")), report,
                     "file attribute")
        objects = _safe_objects(f, report)
        if "unsafe-hdf5" not in report.codes:  # nested groups, attributes, filters: never read outside the file
            try:
                check_structure(f, path, check_types=False)
            except InputFileError as error:
                report.add("error", "unsafe-hdf5", error.message)
                return None
        names = set(f.keys())  # link names, never resolved
        for name in ("ids", "vertices"):
            if name not in names:
                report.add("error", "missing-field", f"no '{name}' dataset")
        good = {name: dset for name, dset in objects.items()
                if _check_dtype(name, dset, report) and _within_budget(name, dset, expect, report)}
        ids = None
        if "ids" in good and _check_shape("ids", good["ids"], (None,), report):
            try:
                ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in good["ids"][()]]
            except UnicodeDecodeError:
                report.add("error", "bad-dtype", "'ids' are not valid UTF-8 strings")
        n = len(ids) if ids is not None else None
        if ids is not None:
            check_ids(ids, expect, report)
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
        check_pose_presence("q" in names, "t" in names, expect, report)
        if ids is not None:
            check_poses(ids, q, t, expect, report)
        if n_vertices is not None and ids is not None:
            _scan_vertices(good["vertices"], ids, faces, expect, report, chunk_size)
    return ids


def _hdf5_faces(good, n_vertices, expect: Expectations, report: ValidationReport) -> np.ndarray | None:
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


def _hdf5_landmark_indices(good, n_vertices, expect: Expectations, report: ValidationReport) -> np.ndarray | None:
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


def _landmark_count_hint(shape, expect: Expectations, report: ValidationReport) -> None:
    if len(shape) == 3 and shape[1] != expect.n_landmarks:
        report.add("error", "landmark-count", f"'landmarks' hold {shape[1]} landmarks per sample, the dataset's "
                                              f"landmark set {expect.n_landmarks}")


def _check_landmark_values(landmarks: np.ndarray, ids, report: ValidationReport) -> None:
    infinite = np.isinf(landmarks).any(axis=(1, 2))
    if infinite.any():
        bad = [ids[i] for i in np.flatnonzero(infinite)] if ids else []
        report.add("error", "non-finite-landmarks", f"{int(infinite.sum())} sample(s) with ±Inf landmark coordinates "
                                                    "(NaN marks an undefined landmark)", bad)


def _scan_vertices(dset: h5py.Dataset, ids: list[str], faces, expect: Expectations, report: ValidationReport,
                   chunk_size: int) -> None:
    """Read ``vertices`` a chunk of rows at a time and check every sample."""
    found = IdCollector()
    for start in range(0, len(ids), chunk_size):
        block = dset[start:start + chunk_size]
        inspect_block(block, ids[start:start + chunk_size], faces, expect, found)
    report_found(found, expect, report)
