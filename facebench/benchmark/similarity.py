"""Similarity transforms ``S(p) = s R p + t`` that never reflect, and the landmark fit that starts
every scan alignment.

- :class:`Similarity`: scale ``s > 0``, proper rotation ``R`` (``det R = +1``, checked on creation)
  and translation ``t`` (mm); apply, invert, compose as a 4x4 matrix.
- :func:`landmark_similarity`: the least-squares (Umeyama) similarity or rigid transform mapping
  predicted landmarks onto ground-truth ones (NaN landmarks skipped; a reflection is never returned).
- :class:`AlignmentError`: a prediction that cannot be aligned as a protocol asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facebench.errors import FacebenchError
from facebench.geometry import similarity_from_correspondences

__all__ = ["AlignmentError", "Similarity", "landmark_similarity", "points_array", "check_spread",
           "LandmarkFitCheck", "landmark_fit_check", "LANDMARK_RESIDUAL_LIMIT", "REFLECTION_RATIO",
           "REFLECTION_MARGIN_MM"]

#: A landmark fit whose RMS residual exceeds this fraction of the ground-truth landmarks' RMS
#: radius (distance from their centroid) is implausible (:func:`landmark_fit_check`).
LANDMARK_RESIDUAL_LIMIT = 0.3
#: The best fit is called a reflection when the best reflecting fit's RMS residual is below this
#: fraction of the proper fit's ...
REFLECTION_RATIO = 0.5
#: ... and at least this much (mm) below it (near-planar landmark sets fit a reflection as well).
REFLECTION_MARGIN_MM = 0.5


class AlignmentError(FacebenchError):
    """A prediction cannot be aligned as the protocol asks (too few landmarks, empty crop...)."""


@dataclass(frozen=True, eq=False)
class Similarity:
    """``x ↦ s R x + t`` (prediction → ground truth): ``s > 0`` float, ``R (3,3)`` with det +1, ``t (3,)`` mm."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64).reshape(3, 3)
        t = np.array(self.t, dtype=np.float64).reshape(3)
        s = float(self.s)
        if not (math.isfinite(s) and s > 0):
            raise AlignmentError(f"similarity scale must be finite and > 0, got {s}")
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise AlignmentError("similarity has NaN or Inf entries")
        if np.abs(R.T @ R - np.eye(3)).max() > 1e-6:
            raise AlignmentError("similarity rotation is not orthonormal")
        if np.linalg.det(R) <= 0:
            raise AlignmentError("alignment produced a reflection (det R < 0); reflections are never accepted")
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "s", s)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @classmethod
    def identity(cls) -> Similarity:
        return cls(1.0, np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix) -> Similarity:
        """From a 4×4 ``[[s R, t], [0, 1]]``; raises AlignmentError on a reflection or a shear."""
        M = np.asarray(matrix, dtype=np.float64)
        A = M[:3, :3]
        det = np.linalg.det(A)
        if not det > 0:
            raise AlignmentError(f"alignment produced a reflection or a collapse (det = {det:.3g}); refused")
        s = float(np.cbrt(det))
        return cls(s, A / s, M[:3, 3])

    def apply(self, points) -> np.ndarray:
        """``(..., 3)`` points → ``s R p + t`` (float64)."""
        p = np.asarray(points, dtype=np.float64)
        return self.s * p @ self.R.T + self.t

    def inverse(self) -> Similarity:
        return Similarity(1.0 / self.s, self.R.T, -(self.R.T @ self.t) / self.s)

    def matrix(self) -> np.ndarray:
        """``(4, 4)`` homogeneous matrix."""
        M = np.eye(4)
        M[:3, :3] = self.s * self.R
        M[:3, 3] = self.t
        return M

    @property
    def rotation_deg(self) -> float:
        """Angle of ``R`` in degrees."""
        return math.degrees(math.acos(float(np.clip((np.trace(self.R) - 1.0) / 2.0, -1.0, 1.0))))

    def to_dict(self) -> dict:
        return {"s": self.s, "R": self.R.tolist(), "t": self.t.tolist()}


