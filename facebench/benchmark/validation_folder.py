"""Validation of a folder submission: ``manifest.json``, the mesh files, then every mesh.

:func:`check_folder` reads the manifest (header, unknown keys, per-id poses and landmarks,
shared landmark indices), sorts the folder's entries (symbolic links refused, stray files
warned), then reads every ``<id>.obj|.ply`` mesh once and checks it (vertex count and faces
against the dataset's topology, landmarks, geometry: :mod:`facebench.benchmark.validation_checks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.benchmark.submission_format import MANIFEST_NAME
from facebench.benchmark.submission_source import list_folder_meshes, read_manifest
from facebench.benchmark.validation_checks import (
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
from facebench.meshio import read_mesh

__all__ = ["check_folder"]


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
        except (TypeError, ValueError, OverflowError, RecursionError):  # e.g. an integer beyond float64
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


def check_folder(folder: Path, expect: Expectations, report: ValidationReport) -> list[str]:
    """Check a folder submission; return its ids (one per mesh file)."""
    try:
        manifest = read_manifest(folder)
    except InputFileError as error:
        report.add("error", "unreadable", str(error))
        manifest = None
    if manifest is not None:
        check_header(manifest.get("format"), manifest.get("version"), manifest.get("method"), report,
                      MANIFEST_NAME)
        extra = sorted(set(manifest) - _MANIFEST_KEYS)
        if extra:
            shown = ", ".join(repr(k[:40]) for k in extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
            report.add("warning", "unknown-field", f"{MANIFEST_NAME} keys ignored: {shown}")
    manifest = manifest or {}
    listing = list_folder_meshes(folder)
    if listing.links:
        report.add("error", "unsafe-path", f"symbolic links are never followed: {', '.join(listing.links[:8])}")
    if listing.stray:
        report.add("warning", "stray-files", f"{len(listing.stray)} entr(y/ies) that are not <id>.obj|.ply "
                                             f"(ignored): {', '.join(listing.stray[:8])}")
    ids = sorted(listing.meshes)
    submitted = [i for i, paths in listing.meshes.items() for _ in paths]
    check_ids(submitted, expect, report)
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


def _folder_landmark_indices(manifest: dict, expect: Expectations, report: ValidationReport) -> np.ndarray | None:
    value = manifest.get("landmark_indices")
    if value is None:
        return None
    try:
        indices = np.asarray(value)
        if indices.ndim != 1 or not (indices.dtype.kind in "iu" or indices.size == 0):
            raise ValueError
        indices = indices.astype(np.int64)  # uint64 beyond int64 raises OverflowError... or wraps: checked
        if indices.size and np.asarray(value).dtype.kind == "u" and np.asarray(value).max() >= 2**63:
            raise ValueError
    except (TypeError, ValueError, OverflowError, RecursionError):
        report.add("error", "bad-shape", "manifest 'landmark_indices' must be a list of integers")
        return None
    if len(indices) != expect.n_landmarks:
        report.add("error", "landmark-count", f"'landmark_indices' has {len(indices)} entries, the dataset's landmark "
                                              f"set {expect.n_landmarks} (same order; −1 where undefined)")
        return None
    return indices.astype(np.int64)


def _check_folder_poses(ids, manifest, q_map, t_map, expect: Expectations, report: ValidationReport) -> None:
    has_q, has_t = "q" in manifest, "t" in manifest
    check_pose_presence(has_q, has_t, expect, report)
    if not (has_q and has_t):
        return
    lacking = [i for i in ids if i not in q_map or i not in t_map]
    if lacking:
        report.add("error", "pose-incomplete", f"{len(lacking)} mesh(es) without both q and t in the manifest "
                                               "(give a pose for every mesh or none)", lacking)
    both = [i for i in ids if i in q_map and i in t_map]
    if both:
        check_poses(both, np.stack([q_map[i] for i in both]), np.stack([t_map[i] for i in both]), expect, report)


def _check_folder_landmarks(ids, lm_map, expect: Expectations, report: ValidationReport) -> None:
    wrong = [i for i in ids if i in lm_map and len(lm_map[i]) != expect.n_landmarks]
    if wrong:
        report.add("error", "landmark-count", f"manifest 'landmarks' of {len(wrong)} id(s) do not hold the dataset's "
                                              f"{expect.n_landmarks} landmarks", wrong)
    infinite = [i for i in ids if i in lm_map and np.isinf(lm_map[i]).any()]
    if infinite:
        report.add("error", "non-finite-landmarks", f"{len(infinite)} sample(s) with ±Inf landmark coordinates "
                                                    "(NaN marks an undefined landmark)", infinite)


def _check_meshes(listing, ids, indices, lm_map, expect: Expectations, report: ValidationReport) -> None:
    """Read every mesh once and check it (one problem per code, listing the ids)."""
    found = IdCollector()
    unreadable: list[str] = []
    first_error = ""
    limit = _mesh_bytes_limit(expect)
    known = set(expect.ids)
    for sample_id in ids:
        if sample_id not in known:  # already an unknown-ids error: never read (bounds the work)
            continue
        for path in listing.meshes[sample_id]:
            try:
                size = path.stat().st_size
                if limit is not None and size > limit:  # the size budget, before reading the file
                    raise InputFileError(path, f"{size} bytes, more than the {limit} a mesh for this dataset may "
                                               "hold; refused unread")
                mesh = read_mesh(path)
            except (InputFileError, ValueError, IndexError, OSError) as error:
                unreadable.append(sample_id)
                first_error = first_error or str(error)
                continue
            _check_one_mesh(sample_id, mesh, indices, lm_map, expect, found)
    if unreadable:
        report.add("error", "unreadable", f"{len(unreadable)} mesh(es) cannot be read (first: {first_error})", unreadable)
    report_found(found, expect, report)
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


def _mesh_bytes_limit(expect: Expectations) -> int | None:
    """Largest mesh file read: the budget's vertices and triangles as generous ASCII (64 and 48 bytes)."""
    budget = expect.budget
    return None if budget is None else 64 * budget.max_vertices + 48 * budget.max_faces + 4096


def _check_one_mesh(sample_id, mesh, indices, lm_map, expect: Expectations, found: IdCollector) -> None:
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
    inspect_block(mesh.vertices[None], [sample_id], mesh.faces, expect, found)
