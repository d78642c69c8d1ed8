"""Reading a submission: validated, then opened lazily and read sample by sample in dataset order.

A submission (:mod:`facebench.benchmark.submission_format`: an HDF5 file, a folder of meshes
with ``manifest.json``, or a zip of either) holds, for the ids of one dataset, predicted meshes in
the **head frame, mm**, and optionally camera poses (q, t) mapping head → camera
(``x_cam = R(q) x + t``, t in mm).

Validation (:func:`facebench.benchmark.validation.validate_submission`) comes first:
:func:`load_submission` validates and returns a :class:`Submission` that reads samples lazily, in
dataset order, a chunk at a time, each sample's landmarks taken in the order of precedence of
:mod:`facebench.benchmark.submission_format`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from facebench.benchmark.submission_format import dataset_vertex_count
from facebench.benchmark.submission_source import list_folder_meshes, open_source, read_manifest, submission_sha256
from facebench.benchmark.validation import validate_submission
from facebench.benchmark.validation_report import InvalidSubmission
from facebench.errors import InputFileError
from facebench.meshio import read_mesh
from facebench.safe_hdf5 import open_hdf5

if TYPE_CHECKING:
    from facebench.benchmark.validation_report import ValidationReport
    from facebench.datasets.dataset_file import FaceDataset

__all__ = ["SubmissionSample", "Submission", "load_submission"]


class SubmissionSample(NamedTuple):
    """One dataset id and its prediction; every field but ``id`` is None when it is missing.

    Attributes:
        id: the dataset id.
        vertices: ``(V,3)`` float64, head frame, mm.
        faces: ``(F,3)`` int64 triangles of the prediction (the dataset's when not given).
        landmarks: ``(L,3)`` float64 mm in the dataset's landmark order (NaN where undefined),
            or None when the submission gives no way to get them.
        q: ``(4,)`` float64 unit quaternion (w, x, y, z), head → camera, or None.
        t: ``(3,)`` float64 mm, or None.
    """

    id: str
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    q: np.ndarray | None = None
    t: np.ndarray | None = None


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _landmarks_from_indices(vertices: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``(L,3)`` vertices at ``indices``; NaN rows where the index is −1."""
    out = np.full((len(indices), 3), np.nan)
    defined = indices >= 0
    out[defined] = vertices[indices[defined]]
    return out


def _unit(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


class Submission:
    """A validated submission opened for reading, lazily, in the dataset's order.

    Iterate ``submission.samples(chunk_size)`` (or the object itself) to get one
    :class:`SubmissionSample` per dataset id, missing ids included (their fields are None).
    HDF5 vertices are read a chunk of rows at a time (never the whole ``(N,V,3)`` array); folder
    meshes one file at a time. Close it (or use ``with``) to release the file and, for a zip, the
    temporary folder.

    Attributes:
        path: the submission path given; ``kind``: ``"hdf5"`` or ``"folder"``; ``method``;
        ``version``; ``dataset_ids`` (expected, dataset order); ``submitted_ids`` (file order);
        ``missing_ids``; ``completion`` (scored / expected); ``has_pose``; ``faces`` (shared
        ``(F,3)`` topology, None for a folder); ``landmark_indices`` (or None); ``sha256``;
        ``report`` (the :class:`ValidationReport`, when validated).
    """

    def __init__(self, path: str | Path, dataset: FaceDataset, *, report: ValidationReport | None = None):
        self.path = Path(path)
        self.report = report
        self.dataset_ids = list(dataset.ids)
        self._dataset_faces = np.asarray(dataset.faces, np.int64)
        self._dataset_landmarks = np.asarray(dataset.landmark_indices, np.int64)
        self._dataset_n_vertices = dataset_vertex_count(dataset)
        self._stack = contextlib.ExitStack()
        self._finalizer = weakref.finalize(self, self._stack.close)
        try:
            source = self._stack.enter_context(open_source(self.path))
            self.kind = source.kind
            if self.kind == "hdf5":
                self._open_hdf5(source.root)
            else:
                self._open_folder(source.root)
            self.sha256 = submission_sha256(self.path)
        except BaseException:
            self.close()
            raise
        present = set(self._row_of)
        self.missing_ids = [i for i in self.dataset_ids if i not in present]
        self.n_scored = len(self.dataset_ids) - len(self.missing_ids)
        self.completion = self.n_scored / len(self.dataset_ids) if self.dataset_ids else 0.0

    # ---------------------------------------------------------------- opening
    def _open_hdf5(self, path: Path) -> None:
        try:
            f = self._stack.enter_context(open_hdf5(path))
            self._h5 = f
            self.method = _decode(f.attrs.get("method", ""))
            self.version = int(f.attrs["version"])
            self.submitted_ids = [_decode(v) for v in f["ids"][()]]
            self.n_vertices = int(f["vertices"].shape[1])
            self.faces = np.asarray(f["faces"][()], np.int64) if "faces" in f else self._dataset_faces
            given = None if "landmark_indices" not in f else np.asarray(f["landmark_indices"][()], np.int64)
            self.has_pose = "q" in f and "t" in f
            self._q = _unit(np.asarray(f["q"][()], np.float64)) if self.has_pose else None
            self._t = np.asarray(f["t"][()], np.float64) if self.has_pose else None
            self._landmarks = np.asarray(f["landmarks"][()], np.float64) if "landmarks" in f else None
        except (OSError, KeyError, ValueError) as error:
            raise InputFileError(path, f"unreadable submission ({error}); run `facebench submission validate`") from None
        same_topology = ("faces" not in f or np.array_equal(self.faces, self._dataset_faces))
        if given is None and same_topology and self.n_vertices == self._dataset_vertex_count():
            given = self._dataset_landmarks
        self.landmark_indices = given
        self._row_of = {i: row for row, i in enumerate(self.submitted_ids)}

    def _open_folder(self, folder: Path) -> None:
        manifest = read_manifest(folder)
        self.method = str(manifest.get("method", ""))
        self.version = int(manifest.get("version", -1))
        listing = list_folder_meshes(folder)
        self._paths = {i: paths[0] for i, paths in listing.meshes.items()}
        self.submitted_ids = list(self._paths)
        self.faces = None
        self.n_vertices = None
        indices = manifest.get("landmark_indices")
        self.landmark_indices = None if indices is None else np.asarray(indices, np.int64)
        self._manifest_q = manifest.get("q") or {}
        self._manifest_t = manifest.get("t") or {}
        self._manifest_landmarks = manifest.get("landmarks") or {}
        self.has_pose = bool(self._manifest_q) and bool(self._manifest_t)
        self._row_of = dict.fromkeys(self._paths, 0)

    def _dataset_vertex_count(self) -> int:
        return self._dataset_n_vertices

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.dataset_ids)

    def __iter__(self) -> Iterator[SubmissionSample]:
        return self.samples()

    def samples(self, chunk_size: int = 64) -> Iterator[SubmissionSample]:
        """One :class:`SubmissionSample` per dataset id, in dataset order (missing ids included),
        reading at most ``chunk_size`` HDF5 rows at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        for start in range(0, len(self.dataset_ids), chunk_size):
            ids = self.dataset_ids[start:start + chunk_size]
            if self.kind == "hdf5":
                yield from self._hdf5_chunk(ids)
            else:
                yield from (self.get(i) for i in ids)

    def get(self, sample_id: str) -> SubmissionSample:
        """The prediction for one id (fields None when the submission has none)."""
        if sample_id not in self._row_of:
            return SubmissionSample(sample_id)
        if self.kind == "hdf5":
            return next(iter(self._hdf5_chunk([sample_id])))
        mesh = read_mesh(self._paths[sample_id])
        vertices, faces = mesh.vertices, mesh.faces
        q = t = None
        if self.has_pose:
            q = _unit(np.asarray(self._manifest_q[sample_id], np.float64))
            t = np.asarray(self._manifest_t[sample_id], np.float64)
        if sample_id in self._manifest_landmarks:
            landmarks = np.asarray(self._manifest_landmarks[sample_id], np.float64)
        elif self.landmark_indices is not None:
            landmarks = _landmarks_from_indices(vertices, self.landmark_indices)
        elif len(vertices) == self._dataset_vertex_count() and np.array_equal(faces, self._dataset_faces):
            landmarks = _landmarks_from_indices(vertices, self._dataset_landmarks)
        else:
            landmarks = None
        return SubmissionSample(sample_id, vertices, faces, landmarks, q, t)

    def _read_rows(self, rows: list[int]) -> dict[int, np.ndarray]:
        """Vertices of the given submission rows: one slice when they are close together, else
        row by row (h5py reads a slice far faster than scattered rows)."""
        if not rows:
            return {}
        ordered = sorted(set(rows))
        first, last = ordered[0], ordered[-1]
        dataset = self._h5["vertices"]
        if last - first + 1 <= 2 * len(ordered) + 8:
            block = dataset[first:last + 1]
            return {r: block[r - first] for r in ordered}
        return {r: dataset[r] for r in ordered}

    def _hdf5_chunk(self, ids: list[str]) -> Iterator[SubmissionSample]:
        rows = {i: self._row_of[i] for i in ids if i in self._row_of}
        block = self._read_rows(list(rows.values()))
        for sample_id in ids:
            if sample_id not in rows:
                yield SubmissionSample(sample_id)
                continue
            row = rows[sample_id]
            vertices = np.asarray(block[row], np.float64)
            if self._landmarks is not None:
                landmarks = self._landmarks[row]
            elif self.landmark_indices is not None:
                landmarks = _landmarks_from_indices(vertices, self.landmark_indices)
            else:
                landmarks = None
            q = None if self._q is None else self._q[row]
            t = None if self._t is None else self._t[row]
            yield SubmissionSample(sample_id, vertices, self.faces, landmarks, q, t)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the HDF5 file and remove a zip's temporary folder (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Submission:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def load_submission(path: str | Path, dataset: FaceDataset | str | Path, *, validate: bool = True,
                    require_pose: bool = False, topology: str = "dataset") -> Submission:
    """Validate a submission against ``dataset`` and open it for reading.

    Args:
        path: ``.h5`` file, folder with ``manifest.json``, or ``.zip`` of either.
        dataset: the :class:`FaceDataset` (or its path) the predictions are for.
        validate: run :func:`facebench.benchmark.validation.validate_submission` first and refuse
            an invalid submission (skip only for a submission validated just before).
        require_pose, topology: passed to the validation.

    Returns:
        A :class:`Submission` (close it, or use it as a context manager).

    Raises:
        InvalidSubmission: the validation found errors (``error.report`` lists them all).
        InputFileError: the dataset cannot be read.
    """
    from facebench.datasets.dataset_file import FaceDataset

    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset(dataset)
    report = None
    if validate:
        report = validate_submission(path, dataset, require_pose=require_pose, topology=topology)
        if not report.ok:
            raise InvalidSubmission(report)
    return Submission(path, dataset, report=report)
