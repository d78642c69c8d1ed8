"""The triangle mesh read from a mesh file, and polygon fan triangulation.

:class:`ObjMesh` (alias :data:`Mesh`) is what every mesh reader returns: :func:`facebench.meshio.read_obj`,
:func:`facebench.meshio.read_ply`, :func:`facebench.meshio_vrml.read_vrml` and the dispatcher
:func:`facebench.meshio.read_mesh`. :func:`fan_triangulate` splits the files' polygons into
triangles ``(p0, p_i, p_i+1)``, which keeps their winding. Frames and units are the file's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from facebench.errors import InputFileError

__all__ = ["ObjMesh", "Mesh", "fan_triangulate", "MAX_MESH_BYTES", "read_mesh_bytes"]

#: Largest mesh file any reader takes (bytes): far above a dense head scan (~100 MB as text).
MAX_MESH_BYTES = 2 * 2**30


@dataclasses.dataclass(eq=False)
class ObjMesh:
    """A triangle mesh read from a file.

    Attributes:
        vertices: ``(V,3)`` float64, in the file's units and frame.
        faces: ``(F,3)`` int64 0-based triangles, the file's winding (polygons fan-triangulated).
        polygon_sizes: ``(P,)`` int64 corner count of each polygon of the file, in file order.
        face_polygon: ``(F,)`` int64, index of the file polygon each triangle came from.
        colors: ``(V,3)`` float64 in [0, 1] when the file has per-vertex colours, else None.
        texcoords: ``(T,2)`` float64 ``vt`` coordinates of an OBJ (corner indices are not kept),
            else None.
        path: the file it was read from.
    """

    vertices: np.ndarray
    faces: np.ndarray
    polygon_sizes: np.ndarray
    face_polygon: np.ndarray
    colors: np.ndarray | None = None
    texcoords: np.ndarray | None = None
    path: Path | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_split(self) -> int:
        """Number of polygons with more than three corners that were split into triangles."""
        return int(np.count_nonzero(self.polygon_sizes > 3))


#: The same type under a format-neutral name (``read_mesh`` returns it for PLY too).
Mesh = ObjMesh


def fan_triangulate(corners: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split polygons into triangles ``(p0, p_i, p_i+1)``, keeping polygon order and winding.

    Args:
        corners: ``(sum(sizes),)`` vertex indices of all polygons, concatenated.
        sizes: ``(P,)`` corner count of each polygon (>= 3).

    Returns:
        ``faces (sum(sizes - 2), 3)`` int64 and ``face_polygon`` (the source polygon of each).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_tri = sizes - 2
    face_polygon = np.repeat(np.arange(len(sizes), dtype=np.int64), n_tri)
    first_tri = np.concatenate([[0], np.cumsum(n_tri)[:-1]])
    j = np.arange(int(n_tri.sum()), dtype=np.int64) - first_tri[face_polygon]
    base = start[face_polygon]
    corners = np.asarray(corners, dtype=np.int64)
    faces = np.stack([corners[base], corners[base + j + 1], corners[base + j + 2]], axis=1)
    return faces, face_polygon


def read_mesh_bytes(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a mesh file, refused (InputFileError, one line) when missing, unreadable or larger
    than ``limit`` (default :data:`MAX_MESH_BYTES`) before anything is read."""
    limit = MAX_MESH_BYTES if limit is None else limit
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputFileError(path, f"mesh file of {size} bytes, more than the {limit} a mesh may take")
        return path.read_bytes()
    except OSError as error:
        raise InputFileError(path, f"cannot read file ({error.strerror or error})") from None
