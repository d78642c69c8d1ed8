"""Mirror images of synthetic samples (``facebench synth generate --symmetrize``).

The mirror of a scene is its reflection ``x -> -x`` in the head frame (``M = diag(-1, 1, 1)``)
and in the camera frame: the mirrored image is the horizontal flip of the original. A mirrored face
needs a vertex correspondence (vertex ``i`` of the mirror is ``M x[perm[i]]``), a mirrored pose and
mirrored spherical-harmonics light; this module gives the three.
"""

from __future__ import annotations

import numpy as np

from facebench import conventions as cv

__all__ = ["MIRROR", "mirror_correspondence", "mirror_pose", "mirror_sh"]

#: SH coefficients that change sign under x -> -x (H_3 ~ x, H_4 ~ xy, H_7 ~ xz).
_SH_X_ODD = (3, 4, 7)
#: The head-frame mirror ``M = diag(-1, 1, 1)`` (x -> -x), as a row to multiply points by.
MIRROR = np.array([-1.0, 1.0, 1.0])


def mirror_correspondence(model) -> tuple[np.ndarray, float]:
    """``perm (V,)`` with vertex i of a mirrored face = ``M x[perm[i]]`` (``M = diag(-1,1,1)``),
    and the largest distance (mm) between ``M mean[perm]`` and ``mean``.

    The procedural model uses its exact :func:`~facebench.models.procedural.mirror_permutation`;
    other models use the nearest vertex of the mirrored mean (not a bijection in general; the
    error is reported in the dataset attributes).
    """
    mean = model.mean.astype(np.float64)
    perm = None
    if model.name == "synthetic":
        from facebench.models.procedural import mirror_permutation

        candidate = mirror_permutation()
        if candidate.shape == (len(mean),) and np.array_equal(mean[candidate] * MIRROR, mean):
            perm = candidate
    if perm is None:
        from scipy.spatial import cKDTree

        _, perm = cKDTree(mean).query(mean * MIRROR)
        perm = np.asarray(perm, np.int64)
    error = float(np.linalg.norm(mean[perm] * MIRROR - mean, axis=1).max())
    return perm, error


def mirror_pose(q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose of the mirrored scene: ``R' = N R(q) M``, ``t' = N t`` (``N = M = diag(-1,1,1)``);
    q' with w >= 0. Head angles become (-yaw, pitch, -roll)."""
    R = cv.quat_to_matrix(np.asarray(q, np.float64))
    R_m = R * MIRROR[:, None] * MIRROR[None, :]
    return cv.matrix_to_quat(R_m), np.asarray(t, np.float64) * MIRROR


def mirror_sh(sh: np.ndarray) -> np.ndarray:
    """SH light ``(..., 9, 3)`` of the mirrored scene (camera x -> -x): x-odd terms negated."""
    out = np.array(sh, copy=True)
    out[..., list(_SH_X_ODD), :] *= -1
    return out

