"""Exact point-to-surface distances on triangle meshes (closest point on triangles).

The search runs in open3d's ``RaycastingScene.compute_closest_points`` (a BVH over the
triangles, float32). float32 alone gives closest points to about ``1e-7 × extent`` of the
coordinates it sees, so the mesh and the queries are first shifted to the mesh's centroid (a face
spans ~200 mm: about 2e-5 mm). By default each closest point is then recomputed in float64 on the
triangle the BVH selected (:func:`closest_points_on_triangles`, Ericson's region test), so the
distance to that triangle is exact to float64; only the choice of triangle carries float32
rounding, which can matter only between two triangles whose distances differ by less than
~1e-5 mm (so the distance is unaffected beyond that).

All coordinates are in the caller's frame and unit (facebench: millimetres).
"""

from __future__ import annotations

import numpy as np


def _open3d():
    import open3d as o3d  # imported lazily: it takes a moment and prints nothing

    return o3d


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
        raise ValueError(f"mesh vertices must be (V,3) with V >= 3, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) < 1:
        raise ValueError(f"mesh faces must be (F,3) with F >= 1, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"mesh faces must be integers, got {f.dtype}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"mesh faces index vertices outside [0, {len(v)}): min {f.min()}, max {f.max()}")
    if not np.all(np.isfinite(v)):
        raise ValueError("mesh vertices contain NaN or Inf")
    return v, f.astype(np.int64)


def _check_points(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"query points must be (N,3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("query points contain NaN or Inf")
    return p


def closest_points_on_triangles(points, a, b, c) -> np.ndarray:
    """Closest point of each triangle ``(a_i, b_i, c_i)`` to ``points_i`` (float64, vectorized).

    Ericson, *Real-Time Collision Detection* (2005), §5.1.5: Voronoi regions of the vertices,
    edges and face. Degenerate (zero-area) triangles give NaN rows where the face region is chosen.

    Args:
        points, a, b, c: ``(N, 3)``.

    Returns:
        ``(N, 3)`` closest points.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (points, a, b, c))
    ab, ac = b - a, c - a
    return _closest_on_edges(p, a, ab, ac, _dot(ab, ab), _dot(ab, ac), _dot(ac, ac))


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


#: Feature of a triangle that holds the closest point (:meth:`TriangleSurface.closest_features`):
#: the face's interior, a vertex (a, b, c) or an edge (ab, ac, bc) of the triangle ``(a, b, c)``.
FEATURE_FACE, FEATURE_A, FEATURE_B, FEATURE_AB, FEATURE_C, FEATURE_AC, FEATURE_BC = 0, 1, 2, 3, 4, 5, 6


def _closest_on_edges(p, a, ab, ac, abab, abac, acac, *, features: bool = False):
    """:func:`closest_points_on_triangles` from a vertex ``a``, the edges ``ab = b - a``, ``ac = c - a``
    and their dot products (precomputed once per triangle by :class:`TriangleSurface`).

    Ericson's six dot products come from two per point (``d3 = d1 - ab·ab``, ``d4 = d2 - ab·ac``,
    ``d5 = d1 - ab·ac``, ``d6 = d2 - ac·ac``), each region gives the barycentric weights
    ``(v, w)`` of the closest point ``a + v ab + w ac`` (scalars per point), and the point is formed
    once: the same point as forming each region's candidate, up to float64 rounding. With
    ``features``, also returns the ``(N,)`` int8 region (``FEATURE_*``: face interior, vertex or edge).
    """
    ap = p - a
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = d1 - abab, d2 - abac
    d5, d6 = d1 - abac, d2 - acac
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        denom = 1.0 / (va + vb + vc)
        conditions = [
            (d1 <= 0) & (d2 <= 0),                               # vertex a
            (d3 >= 0) & (d4 <= d3),                              # vertex b
            (vc <= 0) & (d1 >= 0) & (d3 <= 0),                   # edge ab
            (d6 >= 0) & (d5 <= d6),                              # vertex c
            (vb <= 0) & (d2 >= 0) & (d6 <= 0),                   # edge ac
            (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),         # edge bc
        ]
        zero, one = np.zeros_like(d1), np.ones_like(d1)
        v = np.select(conditions, [zero, one, t_ab, zero, zero, 1.0 - w_bc], default=vb * denom)
        w = np.select(conditions, [zero, zero, zero, one, t_ac, w_bc], default=vc * denom)
        closest = a + v[:, None] * ab + w[:, None] * ac
    if not features:
        return closest
    region = np.select(conditions, [np.int8(c) for c in (FEATURE_A, FEATURE_B, FEATURE_AB, FEATURE_C, FEATURE_AC,
                                                          FEATURE_BC)], default=np.int8(FEATURE_FACE))
    return closest, region.astype(np.int8)


class TriangleSurface:
    """A triangle mesh prepared once for closest-point queries (build it once per mesh, query many times).

    Args:
        vertices: ``(V, 3)`` coordinates (mm).
        faces: ``(F, 3)`` vertex indices.

    Attributes:
        vertices: ``(V, 3)`` float64; faces: ``(F, 3)`` int64; origin: ``(3,)`` the centroid the
        float32 scene is built around.
    """

    def __init__(self, vertices, faces):
        self.vertices, self.faces = _check_mesh(vertices, faces)
        self.origin = self.vertices.mean(axis=0)
        o3d = _open3d()
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(self.vertices - self.origin, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(self.faces, dtype=np.uint32)),
        )
        # The BVH is built lazily on the first query: do it now so query timings are queries only.
        self._scene.compute_closest_points(o3d.core.Tensor(np.zeros((1, 3), dtype=np.float32)))
        self._edges = None
        self._normals = None

    def edges(self, face_ids: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Per triangle (computed once; the rows ``face_ids`` of it, gathered in one pass): ``a``,
        ``ab = b - a``, ``ac = c - a`` ``(F, 3)`` and the dot products ``ab·ab``, ``ab·ac``,
        ``ac·ac`` ``(F,)`` (float64)."""
        if self._edges is None:
            corners = self.vertices[self.faces]  # (F, 3 corners, 3)
            table = np.empty((len(corners), 12))  # (F, 12): a, ab, ac, ab·ab, ab·ac, ac·ac
            table[:, 0:3] = corners[:, 0]
            ab = np.subtract(corners[:, 1], corners[:, 0], out=table[:, 3:6])
            ac = np.subtract(corners[:, 2], corners[:, 0], out=table[:, 6:9])
            table[:, 9], table[:, 10], table[:, 11] = _dot(ab, ab), _dot(ab, ac), _dot(ac, ac)
            self._edges = table
        rows = self._edges if face_ids is None else self._edges[face_ids]
        return rows[:, 0:3], rows[:, 3:6], rows[:, 6:9], rows[:, 9], rows[:, 10], rows[:, 11]

    def face_normals(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit triangle normals ``(F, 3)`` (right-handed from the winding, ``ab × ac``) and ``(F,)``
        whether each triangle has one (False for zero-area triangles, whose row is not a unit vector)."""
        if self._normals is None:
            _, ab, ac = self.edges()[:3]
            normals = np.empty_like(ab)  # ab × ac, by columns (np.cross copies to move axes)
            normals[:, 0] = ab[:, 1] * ac[:, 2] - ab[:, 2] * ac[:, 1]
            normals[:, 1] = ab[:, 2] * ac[:, 0] - ab[:, 0] * ac[:, 2]
            normals[:, 2] = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
            length = np.sqrt(_dot(normals, normals))
            ok = length > 0
            normals[ok] /= length[ok, None]
            self._normals = (normals, ok)
        return self._normals

    def closest_points(self, points, *, refine: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closest point on the surface to each query point.

        Args:
            points: ``(N, 3)`` query points, same frame and unit as the mesh.
            refine: recompute each closest point in float64 on the triangle found (see the module
                docstring); False keeps open3d's float32 answer.

        Returns:
            ``distances (N,)`` float64, ``closest (N, 3)`` float64, ``face_ids (N,)`` int64.
        """
        p = _check_points(points)
        if len(p) == 0:
            return np.zeros(0), np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
        if not refine:
            answer = self._query(p)
            closest = answer["points"].numpy().astype(np.float64) + self.origin
            return np.linalg.norm(p - closest, axis=1), closest, answer["primitive_ids"].numpy().astype(np.int64)
        return self.closest_features(p)[:3]

    def closest_features(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`closest_points` (refined in float64), plus the feature of the selected triangle
        that holds each closest point: ``(N,)`` int8, ``FEATURE_FACE`` (its interior), a vertex
        (``FEATURE_A/B/C``) or an edge (``FEATURE_AB/AC/BC``) of the triangle ``faces[face_id]``, or
        -1 on a zero-area triangle (open3d's point kept). The feature is what a query's squared
        distance is locally the squared distance to (a plane, a line or a point); which of the
        triangles sharing an edge or a vertex the search selected does not change it.

        Returns:
            ``distances (N,)``, ``closest (N, 3)``, ``face_ids (N,)`` int64, ``features (N,)`` int8.
        """
        p = _check_points(points)
        if len(p) == 0:
            return np.zeros(0), np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
        answer = self._query(p)
        face_ids = answer["primitive_ids"].numpy().astype(np.int64)
        closest, features = _closest_on_edges(p, *self.edges(face_ids), features=True)
        bad = ~np.isfinite(closest).all(axis=1)  # degenerate triangles: keep open3d's point
        if bad.any():
            closest[bad] = answer["points"].numpy()[bad].astype(np.float64) + self.origin
            features[bad] = -1
        diff = p - closest
        return np.sqrt(_dot(diff, diff)), closest, face_ids, features

    def _query(self, p: np.ndarray):
        o3d = _open3d()
        return self._scene.compute_closest_points(o3d.core.Tensor(np.ascontiguousarray(p - self.origin,
                                                                                       dtype=np.float32)))


def point_to_surface_distances(points, vertices, faces, *, refine: bool = True):
    """Distance from each point to a triangle mesh's surface (closest point on triangles).

    Builds a :class:`TriangleSurface` (use one directly to query the same mesh several times).

    Args:
        points: ``(N, 3)`` query points (mm).
        vertices: ``(V, 3)`` mesh vertices (mm), same frame.
        faces: ``(F, 3)`` vertex indices.
        refine: float64 recomputation on the selected triangle (default; see the module docstring).

    Returns:
        ``distances (N,)`` mm, ``closest (N, 3)`` mm, ``face_ids (N,)`` int64.
    """
    return TriangleSurface(vertices, faces).closest_points(points, refine=refine)
