"""Every error metric of facebench (docs/metrics.md), and their aggregation (bootstrap CIs, |yaw| bins).

This module is the one definition of each error: ``facebench score``
(:mod:`facebench.benchmark.scoring`, :mod:`facebench.benchmark.align`), the baselines' training
validation (``ramon2019.predict.evaluate``, ``tewari2018.training.evaluate_multilevel``) and the
multi-level evaluations (``tewari2018.evaluations``) all call these functions.

Geometry (head frame, millimetres; camera ``(q, t, K)`` as :mod:`facebench.conventions`):

- shape error, corresponding topology: per vertex ``‖x̂_n − x_n‖`` (mm), per sample their mean
  over the vertices (:func:`per_vertex_error_mm`, :func:`shape_error_mm`);
- scan distances (scan protocols): mean, median and RMS of a set of scan-to-surface distances
  (:func:`scan_distance_stats`);
- camera translation error ``‖t − t̂‖`` reported in **cm** (:func:`translation_error_cm`);
- camera rotation error ``2 acos(|<q, q̂>|)`` in degrees (:func:`rotation_error_deg`);
- reprojection error: ``mean_n ‖P(q,t)(x_n) − P(q̂,t̂)(x̂_n)‖`` in pixels (:func:`reprojection_error_px`);
- 2D landmark error: ``mean_k ‖û_k − u_k‖`` in pixels (:func:`landmark_error_px`).

Images (``(B, H, W, 3)`` linear RGB in [0, 1], a ``(B, H, W)`` bool mask):

- photometric error: mean over the mask of the per-pixel Euclidean RGB distance (:func:`photometric_error`);
- reflectance error: the same after removing the global mean RGB shift (:func:`reflectance_error`).

**numpy or torch.** Every metric takes numpy arrays (or anything ``np.asarray`` takes) or torch
tensors. With numpy inputs only, it computes in numpy float64 and returns numpy (python floats for
:func:`scan_distance_stats`). With at least one tensor, it computes in torch on the device and
dtype of the first tensor argument (non-tensor inputs are converted to them, integer tensors to
the default float dtype; float tensors are used as given) and returns tensors, differentiable, so
training code can validate on the GPU or build a loss on them. Each formula is written once, over
a small backend (:class:`_NumpyOps` / :class:`_TorchOps`); tests check that both paths agree to
1e-12 in float64. Unlike :mod:`facebench.conventions`, numpy inputs are not routed through torch:
the numpy path is the scores' reference and keeps their float64 operation order bit for bit
(reductions in torch sum in another order).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from facebench import conventions
from facebench.lazy_torch import is_tensor, torch


# ---------------------------------------------------------------------------- numpy/torch backends
class _NumpyOps:
    """numpy float64 operations (the order of operations is the scores' bit-for-bit reference)."""

    torch = False

    @staticmethod
    def array(x):
        return np.asarray(x, np.float64)

    @staticmethod
    def mask(x):
        return np.asarray(x, bool)

    @staticmethod
    def norm(x):
        """Euclidean norm over the last axis."""
        return np.linalg.norm(x, axis=-1)

    @staticmethod
    def mean(x, axis=-1):
        return x.mean(axis=axis)

    @staticmethod
    def sum(x, axis, keepdims=False):
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def median(x):
        return np.median(x)

    @staticmethod
    def where(condition, x, y):
        return np.where(condition, x, y)

    @staticmethod
    def as_dtype(mask, like):
        return mask.astype(like.dtype)


class _TorchOps:
    """torch operations on the device and dtype of the first tensor argument."""

    torch = True

    def __init__(self, ref: torch.Tensor):
        self.device = ref.device
        self.dtype = ref.dtype if ref.dtype.is_floating_point else torch.get_default_dtype()

    def array(self, x):
        if is_tensor(x):
            return x if x.dtype.is_floating_point else x.to(self.dtype)
        x = np.asarray(x)
        return torch.as_tensor(x if x.flags.writeable else x.copy(), dtype=self.dtype, device=self.device)

    def mask(self, x):
        if is_tensor(x):
            return x.to(device=self.device, dtype=torch.bool)
        return torch.as_tensor(np.asarray(x, bool), device=self.device)

    @staticmethod
    def norm(x):
        return torch.linalg.vector_norm(x, dim=-1)

    @staticmethod
    def mean(x, axis=-1):
        return x.mean(dim=axis)

    @staticmethod
    def sum(x, axis, keepdims=False):
        return x.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def median(x):
        """numpy's median (the mean of the two middle values for an even count; NaN when empty),
        not ``torch.median`` (the lower one)."""
        x = x.reshape(-1)
        if x.numel() == 0:
            return x.new_tensor(float("nan"))
        s = torch.sort(x).values
        n = s.numel()
        return (s[(n - 1) // 2] + s[n // 2]) / 2

    @staticmethod
    def where(condition, x, y):
        return torch.where(condition, x, y)

    @staticmethod
    def as_dtype(mask, like):
        return mask.to(like.dtype)


def _ops(*args) -> Any:
    """The backend of a call: torch if any argument is a tensor, else numpy float64."""
    for a in args:
        if is_tensor(a):
            return _TorchOps(a)
    return _NumpyOps


# ---------------------------------------------------------------------------- shape
def per_vertex_error_mm(vertices, predicted):
    """Per-vertex Euclidean distances ``(..., V)`` mm of ``predicted (..., V, 3)`` to ``vertices (..., V, 3)``.

    Both in the head frame, mm, same topology (vertex n matches vertex n). Used for heat maps and
    regional re-aggregation; :func:`shape_error_from_per_vertex` reduces it to the shape error.
    """
    xp = _ops(vertices, predicted)
    return xp.norm(xp.array(predicted) - xp.array(vertices))


def shape_error_from_per_vertex(errors):
    """Shape error ``(...,)`` mm: the mean over the vertices of per-vertex errors ``(..., V)``
    (:func:`per_vertex_error_mm`), for callers that keep the per-vertex errors as well."""
    xp = _ops(errors)
    return xp.mean(xp.array(errors), axis=-1)


def shape_error_mm(vertices, predicted):
    """Shape error, corresponding topology: mean per-vertex Euclidean distance ``(...,)`` mm of
    ``predicted (..., V, 3)`` to ``vertices (..., V, 3)``, head frame, mm (``(N,)`` for a batch)."""
    return shape_error_from_per_vertex(per_vertex_error_mm(vertices, predicted))


class DistanceStats(NamedTuple):
    """Aggregates of scan-to-surface distances (mm): see :func:`scan_distance_stats`."""

    mean_mm: Any
    median_mm: Any
    rmse_mm: Any


def scan_distance_stats(*distances) -> DistanceStats:
    """Mean, median and RMS (mm) of one set of scan-to-surface distances ``(K,)`` mm, or of several.

    One set (directions ``gt_to_pred`` and ``pred_to_gt``): its mean, median and root mean square.
    Several sets (direction ``symmetric`` gives both sides): the mean of their means, the mean of
    their medians, and the root of the mean of their mean squares. Distances are in the ground
    truth's mm (:func:`facebench.benchmark.align.align_and_measure`). numpy inputs give python
    floats, tensors give 0-d tensors.
    """
    if not distances:
        raise ValueError("scan_distance_stats needs at least one set of distances")
    xp = _ops(*distances)
    sides = []
    for d in distances:
        d = xp.array(d)
        sides.append((xp.mean(d, axis=None), xp.median(d), xp.mean(d * d, axis=None)))
    if not xp.torch:
        return DistanceStats(float(np.mean([float(s[0]) for s in sides])),
                             float(np.mean([float(s[1]) for s in sides])),
                             math.sqrt(float(np.mean([float(s[2]) for s in sides]))))
    mean, median, square = (torch.stack([s[i] for s in sides]).mean() for i in range(3))
    return DistanceStats(mean, median, torch.sqrt(square))


def pooled_distance_stats(distance_sets) -> dict[str, float | int | None]:
    """NoW's aggregation: median, mean and standard deviation of every distance of every scan pooled.

    NoW's evaluator (``cumulative_errors.py`` in ``soubhiksanyal/now_evaluation``) stacks the
    distance arrays of all scans into one array and reports ``np.median``, ``np.mean`` and
    ``np.std`` of it (population std, ddof 0), so a scan with many cropped vertices weighs more
    than one with few, unlike the per-sample mean. Empty sets (unscored samples) add nothing.

    Args:
        distance_sets: iterable of ``(K_i,)`` distance arrays (mm).

    Returns:
        ``{"median_mm", "mean_mm", "std_mm", "n_distances", "n_sets"}`` (None values when no distance).
    """
    sets = [np.asarray(d, np.float64).ravel() for d in distance_sets]
    sets = [d for d in sets if len(d)]
    if not sets:
        return {"median_mm": None, "mean_mm": None, "std_mm": None, "n_distances": 0, "n_sets": 0}
    pooled = np.concatenate(sets)
    return {"median_mm": float(np.median(pooled)), "mean_mm": float(pooled.mean()), "std_mm": float(pooled.std()),
            "n_distances": int(len(pooled)), "n_sets": len(sets)}


# ---------------------------------------------------------------------------- camera
def translation_error_cm(t, t_hat):
    """``‖t − t̂‖`` ``(...,)`` in **cm** of camera translations ``t, t̂ (..., 3)`` in mm
    (head → camera, :mod:`facebench.conventions`)."""
    xp = _ops(t, t_hat)
    return xp.norm(xp.array(t) - xp.array(t_hat)) / 10.0


def rotation_error_deg(q, q_hat):
    """Rotation angle ``(...,)`` in degrees between camera rotations ``q, q̂ (..., 4)`` (unit
    quaternions w, x, y, z; sign does not matter): ``2 acos(|<q, q̂>|)``, computed as
    :func:`facebench.conventions.rotation_error_deg`."""
    xp = _ops(q, q_hat)
    if xp.torch:
        return conventions.rotation_error_deg(xp.array(q), xp.array(q_hat))
    return np.asarray(conventions.rotation_error_deg(xp.array(q), xp.array(q_hat)))


# ---------------------------------------------------------------------------- pixels
def _mean_pixel_distance(xp, points, predicted):
    return xp.mean(xp.norm(predicted - points), axis=-1)


def landmark_error_px(landmarks, predicted, *, valid=None):
    """2D landmark error ``(N,)`` px: mean over the landmarks of ``‖û_k − u_k‖``.

    Args:
        landmarks: ``(N, L, 2)`` target pixels (pixel centres at integer coordinates).
        predicted: ``(N, L, 2)`` predicted pixels, same landmark order.
        valid: optional bool mask of the landmarks to average: ``(L,)`` (the same for every sample,
            e.g. those a face model defines) or ``(N, L)`` (per sample; a sample with none valid
            gives NaN). Landmarks outside the mask may hold NaN.
    """
    xp = _ops(landmarks, predicted, *(() if valid is None else (valid,)))
    landmarks, predicted = xp.array(landmarks), xp.array(predicted)
    if valid is None:
        return _mean_pixel_distance(xp, landmarks, predicted)
    valid = xp.mask(valid)
    diff = predicted - landmarks
    if valid.ndim == 1:
        return xp.mean(xp.norm(diff[:, valid]), axis=1)
    # masked before the norm, so that NaN outside the mask cannot reach a gradient
    distance = xp.norm(xp.where(valid[..., None], diff, 0.0))
    return xp.sum(distance, axis=-1) / xp.sum(xp.as_dtype(valid, distance), axis=-1)


def reprojection_error_px(vertices, q, t, predicted, q_hat, t_hat, K):
    """Reprojection error ``(N,)`` px: mean over the vertices of the pixel distance between the
    ground truth ``vertices (N, V, 3)`` (head frame, mm) projected with its camera ``(q (N,4),
    t (N,3))`` and the prediction ``predicted (N, V, 3)`` projected with the predicted camera
    ``(q̂, t̂)``; intrinsics ``K (3,3)`` or ``(N,3,3)`` (:func:`facebench.conventions.project`)."""
    xp = _ops(vertices, q, t, predicted, q_hat, t_hat, K)
    vertices, q, t, predicted, q_hat, t_hat, K = (xp.array(a) for a in (vertices, q, t, predicted, q_hat, t_hat, K))
    gt = conventions.project(vertices, q, t, K)
    pred = conventions.project(predicted, q_hat, t_hat, K)
    return _mean_pixel_distance(xp, gt, pred)


# ---------------------------------------------------------------------------- images
def _check_images(pred, target, mask) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(f"images must both be (B, H, W, 3), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if tuple(mask.shape) != tuple(pred.shape[:3]):
        raise ValueError(f"mask must be {tuple(pred.shape[:3])}, got {tuple(mask.shape)}")


def _photometric(xp, rendered, target, mask):
    m = xp.as_dtype(mask, rendered)
    distance = xp.norm(rendered - target)
    return xp.sum(distance * m, axis=(1, 2)) / xp.sum(m, axis=(1, 2))


def photometric_error(rendered, target, mask):
    """Photometric error ``(B,)``: mean over the mask of the per-pixel Euclidean RGB distance
    ``‖rendered − target‖``.

    ``rendered``, ``target`` ``(B, H, W, 3)`` linear RGB in [0, 1]; ``mask (B, H, W)`` bool (the
    pixels to compare, e.g. the face mask). An empty mask gives NaN for that image (nothing to
    measure). Differentiable in ``rendered`` and ``target`` for tensors.
    """
    xp = _ops(rendered, target, mask)
    rendered, target, mask = xp.array(rendered), xp.array(target), xp.mask(mask)
    _check_images(rendered, target, mask)
    return _photometric(xp, rendered, target, mask)


def reflectance_error(pred, gt, mask):
    """Reflectance error ``(B,)``: the photometric error after removing the global shift.

    ``shift_b = mean over the mask of (gt − pred)`` (one RGB value per image), then the mean over
    the mask of ``‖pred + shift − gt‖``: invariant to adding one RGB constant to the prediction
    (``pred = gt + constant`` gives 0). ``pred``, ``gt`` ``(B, H, W, 3)`` reflectance rendered as
    unlit colours in [0, 1], ``mask (B, H, W)`` bool; shapes and NaN as :func:`photometric_error`.
    """
    xp = _ops(pred, gt, mask)
    pred, gt, mask = xp.array(pred), xp.array(gt), xp.mask(mask)
    _check_images(pred, gt, mask)
    m = xp.as_dtype(mask, pred)[..., None]
    shift = xp.sum((gt - pred) * m, axis=(1, 2), keepdims=True) / xp.sum(m, axis=(1, 2), keepdims=True)
    return _photometric(xp, pred + shift, gt, mask)


# ---------------------------------------------------------------------------- aggregation
def yaw_bin_names(edges) -> list[str]:
    """Bin labels in increasing order: ``"[a,b)"``, the last one closed ``"[a,b]"``."""
    edges = np.asarray(edges, np.float64)
    names = [f"[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 2)]
    names.append(f"[{edges[-2]:g},{edges[-1]:g}]")
    return names


def yaw_bin_labels(yaw_deg, edges) -> list[str]:
    """Label (see :func:`yaw_bin_names`) of the |yaw| bin of each sample; ``"out"`` for |yaw|
    beyond the last edge."""
    edges = np.asarray(edges, np.float64)
    names = yaw_bin_names(edges)
    yaw = np.abs(np.asarray(yaw_deg, np.float64))
    index = np.searchsorted(edges, yaw, side="right") - 1
    index = np.where(yaw == edges[-1], len(edges) - 2, index)
    return [names[i] if 0 <= i < len(names) else "out" for i in index]


def bootstrap_mean_ci(values, *, resamples: int = 2000, seed: int = 0, level: float = 0.95,
                      chunk: int = 256) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of the mean of ``values`` (NaN
    ignored). Deterministic for a seed. ``(nan, nan)`` for no values; ``(v, v)`` for one."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (float("nan"), float("nan"))
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, len(x), size=(stop - start, len(x)))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def describe(values, *, resamples: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """Aggregates of one metric: n, mean, median, std, min, max, 95% CI of the mean (NaN ignored)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None,
                "ci95_low": None, "ci95_high": None}
    low, high = bootstrap_mean_ci(x, resamples=resamples, seed=seed)
    return {
        "n": int(len(x)),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "ci95_low": low,
        "ci95_high": high,
    }