def points_array(x, what: str) -> np.ndarray:
    """``x`` as finite-or-NaN ``(N, 3)`` float64 points; AlignmentError naming ``what`` otherwise."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must be (N,3), got {a.shape}")
    return a


def check_spread(points: np.ndarray, what: str) -> None:
    """AlignmentError when ``points (N, 3)`` are (nearly) collinear: no rotation is defined by them."""
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if sv[0] <= 1e-9 or sv[1] <= 1e-6 * sv[0]:
        raise AlignmentError(f"the {what} landmarks used for alignment are collinear or coincident")


def landmark_similarity(pred_landmarks, gt_landmarks, *, with_scale: bool = True) -> Similarity:
    """Similarity (or rigid) fit mapping predicted landmarks onto ground-truth ones; never a reflection.

    Args:
        pred_landmarks: ``(L, 3)`` mm in the prediction's frame; NaN rows are skipped.
        gt_landmarks: ``(L, 3)`` mm in the ground truth's frame, same order; NaN rows are skipped.
        with_scale: fit the scale (similarity) or keep ``s = 1`` (rigid).

    Returns:
        :class:`Similarity` with ``gt ≈ S(pred)`` in the least-squares sense.

    Raises:
        ValueError: shapes differ. AlignmentError: fewer than 3 landmarks present in both, or collinear.
    """
    p = points_array(pred_landmarks, "predicted landmarks")
    g = points_array(gt_landmarks, "ground-truth landmarks")
    if p.shape != g.shape:
        raise ValueError(f"predicted landmarks {p.shape} and ground-truth landmarks {g.shape} differ in shape")
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(g), axis=1)
    if ok.sum() < 3:
        raise AlignmentError(f"landmark alignment needs >= 3 landmarks present in both prediction and ground "
                             f"truth, got {int(ok.sum())} of {len(p)}")
    check_spread(p[ok], "predicted")
    check_spread(g[ok], "ground-truth")
    s, R, t = similarity_from_correspondences(p[ok], g[ok], with_scale=with_scale)
    return Similarity(s, R, t)



@dataclass(frozen=True)
class LandmarkFitCheck:
    """Plausibility of a landmark fit (ground-truth mm).

    Attributes:
        rms_mm: RMS landmark residual of the (proper) fit used.
        reflected_rms_mm: RMS residual of the best fit that includes a reflection (never used; a
            diagnostic: far below ``rms_mm`` means the prediction's left and right are swapped).
        radius_mm: RMS distance of the ground-truth landmarks from their centroid.
        warning: "" or the reason the fit is suspect.
    """

    rms_mm: float
    reflected_rms_mm: float
    radius_mm: float
    warning: str

    def to_dict(self) -> dict:
        return {"rms_mm": self.rms_mm, "reflected_rms_mm": self.reflected_rms_mm, "radius_mm": self.radius_mm,
                "warning": self.warning}


def landmark_fit_check(pred_landmarks, gt_landmarks, similarity: Similarity, *, with_scale: bool = True,
                       residual_limit: float | None = LANDMARK_RESIDUAL_LIMIT) -> LandmarkFitCheck:
    """Check a landmark fit: is its best fit a reflection (left/right swapped), is its residual implausible?

    The reflected fit is the proper fit of the predicted landmarks mirrored through x = 0 (every
    reflection is one mirror followed by a proper rotation). Warnings (see the module constants):
    ``"reflection"`` when the reflected residual is below :data:`REFLECTION_RATIO` times the proper
    one and :data:`REFLECTION_MARGIN_MM` below it; ``"implausible landmark residual"`` when the
    proper residual exceeds ``residual_limit`` times the ground-truth landmarks' RMS radius.

    Args:
        pred_landmarks, gt_landmarks: ``(L, 3)`` as given to :func:`landmark_similarity` (NaN rows skipped).
        similarity: the fit :func:`landmark_similarity` returned for them.
        with_scale: as for that fit. residual_limit: relative limit, or None for no residual check.
    """
    p = points_array(pred_landmarks, "predicted landmarks")
    g = points_array(gt_landmarks, "ground-truth landmarks")
    ok = np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(g), axis=1)
    p, g = p[ok], g[ok]
    rms = float(np.sqrt(np.mean(np.sum((similarity.apply(p) - g) ** 2, axis=1))))
    mirrored = p * np.array([-1.0, 1.0, 1.0])
    s, R, t = similarity_from_correspondences(mirrored, g, with_scale=with_scale)
    reflected = float(np.sqrt(np.mean(np.sum((s * mirrored @ R.T + t - g) ** 2, axis=1))))
    radius = float(np.sqrt(np.mean(np.sum((g - g.mean(axis=0)) ** 2, axis=1))))
    warnings = []
    if reflected < REFLECTION_RATIO * rms and rms - reflected > REFLECTION_MARGIN_MM:
        warnings.append(f"reflection: the landmarks fit a mirror image far better (RMS {reflected:.2f} mm against "
                        f"{rms:.2f} mm without reflection); left and right look swapped")
    if residual_limit is not None and rms > residual_limit * radius:
        warnings.append(f"implausible landmark residual: RMS {rms:.2f} mm after the "
                        f"{'similarity' if with_scale else 'rigid fit'}, above {residual_limit:g} x the landmarks' "
                        f"{radius:.1f} mm RMS radius")
    return LandmarkFitCheck(rms, reflected, radius, "; ".join(warnings))
