"""Small geometric routines shared across facebench (similarity fits, normals).

Frames and units are the caller's: these functions only relate point sets.
"""

from __future__ import annotations

import numpy as np


def similarity_from_correspondences(source, target, *, with_scale: bool = True, weights=None):
    """Least-squares similarity (Umeyama 1991) mapping ``source`` onto ``target``; never a reflection.

    Finds ``s, R, t`` minimizing ``sum_i w_i ||s R source_i + t - target_i||^2`` with ``R`` a proper
    rotation (``det R = +1``): when the best orthogonal fit would be a reflection the sign of the
    smallest singular direction is flipped, so a mirrored shape is fitted as what it is.

    Args:
        source, target: ``(N, 3)`` corresponding points, N >= 3 (non-collinear).
        with_scale: fit ``s`` (similarity) or keep ``s = 1`` (rigid).
        weights: optional ``(N,)`` non-negative weights.

    Returns:
        ``(s, R, t)``: float, ``(3,3)``, ``(3,)`` float64, so that ``target ≈ s * source @ R.T + t``.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"need two (N,3) arrays with N >= 3, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_src, mu_dst = w @ src, w @ dst
    a, b = src - mu_src, dst - mu_dst
    cov = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[2] = -1.0
    R = U @ np.diag(d) @ Vt
    var_src = float(w @ np.sum(a * a, axis=1))
    s = float((S * d).sum() / var_src) if with_scale else 1.0
    t = mu_dst - s * R @ mu_src
    return s, R, t


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` of a triangle mesh (counter-clockwise faces)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    # bincount is much faster than np.add.at; corner-major order keeps add.at's summation order
    # (so the procedural model's bytes do not depend on which of the two is used)
    corners = f.T.reshape(-1)
    normals = np.stack([np.bincount(corners, np.tile(face_normals[:, k], 3), minlength=len(v))
                        for k in range(3)], axis=1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.where(length > 0, length, 1.0)
