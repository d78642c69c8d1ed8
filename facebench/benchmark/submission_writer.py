"""Writing an HDF5 submission (:mod:`facebench.benchmark.submission_format`), atomically.

:class:`SubmissionWriter` writes ``n`` samples slice by slice (for submissions too large for
memory); :func:`write_submission` writes in-memory arrays in one call. The file appears at its
path only once every sample was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facebench.atomic import atomic_path
from facebench.benchmark.submission_format import FORMAT, VERSION

__all__ = ["SubmissionWriter", "write_submission"]


class SubmissionWriter:
    """Write an HDF5 submission of ``n`` samples slice by slice, atomically.

    Usage::

        with SubmissionWriter(path, n=len(ids), n_vertices=V, method="my-method",
                              with_pose=True, landmark_indices=lm) as writer:
            writer.write(start, ids=batch_ids, vertices=batch_vertices, q=batch_q, t=batch_t)

    The file appears at ``path`` only when the context exits without an exception and every
    sample was written. Arrays: ``vertices (b,V,3)`` mm head frame (stored float32), ``q (b,4)``,
    ``t (b,3)`` mm (stored float64), ``landmarks (b,L,3)`` mm when ``n_landmarks`` is given.

    Args:
        faces: ``(F,3)`` triangles of the predicted topology; None: the dataset's.
        attrs: extra root attributes (str, numbers).
    """

    def __init__(self, path: str | Path, *, n: int, n_vertices: int, method: str,
                 faces: np.ndarray | None = None, landmark_indices: np.ndarray | None = None,
                 with_pose: bool = False, n_landmarks: int | None = None,
                 attrs: dict[str, Any] | None = None):
        if n < 1 or n_vertices < 1:
            raise ValueError(f"need n >= 1 and n_vertices >= 1, got {n}, {n_vertices}")
        self.path = Path(path)
        self.n = n
        self._context = atomic_path(self.path, suffix=self.path.suffix)
        self._tmp = self._context.__enter__()
        self._written = np.zeros(n, bool)
        self._file = h5py.File(self._tmp, "w")
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["method"] = str(method)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.create_dataset("ids", shape=(n,), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("vertices", shape=(n, n_vertices, 3), dtype=np.float32)
        if faces is not None:
            f.create_dataset("faces", data=np.asarray(faces, np.int32))
        if landmark_indices is not None:
            f.create_dataset("landmark_indices", data=np.asarray(landmark_indices, np.int32))
        if with_pose:
            f.create_dataset("q", shape=(n, 4), dtype=np.float64)
            f.create_dataset("t", shape=(n, 3), dtype=np.float64)
        if n_landmarks is not None:
            f.create_dataset("landmarks", shape=(n, n_landmarks, 3), dtype=np.float32)

    def write(self, start: int, *, ids: Sequence[str], vertices: np.ndarray, q: np.ndarray | None = None,
              t: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> None:
        """Write samples ``[start, start + len(ids))``."""
        stop = start + len(ids)
        if start < 0 or stop > self.n:
            raise IndexError(f"samples [{start}, {stop}) outside [0, {self.n})")
        f = self._file
        f["ids"][start:stop] = np.asarray([str(i) for i in ids], dtype=object)
        f["vertices"][start:stop] = np.asarray(vertices, np.float32)
        for name, value in (("q", q), ("t", t), ("landmarks", landmarks)):
            if (value is None) != (name not in f):
                raise ValueError(f"{name} {'missing' if value is None else 'not declared'} for this writer")
            if value is not None:
                f[name][start:stop] = value
        self._written[start:stop] = True

    def close(self, success: bool) -> None:
        """Close the file: rename it onto ``path`` on success, else remove it."""
        self._file.close()
        missing = int((~self._written).sum())
        if success and not missing:
            self._context.__exit__(None, None, None)
            return
        error = RuntimeError(f"{self.path}: {missing} samples were never written" if success else "aborted")
        self._context.__exit__(RuntimeError, error, None)  # removes the temporary file
        if success:
            raise error

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)


def write_submission(path: str | Path, ids: Sequence[str], vertices: np.ndarray, *, method: str,
                     faces: np.ndarray | None = None, landmark_indices: np.ndarray | None = None,
                     q: np.ndarray | None = None, t: np.ndarray | None = None,
                     landmarks: np.ndarray | None = None) -> Path:
    """Write an HDF5 submission from in-memory arrays (``vertices (N,V,3)`` mm); return ``path``.

    For large submissions use :class:`SubmissionWriter` chunk by chunk.
    """
    vertices = np.asarray(vertices)
    if (q is None) != (t is None):
        raise ValueError("give q and t together")
    with SubmissionWriter(path, n=len(ids), n_vertices=vertices.shape[1], method=method, faces=faces,
                          landmark_indices=landmark_indices, with_pose=q is not None,
                          n_landmarks=None if landmarks is None else np.shape(landmarks)[1]) as writer:
        writer.write(0, ids=ids, vertices=vertices, q=q, t=t, landmarks=landmarks)
    return Path(path)
