"""Landmark + ICP alignment of a predicted face onto a ground-truth scan, and scan-to-surface distances.

**Direction.** The ground truth (the scan) stays fixed; the prediction moves onto it by a similarity
``S(p) = s R p + t`` (``s = 1`` for rigid protocols), so every distance is in the ground truth's
millimetres. ``R`` is always a proper rotation (``det R = +1``): a reflection is never accepted, at
any step, so a mirrored prediction scores as what it is (NoW's reflecting Procrustes does not).

**Steps** (:func:`align_and_measure`, parameters in :class:`ScanAlignmentParams`):

1. crop: keep the ground-truth vertices within a sphere around a ground-truth landmark (the nose
   tip by default), around the nose tip found on the scan (:func:`facebench.benchmark.crop.scan_nose_tip`, for MICC whose
   annotations have no nose tip), or all of them;
2. landmarks: Umeyama fit of the predicted landmarks onto the ground-truth ones
   (:func:`facebench.benchmark.similarity.landmark_similarity`; NaN landmarks skipped), or the identity when the prediction is
   already in the ground truth's frame;
3. ICP (:func:`refine_icp`): Gauss-Newton steps with a line search on the exact squared distances
   from each kept scan point to the predicted triangles (``final="feature"``, the current scan
   presets, :func:`_refine_feature`), point-to-plane steps on the exact closest points
   (``final="exact"``, scan presets 1.1, Table 3 presets 1.2, now 1.0), or, for protocols 1.0
   (``final="open3d"``), a last open3d ``registration_icp`` from the scan points to the predicted
   mesh's vertices with its vertex normals, inverted so that the prediction moves; correspondences
   run from each scan point to the prediction, as the distance does;
4. distances from each kept ground-truth vertex to the moved prediction's surface (exact closest
   point on triangles, :mod:`facebench.benchmark.surface_distance`), or the reverse, or both,
   aggregated by :func:`facebench.benchmark.metrics.scan_distance_stats` (mean, median, RMSE).

**Feature final stage** (``final="feature"``, the default and the current scan presets): from
the landmark fit, minimize ``F(S) = Σ min(d, cut-off)²`` over similarities (or rigid motions) by
Gauss-Newton on the exact point-to-surface distances (each linearized along the normal of its
closest feature: the triangle's normal inside a face, the direction to the closest point on an
edge or a vertex, i.e. the distance's exact gradient), each step shortened until ``F`` decreases
(Armijo backtracking), until a step moves
the scan points by less than ``tolerance`` relative to their RMS radius or no longer step lowers
``F`` (:func:`_refine_feature`). It converges in a few steps to a minimum of ``F``; the result
does not depend on ``max_iterations`` once that is reached. An exact copy of a denser or coarser
scan scores 0 to ~1e-10 mm.

**Exact final stage** (``final="exact"``, protocols 1.1): closed-form point-to-plane similarity
(or rigid) steps (:func:`_similarity_step`) on exact closest points of the predicted triangles and
their triangle normals until a step moves the scan points by less than ``tolerance``, or after
``max_iterations`` steps (:func:`_refine_exact`). Scan points closest to an edge or a vertex get the
normal of whichever adjacent triangle the search picks, so the iteration stalls ~1e-6 short of
convergence and its result depends on ``max_iterations`` (kept for those versions' scores).

**Scale in ICP, protocols 1.0** (``final="open3d"``). open3d's point-to-plane estimation is rigid.
For similarity protocols with ``method="point_to_plane"``: (a) from the landmark fit, a loop of closed-form point-to-plane
*similarity* steps (7 unknowns: scale, rotation, translation; linearized least squares,
:func:`_similarity_step`) on exact closest points of the predicted surface and their triangle
normals, residuals in ground-truth mm, until a step changes the scale by less than ``tolerance``
(relative) or after ``max_iterations`` steps; (b) a final rigid point-to-plane ``registration_icp``
call at that scale, with our convergence criteria (the scan points are divided by ``s``, so a rigid
fit between them and the prediction is the similarity at that scale). Alternating rigid ICP with an
Umeyama scale on closest-point pairs (the textbook scheme) needed 14–50 rounds on our benchmark
against 3–5 steps here, for the same distances within 0.002 mm. Rigid protocols are one
``registration_icp`` call; ``method="point_to_point"`` is one call of
``TransformationEstimationPointToPoint(with_scaling=with_scale)``.
Every intermediate similarity is checked: ``s > 0`` and ``det R = +1`` (:class:`facebench.benchmark.similarity.Similarity`).
ICP may use a fixed-seed subset of the scan points (``icp_max_points``); distances use them all.

The prepared prediction (:class:`PreparedMesh`: its BVH, its per-triangle edges and unit normals, and
for ``final="open3d"`` its ICP target cloud) is built once and reused by every step and by the distances; distances are computed in the prediction's own frame (scan points mapped by
``S⁻¹``) and multiplied by ``s``, which is exact for a similarity.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from facebench.benchmark import metrics
from facebench.benchmark.crop import CROP_CENTERS, CROP_RULES, NOSE_TIP_SEARCH_MM, crop_center, crop_sphere, now_crop
from facebench.benchmark.similarity import (
    LANDMARK_RESIDUAL_LIMIT,
    AlignmentError,
    LandmarkFitCheck,
    Similarity,
    landmark_fit_check,
    landmark_similarity,
    points_array,
)
from facebench.benchmark.surface_distance import FEATURE_FACE, TriangleSurface
from facebench.geometry import vertex_normals

METHODS = ("point_to_plane", "point_to_point")
DIRECTIONS = ("gt_to_pred", "pred_to_gt", "symmetric")
INITS = ("landmarks", "identity")
#: Last ICP stage of point-to-plane protocols: ``"feature"`` (Gauss-Newton on the exact
#: point-to-surface distances with a line search, to convergence: :func:`_refine_feature`; scan
#: presets 1.2, now 1.1), ``"exact"`` (scan presets 1.1, now 1.0: point-to-plane steps with the
#: selected triangle's normal, :func:`_refine_exact`; stalls ~1e-6 short of convergence, so its
#: result depends on ``max_iterations``) or ``"open3d"`` (protocols 1.0: a final rigid
#: ``registration_icp`` on the predicted vertices with vertex normals, off by ~0.1 mm when the scan
#: is denser than the prediction).
FINALS = ("feature", "exact", "open3d")
#: Armijo constant of the line search of :func:`_refine_feature`: a step is taken when it lowers the
#: objective by at least this fraction of the decrease its slope promises.
ARMIJO = 1e-4
#: Warm start of :func:`_refine_feature`: on more than :data:`WARM_START_ABOVE` scan points, the
#: iteration first converges on a fixed-seed subset of ``WARM_START_POINTS`` of them, then on all of
#: them; the stopping rule is the full set's, so the result is a minimum of the full objective
#: either way. Measured on the 5 scans of ``perf/bench_scan_protocol.py`` (points queried, the cost):
#: ``now`` (~45k points, every cropped vertex) 225k with it against 286k without (3.2 against 5.0
#: full-set steps); with 5,000 ICP points a 1,000-point warm start cost more than it saved (34.6k
#: against 32.0k points in a trial), hence the threshold.
WARM_START_POINTS = 1000
WARM_START_ABOVE = 10_000



def _o3d():
    import open3d as o3d

    return o3d


# ---------------------------------------------------------------------------- similarity

# ---------------------------------------------------------------------------- landmarks, crop


# ---------------------------------------------------------------------------- prepared prediction
class PreparedMesh:
    """A predicted mesh prepared once for ICP and distances: closest-point BVH and normal-carrying cloud.

    Args:
        vertices: ``(V, 3)`` mm in the prediction's own frame. faces: ``(F, 3)``.
    """

    def __init__(self, vertices, faces):
        self.surface = TriangleSurface(vertices, faces)
        self._cloud = None

    @property
    def vertices(self) -> np.ndarray:
        return self.surface.vertices

    @property
    def faces(self) -> np.ndarray:
        return self.surface.faces

    def icp_target(self):
        """open3d point cloud of the vertices with area-weighted vertex normals (built on first use)."""
        if self._cloud is None:
            o3d = _o3d()
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.vertices))
            cloud.normals = o3d.utility.Vector3dVector(vertex_normals(self.vertices, self.faces))
            self._cloud = cloud
        return self._cloud


# ---------------------------------------------------------------------------- ICP
@dataclass(frozen=True)
class IcpInfo:
    """Diagnostics of an ICP refinement.

    fitness: fraction of scan points with a correspondence within the distance at the last open3d
    call; rmse_mm: RMS of those correspondences (ground-truth mm); open3d_calls: ``registration_icp``
    calls made; scale_steps: point-to-plane similarity steps of the scale loop; scale_converged:
    the scale loop met its tolerance (True when no scale loop runs).
    """

    fitness: float
    rmse_mm: float
    open3d_calls: int
    scale_steps: int
    scale_converged: bool


def _cloud(points: np.ndarray):
    o3d = _o3d()
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points, dtype=np.float64)))


def _icp_call(mesh: PreparedMesh, gt_points: np.ndarray, current: Similarity, estimation, criteria,
              max_correspondence_mm: float):
    """One open3d ICP call from the scan (divided by the current scale) onto the prediction."""
    o3d = _o3d()
    s0 = current.s
    init = np.eye(4)  # S⁻¹ on the scaled scan: p = Rᵀ (g / s) − Rᵀ t / s
    init[:3, :3] = current.R.T
    init[:3, 3] = -(current.R.T @ current.t) / s0
    result = o3d.pipelines.registration.registration_icp(
        _cloud(gt_points / s0), mesh.icp_target(), max_correspondence_mm / s0, init, estimation, criteria)
    back = Similarity.from_matrix(result.transformation)  # maps g / s0 -> p; reflection refused here
    inv = back.inverse()  # p -> g / s0
    moved = Similarity(inv.s * s0, inv.R, inv.t * s0)
    return moved, float(result.fitness), float(result.inlier_rmse) * moved.s


def _similarity_step(mesh: PreparedMesh, gt_points: np.ndarray, current: Similarity,
                     max_correspondence_mm: float, with_scale: bool = True) -> _Step | None:
    """One Gauss-Newton step of point-to-plane similarity (or rigid) ICP on exact closest points
    (ground-truth mm).

    Each scan point ``g`` is paired with its exact closest point ``c`` on the predicted surface (and
    that triangle's normal ``n``); the residual ``(R n) · (S(c) − g)`` is the distance from ``g`` to
    the moved prediction's tangent plane, in ground-truth mm. ``S`` is updated by a small similarity
    about the scan's centroid ``μ``: ``y ↦ μ + (1 + σ) Rot(ω) (y − μ) + τ`` with ``(σ, ω, τ)`` from
    the linear least-squares problem (``σ = 0`` when ``with_scale`` is False: a rigid step). Returns
    a :class:`_Step` (the new similarity, ``|σ|``, the relative motion ``max(|σ|, |ω|, |τ| / r)``
    with ``r`` the RMS distance of the paired scan points from ``μ``, and the fitness and RMS
    distance of the pairs before the step), or None with fewer than 7 pairs within the distance.
    """
    distances, closest, face_ids = mesh.surface.closest_points(current.inverse().apply(gt_points))
    keep = distances * current.s <= max_correspondence_mm
    if keep.sum() < 7:
        return None
    fitness = float(keep.mean())
    rmse = float(np.sqrt(np.mean((distances[keep] * current.s) ** 2)))
    unit, has_normal = mesh.surface.face_normals()  # computed once per prediction
    ids = face_ids[keep]
    ok = has_normal[ids]
    normals = unit[ids[ok]] @ current.R.T  # unit normals, ground-truth frame
    moved, g = current.apply(closest[keep][ok]), gt_points[keep][ok]
    if len(g) < 7:
        return None
    mu = g.mean(axis=0)
    arm = moved - mu
    residual = np.einsum("ij,ij->i", normals, moved - g)
    jacobian = np.concatenate((np.einsum("ij,ij->i", normals, arm)[:, None], np.cross(arm, normals), normals), 1)
    if with_scale:
        x = _least_squares(jacobian, -residual)
    else:
        x = np.concatenate(([0.0], _least_squares(jacobian[:, 1:], -residual)))
    sigma, omega, tau = float(x[0]), x[1:4], x[4:7]
    if not (np.all(np.isfinite(x)) and sigma > -0.5):
        return None
    angle = float(np.linalg.norm(omega))
    K = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
    rot = np.eye(3) if angle == 0 else (np.eye(3) + math.sin(angle) / angle * K
                                        + (1 - math.cos(angle)) / angle**2 * K @ K)  # Rodrigues
    updated = Similarity((1 + sigma) * current.s, rot @ current.R, mu + (1 + sigma) * rot @ (current.t - mu) + tau)
    radius = max(float(np.sqrt(np.mean(np.sum((g - mu) ** 2, axis=1)))), 1e-12)
    motion = max(abs(sigma), angle, float(np.linalg.norm(tau)) / radius)
    return _Step(updated, abs(sigma), motion, fitness, rmse)


@dataclass(frozen=True)
class _Step:
    """One point-to-plane step: the updated similarity, ``|σ|``, the relative motion, and the fitness
    and RMS distance (ground-truth mm) of the pairs it was computed from."""

    similarity: Similarity
    scale_change: float
    motion: float
    fitness: float
    rmse_mm: float


def _least_squares(jacobian: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Solve ``min ||J x - y||`` for a tall, thin J (N x 7) by column-scaled normal equations.

    ~100x faster than an SVD-based ``lstsq`` at N = 5,000; scaling the columns to unit norm keeps
    the 7x7 system well conditioned (float64), and a rank-deficient J falls back to ``lstsq``.
    """
    scale = np.linalg.norm(jacobian, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    js = jacobian / scale
    try:
        x = np.linalg.solve(js.T @ js, js.T @ target)
    except np.linalg.LinAlgError:
        x = np.linalg.lstsq(js, target, rcond=None)[0]
    return x / scale


def _subsample(points: np.ndarray, max_points: int | None) -> np.ndarray:
    """At most ``max_points`` rows, a fixed-seed random subset in original order (deterministic)."""
    pick = _subsample_rows(len(points), max_points)
    return points if pick is None else points[pick]


def _subsample_rows(n: int, max_points: int | None) -> np.ndarray | None:
    """The sorted rows :func:`_subsample` keeps of ``n``, or None when it keeps them all."""
    if max_points is None or n <= max_points:
        return None
    return np.sort(np.random.default_rng(0).choice(n, size=int(max_points), replace=False))


def _refine(mesh: PreparedMesh, gt_points, init: Similarity, *, max_iterations: int, tolerance: float,
            max_correspondence_mm: float, with_scale: bool, method: str,
            max_points: int | None = None, final: str = "feature") -> tuple[Similarity, IcpInfo, np.ndarray | None]:
    """ICP from ``init`` (see the module docstring): the similarity, :class:`IcpInfo`, and for
    ``final="feature"`` the ``(N,)`` distances of ``gt_points`` at that similarity (ground-truth mm;
    NaN for the points outside the ICP subset), else None."""
    if method not in METHODS:
        raise ValueError(f"unknown ICP method {method!r}; expected one of {', '.join(METHODS)}")
    if final not in FINALS:
        raise ValueError(f"unknown final ICP step {final!r}; expected one of {', '.join(FINALS)}")
    if max_iterations < 1 or not tolerance > 0 or not max_correspondence_mm > 0:
        raise ValueError("ICP needs max_iterations >= 1, tolerance > 0 and max_correspondence_mm > 0")
    every = points_array(gt_points, "ground-truth points")
    pick = _subsample_rows(len(every), max_points)
    g = every if pick is None else every[pick]
    if len(g) < 3:
        raise AlignmentError(f"ICP needs >= 3 ground-truth points, got {len(g)}")
    if method == "point_to_plane" and final == "feature":
        similarity, info, distances = _refine_feature(mesh, g, init, max_iterations=max_iterations,
                                                      tolerance=tolerance, max_correspondence_mm=max_correspondence_mm,
                                                      with_scale=with_scale)
        if pick is not None:
            distances, known = np.full(len(every), np.nan), distances
            distances[pick] = known
        return similarity, info, distances
    if method == "point_to_plane" and final == "exact":
        return (*_refine_exact(mesh, g, init, max_iterations=max_iterations, tolerance=tolerance,
                               max_correspondence_mm=max_correspondence_mm, with_scale=with_scale), None)
    reg = _o3d().pipelines.registration
    criteria = reg.ICPConvergenceCriteria(relative_fitness=tolerance, relative_rmse=tolerance,
                                          max_iteration=int(max_iterations))
    if method == "point_to_point":
        estimation = reg.TransformationEstimationPointToPoint(with_scaling=bool(with_scale))
    else:
        estimation = reg.TransformationEstimationPointToPlane()
    if method == "point_to_point" or not with_scale:
        current, fitness, rmse = _icp_call(mesh, g, init, estimation, criteria, max_correspondence_mm)
        if not with_scale:
            current = Similarity(init.s, current.R, current.t)  # the scale stays exactly as given
        return current, IcpInfo(fitness, rmse, 1, 0, True), None
    current, steps, converged = init, 0, False
    while steps < max_iterations:
        result = _similarity_step(mesh, g, current, max_correspondence_mm)
        if result is None:
            break
        current, size = result.similarity, result.scale_change
        steps += 1
        if size < tolerance:
            converged = True
            break
    current, fitness, rmse = _icp_call(mesh, g, current, estimation, criteria, max_correspondence_mm)
    return current, IcpInfo(fitness, rmse, 1, steps, converged), None


def _refine_exact(mesh: PreparedMesh, g: np.ndarray, init: Similarity, *, max_iterations: int, tolerance: float,
                  max_correspondence_mm: float, with_scale: bool) -> tuple[Similarity, IcpInfo]:
    """Point-to-plane ICP on exact closest points of the predicted triangles, with their triangle
    normals, to the end (``final="exact"``): similarity steps (or rigid ones, the scale kept exactly)
    until a step moves the scan points by less than ``tolerance`` relative to their RMS radius
    (:func:`_similarity_step`), or after ``max_iterations`` steps. No open3d call and no vertex
    normals: a scan denser or coarser than the prediction is registered exactly (an exact copy of
    the scan scores 0 to ~1e-9 mm)."""
    current, steps, converged, last = init, 0, False, None
    while steps < max_iterations:
        step = _similarity_step(mesh, g, current, max_correspondence_mm, with_scale=with_scale)
        if step is None:
            break
        current, last, steps = step.similarity, step, steps + 1
        if step.motion < tolerance:
            converged = True
            break
    if not with_scale:
        current = Similarity(init.s, current.R, current.t)  # the scale stays exactly as given
    if last is None:
        return current, IcpInfo(0.0, 0.0, 0, 0, False)
    return current, IcpInfo(last.fitness, last.rmse_mm, 0, steps, converged)


@dataclass(frozen=True, eq=False)
class _Evaluation:
    """The ICP objective at one similarity ``S``, with what the next step needs.

    distances: ``(N,)`` ground-truth mm from each scan point to the moved prediction; query:
    ``(N, 3)`` the scan points in the prediction's frame (``S⁻¹(g)``); closest, face_ids, features:
    :meth:`facebench.benchmark.surface_distance.TriangleSurface.closest_features` of them;
    objective: ``Σ min(d, cut-off)²`` (mm²).
    """

    similarity: Similarity
    distances: np.ndarray
    query: np.ndarray
    closest: np.ndarray
    face_ids: np.ndarray
    features: np.ndarray
    objective: float


def _evaluate(mesh: PreparedMesh, g: np.ndarray, similarity: Similarity, cutoff: float) -> _Evaluation:
    """Exact closest points of the scan points ``g`` on the moved prediction and the objective."""
    query = similarity.inverse().apply(g)
    distances, closest, face_ids, features = mesh.surface.closest_features(query)
    distances *= similarity.s
    objective = float(np.sum(np.square(np.minimum(distances, cutoff))))
    return _Evaluation(similarity, distances, query, closest, face_ids, features, objective)


@dataclass(frozen=True, eq=False)
class _Direction:
    """A Gauss-Newton direction ``x = (σ, ω, τ)`` about the scan points' centroid ``μ``, its relative
    motion ``max(|σ|, |ω|, |τ| / r)``, and the objective's slope along it (mm²)."""

    x: np.ndarray
    mu: np.ndarray
    motion: float
    slope: float

    def similarity(self, current: Similarity, alpha: float) -> Similarity:
        """``y ↦ μ + (1 + ασ) Rot(αω) (y − μ) + ατ`` composed after ``current``."""
        return _updated(current, alpha * self.x, self.mu)


def _updated(current: Similarity, x: np.ndarray, mu: np.ndarray) -> Similarity:
    """``current`` followed by ``y ↦ μ + (1 + σ) Rot(ω) (y − μ) + τ`` with ``x = (σ, ω, τ)``."""
    sigma, omega, tau = float(x[0]), x[1:4], x[4:7]
    angle = float(np.linalg.norm(omega))
    K = np.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
    rot = np.eye(3) if angle == 0 else (np.eye(3) + math.sin(angle) / angle * K
                                        + (1 - math.cos(angle)) / angle**2 * K @ K)  # Rodrigues
    return Similarity((1 + sigma) * current.s, rot @ current.R, mu + (1 + sigma) * rot @ (current.t - mu) + tau)


def _feature_direction(mesh: PreparedMesh, g: np.ndarray, ev: _Evaluation, cutoff: float,
                       with_scale: bool) -> _Direction | None:
    """Gauss-Newton direction of ``Σ d²``, ``d`` the exact distance of each scan point to the moved
    prediction.

    A scan point ``g`` with closest point ``c`` on the prediction has ``d = u · (S(c) − g)`` with
    ``u`` the unit direction from ``g`` to ``S(c)``: the normal of the closest **feature** (the
    triangle's normal, rotated into the ground truth's frame, when ``c`` lies inside a triangle,
    where it keeps its sign through ``d = 0``; ``(S(c) − g) / d`` when ``c`` lies on an edge or a
    vertex, where the triangle's normal is not the distance's gradient). Moving the prediction by
    a small similarity changes ``d`` by ``u · δS(c)`` (envelope theorem: the closest point's own
    motion along the surface does not count), linearized in ``(σ, ω, τ)`` as in
    :func:`_similarity_step`: the Jacobian is the exact gradient of each distance, so ``-slope`` is
    the exact decrease rate of ``Σ d²`` along the direction. Pairs beyond the cut-off, or inside a
    zero-area triangle, give no residual. Returns None with fewer than 7 residuals.
    """
    S = ev.similarity
    keep = np.flatnonzero((ev.distances <= cutoff) & (ev.features >= 0))
    distance = ev.distances[keep]
    moved = S.apply(ev.closest[keep])
    diff = moved - g[keep]
    u = np.empty_like(diff)
    along = (ev.features[keep] != FEATURE_FACE) & (distance > 0)  # off a face: toward the closest point
    u[along] = diff[along] / distance[along, None]
    normal = np.flatnonzero(~along)  # inside a face (or on it): the triangle's normal, signed
    if len(normal):
        _, ab, ac = mesh.surface.edges(ev.face_ids[keep[normal]])[:3]
        n = np.cross(ab, ac)
        length = np.sqrt(np.einsum("ij,ij->i", n, n))
        area = length > 0
        u[normal[area]] = (n[area] / length[area, None]) @ S.R.T
        if not area.all():  # zero-area triangles: no normal, no residual
            rows = np.ones(len(keep), dtype=bool)
            rows[normal[~area]] = False
            keep, u, moved, diff = keep[rows], u[rows], moved[rows], diff[rows]
    if len(keep) < 7:
        return None
    gk = g[keep]
    mu = gk.mean(axis=0)
    arm = moved - mu
    residual = np.einsum("ij,ij->i", u, diff)
    jacobian = np.concatenate((np.einsum("ij,ij->i", u, arm)[:, None], np.cross(arm, u), u), 1)
    if with_scale:
        x = _least_squares(jacobian, -residual)
    else:
        x = np.concatenate(([0.0], _least_squares(jacobian[:, 1:], -residual)))
    if not (np.all(np.isfinite(x)) and x[0] > -0.5):
        return None
    radius = max(float(np.sqrt(np.mean(np.sum((gk - mu) ** 2, axis=1)))), 1e-12)
    motion = max(abs(float(x[0])), float(np.linalg.norm(x[1:4])), float(np.linalg.norm(x[4:7])) / radius)
    slope = 2.0 * float(residual @ (jacobian @ x))
    return _Direction(x, mu, motion, slope)


def _refine_feature(mesh: PreparedMesh, g: np.ndarray, init: Similarity, *, max_iterations: int, tolerance: float,
                    max_correspondence_mm: float, with_scale: bool,
                    warm_start: bool = True) -> tuple[Similarity, IcpInfo, np.ndarray]:
    """Minimize ``F(S) = Σ min(d(g, S(pred)), cut-off)²`` over similarities (or rigid motions) by
    Gauss-Newton on the exact point-to-surface distances with a backtracking line search
    (``final="feature"``).

    Each step: the direction of :func:`_feature_direction` at the current similarity; the step
    lengths 1, 1/2, 1/4, ... until ``F`` decreases by at least :data:`ARMIJO` of what the slope
    promises (the trial's closest points are the next step's, so a full step costs one query). Stops,
    converged, when the step taken moves the scan points by less than ``tolerance`` relative to
    their RMS radius, or when no step longer than that lowers ``F`` (a minimum to within the
    tolerance); else after ``max_iterations`` steps. ``F`` never increases, so the result is the
    minimum the iteration reached, not a point of a cycle: the same for any larger cap.

    Why not point-to-plane on the selected triangle (``final="exact"``): a scan point whose
    closest point is on an edge or a vertex of the prediction (2–3 % of them on a smooth face of
    30k vertices, ~15 % on a noisy one) gets the normal of whichever adjacent triangle the BVH
    picks, so its residual underestimates its distance, its gradient points the wrong way, and the
    pick flips between steps (~140 of 45k points per step): that iteration's fixed points are not
    minima of ``F`` and it hovers at steps of 1e-6..1e-5 (relative) instead of converging. Here
    each residual is the distance itself and its Jacobian the distance's exact gradient (the
    direction to the closest point, which the pick does not change), so every step is a descent
    step of ``F`` and the line search makes it one. A model with the exact piecewise-quadratic
    squared distance (two residuals on an edge, three on a vertex; Pottmann et al., IJCV 2006) was
    tried: the same minima, but 15-20 % more steps (too stiff on a rough prediction).

    Warm start (``warm_start``): with more than :data:`WARM_START_ABOVE` scan points, the same
    iteration first converges on a fixed-seed subset of :data:`WARM_START_POINTS` of them, then
    continues on all of them (the stopping rule is the full set's).

    Returns:
        The similarity, :class:`IcpInfo` (``scale_steps``: steps taken on the full set) and the
        ``(N,)`` distances (ground-truth mm) of ``g`` at that similarity.
    """
    current = init
    if warm_start and len(g) > WARM_START_ABOVE:
        current = _refine_feature(mesh, _subsample(g, WARM_START_POINTS), init, max_iterations=max_iterations,
                                  tolerance=tolerance, max_correspondence_mm=max_correspondence_mm,
                                  with_scale=with_scale, warm_start=False)[0]
    ev = _evaluate(mesh, g, current, max_correspondence_mm)
    steps, converged = 0, False
    while steps < max_iterations:
        direction = _feature_direction(mesh, g, ev, max_correspondence_mm, with_scale)
        if direction is None:
            break
        alpha, trial = 1.0, None
        while alpha * direction.motion >= tolerance or alpha == 1.0:
            candidate = _evaluate(mesh, g, direction.similarity(ev.similarity, alpha), max_correspondence_mm)
            if candidate.objective <= ev.objective + ARMIJO * alpha * direction.slope:
                trial = candidate
                break
            alpha *= 0.5
        if trial is None:  # no step longer than the tolerance lowers F: a minimum to within it
            converged = True
            break
        ev, steps = trial, steps + 1
        if alpha * direction.motion < tolerance:
            converged = True
            break
    similarity = ev.similarity
    if not with_scale:
        similarity = Similarity(init.s, similarity.R, similarity.t)  # the scale stays exactly as given
    within = ev.distances <= max_correspondence_mm
    fitness = float(within.mean())
    rmse = float(np.sqrt(np.mean(ev.distances[within] ** 2))) if within.any() else 0.0
    return similarity, IcpInfo(fitness, rmse, 0, steps, converged), ev.distances


def refine_icp(pred_vertices, pred_faces, gt_points, init: Similarity, *, max_iterations: int = 50,
               tolerance: float = 1e-5, max_correspondence_mm: float = 10.0, with_scale: bool = True,
               method: str = "point_to_plane", max_points: int | None = None,
               prepared: PreparedMesh | None = None, final: str = "feature") -> Similarity:
    """ICP refinement of a prediction → ground-truth similarity (see the module docstring for the scheme).

    Args:
        pred_vertices: ``(V, 3)`` mm, prediction frame. pred_faces: ``(F, 3)``.
        gt_points: ``(N, 3)`` mm, ground-truth scan points (e.g. the cropped vertices); they stay fixed.
        init: starting prediction → ground-truth similarity (e.g. :func:`landmark_similarity`).
        max_iterations: the most ICP steps (open3d: iterations per call, and the most scale rounds).
        tolerance: relative motion of a step to stop (``"feature"``, ``"exact"``); open3d's relative
            fitness and RMSE change, and the relative scale change of the scale loop (``"open3d"``).
        max_correspondence_mm: pairs farther apart (ground-truth mm) are ignored.
        with_scale: refine the scale (similarity protocols) or keep ``init.s`` fixed (rigid refinement).
        method: ``"point_to_plane"`` (normals from the prediction mesh) or ``"point_to_point"``.
        max_points: use at most this many scan points (fixed-seed random subset); None: all.
        prepared: a :class:`PreparedMesh` of the prediction to reuse (then vertices/faces are ignored).
        final: ``"feature"``, ``"exact"`` or ``"open3d"`` (see :data:`FINALS`).

    Returns:
        The refined :class:`Similarity` (det R = +1; checked at every step).
    """
    mesh = prepared if prepared is not None else PreparedMesh(pred_vertices, pred_faces)
    similarity, _, _ = _refine(mesh, gt_points, init, max_iterations=max_iterations, tolerance=tolerance,
                            max_correspondence_mm=max_correspondence_mm, with_scale=with_scale, method=method,
                            max_points=max_points, final=final)
    return similarity


# ---------------------------------------------------------------------------- protocol entry point
@dataclass(frozen=True)
class ScanAlignmentParams:
    """Plain parameters of a scan protocol's alignment and distance (protocols map onto this).

    Attributes:
        with_scale: similarity (True) or rigid (False) alignment, landmarks and ICP alike.
        init: ``"landmarks"`` (Umeyama on corresponding landmarks) or ``"identity"`` (the prediction
            is already in the ground truth's frame).
        icp: refine with ICP after the initial alignment.
        method: ``"point_to_plane"`` or ``"point_to_point"`` (ICP estimation).
        max_iterations, tolerance, max_correspondence_mm: ICP settings (see :func:`refine_icp`).
        icp_max_points: ICP uses at most this many kept scan points (fixed-seed subset); None: all.
        crop_center: ground-truth landmark index, ``"nose_tip"`` (iBUG-68 index 30) or
            ``"scan_nose_tip"`` (:func:`scan_nose_tip` on the scan and its ``micc4`` landmarks).
        crop_search_mm: search radius around the nose base for ``"scan_nose_tip"``.
        crop_radius_mm: sphere radius around the crop centre; None keeps every ground-truth vertex.
        direction: ``"gt_to_pred"`` (each kept ground-truth vertex to the predicted surface),
            ``"pred_to_gt"`` (each aligned predicted vertex inside the crop sphere to the
            ground-truth surface) or ``"symmetric"`` (both; the aggregates average the two sides).
        final: last ICP stage, ``"feature"``, ``"exact"`` or ``"open3d"`` (:data:`FINALS`; protocols
            1.0 used open3d, 1.1 exact).
        crop_rule: ``"now"``: centre and radius from NoW's seven landmarks
            (:func:`facebench.benchmark.crop.now_crop`; ``crop_center``/``crop_radius_mm`` unused), or None.
        landmark_residual_limit: a landmark fit whose RMS residual exceeds this fraction of the
            ground-truth landmarks' RMS radius is implausible (:func:`facebench.benchmark.similarity.landmark_fit_check`);
            None: no residual check. A fit that a reflection would beat is flagged in any case.
        stop_implausible: a flagged sample stops after the landmark fit (no ICP; distances at the
            landmark similarity) instead of grinding ICP on an impossible fit.
    """

    with_scale: bool = True
    init: str = "landmarks"
    icp: bool = True
    method: str = "point_to_plane"
    max_iterations: int = 50
    tolerance: float = 1e-5
    max_correspondence_mm: float = 10.0
    icp_max_points: int | None = 5000
    crop_center: int | str = "nose_tip"
    crop_radius_mm: float | None = None
    direction: str = "gt_to_pred"
    crop_search_mm: float = NOSE_TIP_SEARCH_MM
    final: str = "feature"
    crop_rule: str | None = None
    landmark_residual_limit: float | None = LANDMARK_RESIDUAL_LIMIT
    stop_implausible: bool = True

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if int(self.max_iterations) < 1 or not self.tolerance > 0 or not self.max_correspondence_mm > 0:
            raise ValueError("max_iterations must be >= 1, tolerance and max_correspondence_mm > 0")
        if self.icp_max_points is not None and int(self.icp_max_points) < 3:
            raise ValueError(f"icp_max_points must be >= 3 or None, got {self.icp_max_points}")
        if self.crop_radius_mm is not None and not self.crop_radius_mm > 0:
            raise ValueError(f"crop_radius_mm must be > 0 or None, got {self.crop_radius_mm}")
        allowed = f"a landmark index or one of {', '.join(map(repr, CROP_CENTERS))}"
        if isinstance(self.crop_center, str):
            if self.crop_center not in CROP_CENTERS:
                raise ValueError(f"crop_center must be {allowed}, got {self.crop_center!r}")
        elif isinstance(self.crop_center, bool) or not isinstance(self.crop_center, (int, np.integer)):
            raise ValueError(f"crop_center must be {allowed}, got {self.crop_center!r}")
        if not self.crop_search_mm > 0:
            raise ValueError(f"crop_search_mm must be > 0, got {self.crop_search_mm}")
        if self.final not in FINALS:
            raise ValueError(f"final must be one of {', '.join(FINALS)}, got {self.final!r}")
        if self.crop_rule not in CROP_RULES:
            raise ValueError(f"crop_rule must be one of {CROP_RULES}, got {self.crop_rule!r}")
        if self.landmark_residual_limit is not None and not self.landmark_residual_limit > 0:
            raise ValueError(f"landmark_residual_limit must be > 0 or None, got {self.landmark_residual_limit}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Outcome of :func:`align_and_measure` for one sample (distances in ground-truth mm).

    Attributes:
        similarity: the prediction → ground-truth :class:`Similarity` used.
        gt_indices: ``(K,)`` int64 kept ground-truth vertex indices (the crop).
        gt_distances: ``(K,)`` mm from each kept ground-truth vertex to the predicted surface, or
            None (direction ``"pred_to_gt"``).
        pred_indices, pred_distances: the same for aligned predicted vertices inside the crop sphere
            to the ground-truth surface (directions ``"pred_to_gt"`` and ``"symmetric"``), else None.
        mean_mm, median_mm, rmse_mm: of the direction's distances; ``"symmetric"`` averages the two
            sides' means and medians, and their mean squares for the RMSE
            (:func:`facebench.benchmark.metrics.scan_distance_stats`).
        n_landmarks: landmarks used by the initial fit (0 for ``init="identity"``).
        icp: :class:`IcpInfo`, or None without ICP.
        timings: seconds per phase: ``prepare`` (prediction BVH), ``crop``, ``landmarks``, ``icp``,
            ``distance``, ``total``.
        warning: "" or why the landmark fit is suspect (its best fit is a reflection: left/right
            swapped; or its residual is implausible); with ``stop_implausible`` such a sample was
            measured at the landmark similarity, without ICP.
        landmark_check: :class:`LandmarkFitCheck` of the landmark fit (None for ``init="identity"``).
    """

    similarity: Similarity
    gt_indices: np.ndarray
    gt_distances: np.ndarray | None
    pred_indices: np.ndarray | None
    pred_distances: np.ndarray | None
    mean_mm: float
    median_mm: float
    rmse_mm: float
    n_landmarks: int
    icp: IcpInfo | None
    timings: dict
    warning: str = ""
    landmark_check: LandmarkFitCheck | None = None

    def summary(self) -> dict:
        """JSON-ready scalars (no per-vertex arrays)."""
        return {
            "mean_mm": self.mean_mm, "median_mm": self.median_mm, "rmse_mm": self.rmse_mm,
            "n_gt_vertices": len(self.gt_indices),
            "n_pred_vertices": None if self.pred_indices is None else len(self.pred_indices),
            "n_landmarks": self.n_landmarks, "scale": self.similarity.s,
            "rotation_deg": self.similarity.rotation_deg, "translation_mm": self.similarity.t.tolist(),
            "icp": None if self.icp is None else dataclasses.asdict(self.icp),
            "timings_s": dict(self.timings),
            "warning": self.warning,
            "landmark_check": None if self.landmark_check is None else self.landmark_check.to_dict(),
        }



def align_and_measure(pred_vertices, pred_faces, pred_landmarks, gt_vertices, gt_faces, gt_landmarks,
                      params: ScanAlignmentParams, *, prepared: PreparedMesh | None = None) -> ScanResult:
    """Align a prediction onto a ground-truth scan and measure scan-to-surface distances (one sample).

    Args:
        pred_vertices: ``(V, 3)`` mm, prediction frame. pred_faces: ``(F, 3)``.
        pred_landmarks: ``(L, 3)`` mm on the prediction (NaN rows skipped); may be None for
            ``init="identity"``.
        gt_vertices: ``(N, 3)`` mm, ground truth (scan) frame. gt_faces: ``(G, 3)``, needed only for
            the ``"pred_to_gt"`` and ``"symmetric"`` directions (else may be None).
        gt_landmarks: ``(L, 3)`` mm, same order as ``pred_landmarks``; needed for a landmark fit or crop.
        params: :class:`ScanAlignmentParams`.
        prepared: the prediction already prepared (:class:`PreparedMesh`), to share between protocols.

    Returns:
        :class:`ScanResult`.
    """
    timings: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    gt = points_array(gt_vertices, "ground-truth vertices")
    if not np.all(np.isfinite(gt)):
        raise AlignmentError("ground-truth vertices contain NaN or Inf")
    mesh = prepared if prepared is not None else PreparedMesh(pred_vertices, pred_faces)
    lap("prepare")
    center, radius = None, params.crop_radius_mm
    if params.crop_rule == "now":
        if gt_landmarks is None:
            raise AlignmentError("NoW's crop needs the ground-truth landmarks")
        center, radius = now_crop(gt_landmarks)
    elif radius is not None:
        center = crop_center(gt_landmarks, params.crop_center, gt, params.crop_search_mm)
    if center is None:
        kept = np.arange(len(gt), dtype=np.int64)
    else:
        kept = crop_sphere(gt, center, radius)
        if len(kept) < 3:
            raise AlignmentError(f"the crop ({radius:.6g} mm) keeps {len(kept)} ground-truth vertices")
    lap("crop")
    if params.init == "landmarks":
        if pred_landmarks is None or gt_landmarks is None:
            raise AlignmentError("landmark alignment needs predicted and ground-truth landmarks")
        similarity = landmark_similarity(pred_landmarks, gt_landmarks, with_scale=params.with_scale)
        n_landmarks = int(np.sum(np.all(np.isfinite(np.asarray(pred_landmarks, dtype=float)), axis=1)
                                 & np.all(np.isfinite(np.asarray(gt_landmarks, dtype=float)), axis=1)))
        check = landmark_fit_check(pred_landmarks, gt_landmarks, similarity, with_scale=params.with_scale,
                                   residual_limit=params.landmark_residual_limit)
    else:
        similarity, n_landmarks, check = Similarity.identity(), 0, None
    lap("landmarks")
    warning = "" if check is None else check.warning
    info = icp_distances = None
    if params.icp and not (warning and params.stop_implausible):
        similarity, info, icp_distances = _refine(
            mesh, gt[kept], similarity, max_iterations=params.max_iterations, tolerance=params.tolerance,
            max_correspondence_mm=params.max_correspondence_mm, with_scale=params.with_scale, method=params.method,
            max_points=params.icp_max_points, final=params.final)
    lap("icp")
    gt_d = pred_idx = pred_d = None
    if params.direction in ("gt_to_pred", "symmetric"):
        if icp_distances is None:
            gt_d = mesh.surface.closest_points(similarity.inverse().apply(gt[kept]))[0] * similarity.s
        else:  # the ICP's last evaluation is at this similarity: query only the points it did not use
            gt_d = icp_distances
            rest = np.flatnonzero(np.isnan(gt_d))
            if len(rest):
                gt_d[rest] = mesh.surface.closest_points(similarity.inverse().apply(gt[kept[rest]]))[0] * similarity.s
    if params.direction in ("pred_to_gt", "symmetric"):
        if gt_faces is None:
            raise AlignmentError(f"direction {params.direction!r} needs the ground-truth faces")
        moved = similarity.apply(mesh.vertices)
        pred_idx = (np.arange(len(moved), dtype=np.int64) if center is None
                    else crop_sphere(moved, center, radius))
        if len(pred_idx) == 0:
            raise AlignmentError("no aligned predicted vertex lies inside the crop sphere")
        pred_d = TriangleSurface(gt, gt_faces).closest_points(moved[pred_idx])[0]
    lap("distance")
    mean, median, rmse = metrics.scan_distance_stats(*(d for d in (gt_d, pred_d) if d is not None))
    timings["total"] = time.perf_counter() - start
    return ScanResult(similarity, kept, gt_d, pred_idx, pred_d, mean, median, rmse, n_landmarks, info, timings,
                      warning, check)
