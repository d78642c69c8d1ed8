"""The five pose/shape losses of Ramon et al. 2019, in facebench's conventions (torch, batched).

Every loss has the signature ``loss(x_hat, q_hat, t_hat, x, q, t, K, **params) -> Tensor (B,)``
and returns one value per sample (the caller averages over the batch):

- ``x_hat``, ``x`` ``(B, N, 3)``: predicted / ground-truth shape, mm, **head frame**;
- ``q_hat``, ``q`` ``(B, 4)``: rotations (w, x, y, z) of the head → camera pose;
- ``t_hat``, ``t`` ``(B, 3)``: translations, mm, of the same pose: ``x_cam = R(q) x + t``;
- ``K`` ``(3, 3)`` or ``(B, 3, 3)``: intrinsics in pixels (integer pixels are pixel centres).

All inputs are converted to ``x_hat``'s dtype and device; the losses run on CPU or CUDA and are
differentiable with respect to ``x_hat``, ``q_hat`` and ``t_hat``.

Formulas (docs/losses.md), with ``E = [R(q) | t]``, ``Ê = [R(q̂) | t̂]``,
``P(q, t)(x) = π(K (R(q) x + t))`` and every ``mean`` taken over points **and** coordinates:

- **Coarse**: ``mean((x − x̂)²) + α · mean(([q, t] − [q̂, t̂])²)`` (the pose mean is over the 7
  numbers of ``[q, t]``).
- **XQT**: ``mean((x − x̂)²) + β · mean((q − q̂)²) + γ · mean((t − t̂)²)``.
- **GAL** (geometric alignment): ``mean(|E x − Ê x̂|)``, both shapes in the camera frame, mm, ℓ1.
- **SRL** (shape reprojection): ``mean(|P(q, t)(x) − P(q̂, t̂)(x̂)|)``, pixels, ℓ1 over (u, v).
- **MRL** (multiview reprojection): ``(1/V) Σ_v mean(|P(q_v, t_v)(x) − P(q_v, t_v)(D x̂)|)`` with
  ``D = E⁻¹ Ê``: the prediction goes to the camera frame by its own pose and back to the
  **ground-truth** head frame by the inverse ground-truth pose, ``D x̂ = R(q)ᵀ (R(q̂) x̂ + t̂ − t)``.
  The virtual cameras ``(q_v, t_v)`` are poses of that head frame: given as ``views (B, V, 7)``
  = (q_v (4), t_v (3)), or sampled per sample and call (:func:`sample_views`):
  ``q_v = pose_from_angles(yaw, pitch, 0)`` with yaw ~ U(``yaw_range``), pitch ~ U(``pitch_range``)
  (degrees, defaults (−90, 90) and (−45, 45)), ``t_v = (0, 0, ‖t‖)``: the camera looks at the
  head origin from the ground-truth camera distance, with the same ``K``. The paper gives no view
  distribution; this one is ours.

What facebench does about the details:

- **q̂ normalization.** GAL, SRL and MRL use ``R(q̂ / ‖q̂‖)`` (:func:`facebench.conventions.
  quat_to_matrix` normalizes), so q̂ need not be unit; a q̂ with ``‖q̂‖ < 1e-12`` is replaced
  by the identity (finite loss, zero gradient to q̂) instead of giving NaN. Coarse and XQT
  compare q̂ **as given**, unnormalized, as the paper's formulas do (the regressor normalizes q̂
  with a layer).
- **Quaternion sign (Coarse, XQT).** q and −q are the same rotation, and facebench stores ground
  truth with w ≥ 0. In facebench's camera convention the frontal pose is ``q = (0, 1, 0, 0)``,
  i.e. w = 0: the canonical sign flips between pitch up and pitch down, so the literal
  ``(q − q̂)²`` would ask a regressor to jump between ``x ≈ +1`` and ``x ≈ −1`` for nearly
  identical images. With ``sign_invariant=True`` (default) the ground-truth q is first flipped into
  the hemisphere of q̂ (``q ← −q`` where ``⟨q, q̂⟩ < 0``), i.e. the quaternion term is
  ``min over ±q`` of the paper's term; it is exactly the paper's term whenever q and q̂ lie in the
  same hemisphere. ``sign_invariant=False`` gives the literal formula on q as passed.
- **Depth.** Projections divide by ``max(Z, 1e-3 mm)`` so a point at or behind a camera gives a
  large finite loss, never inf/NaN; points in front of the camera are unaffected.
- **MRL invariance.** GAL and SRL depend on the camera-frame points only, so they are invariant to
  the choice of head frame (rigid ``T`` applied to x and x̂ with the poses compensated,
  ``E ← E T⁻¹``). MRL is invariant too when the virtual views are expressed in the new frame
  (``E_v ← E_v T⁻¹``). *Sampled* views are defined from the head frame's origin and axes (they
  look at the origin, yaw/pitch about its axes), so with sampled views MRL's distribution depends
  on the model's head frame: a model whose origin is far from the face gives other views.
  Coarse and XQT compare head-frame coordinates and pose parameters, so they are not invariant.

Differences from the authors' reference TF1 code (github.com/eduardramon/hyperparams-free-3D-losses,
read for comparison only; nothing copied):

- Its SRL and MRL use **squared** pixel errors (``tf.square``); the paper's equations use absolute
  errors; facebench follows the paper (ℓ1). Its GAL is ℓ1, like here.
- It reads ``(q, t)`` as a **camera pose** (composes ``K P_v P_true P_pred⁻¹`` for MRL); facebench's
  ``(q, t)`` is the head → camera extrinsic, so the same geometry is ``D = E⁻¹ Ê`` here.
- Its tests and example use ``K = identity``, which hides any error in how pixels scale with the
  focal length; facebench's tests use a focal of 1000 px and a principal point of (111.5, 111.5).
- Its XQT fixes the shape weight to 1 (as here: only β and γ are free); the normalization by
  ``α + β + γ`` mentioned in its comment is not applied, here neither.
- Its virtual views come with the data (concatenated to the targets); here they are sampled
  by the loss from a ``torch.Generator`` (deterministic when seeded) or given as ``views``.

Weights of the multiterm losses: :func:`ramon2019_scale_weights` derives α, β, γ from a training
set so that each weighted pose term has the shape term's magnitude (see its docstring); the HPO
searches 0.1×–10× around them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench import conventions as cv
from facebench.errors import FacebenchError

__all__ = [
    "coarse",
    "xqt",
    "gal",
    "srl",
    "mrl",
    "sample_views",
    "LOSSES",
    "get_loss",
    "required_params",
    "optional_params",
    "check_params",
    "make_loss",
    "target_variances",
    "ramon2019_scale_weights",
]

#: Quaternions with a smaller norm are replaced by the identity in GAL/SRL/MRL (no NaN).
_MIN_QUAT_NORM = 1e-12
#: Depths (mm) below this are clamped before the perspective division (no inf/NaN).
_MIN_DEPTH = 1e-3


# ---------------------------------------------------------------------------- input handling
def _prepare(x_hat, q_hat, t_hat, x, q, t, K):
    """Check shapes; return tensors in ``x_hat``'s dtype/device, with ``K`` as ``(B, 3, 3)``."""
    if not isinstance(x_hat, torch.Tensor):
        x_hat = torch.as_tensor(np.asarray(x_hat, dtype=np.float64))
    dtype = x_hat.dtype if x_hat.dtype.is_floating_point else torch.get_default_dtype()
    x_hat = x_hat.to(dtype)

    def conv(a):
        if isinstance(a, torch.Tensor):
            return a.to(device=x_hat.device, dtype=dtype)
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=x_hat.device)

    q_hat, t_hat, x, q, t, K = (conv(a) for a in (q_hat, t_hat, x, q, t, K))
    if x_hat.ndim != 3 or x_hat.shape[-1] != 3 or x.shape != x_hat.shape:
        raise ValueError(f"x_hat and x must both be (B, N, 3); got {tuple(x_hat.shape)} and {tuple(x.shape)}")
    B = x_hat.shape[0]
    for name, value, width in (("q_hat", q_hat, 4), ("q", q, 4), ("t_hat", t_hat, 3), ("t", t, 3)):
        if tuple(value.shape) != (B, width):
            raise ValueError(f"{name} must be ({B}, {width}) for a batch of {B}; got {tuple(value.shape)}")
    if K.shape == (3, 3):
        K = K.expand(B, 3, 3)
    elif tuple(K.shape) != (B, 3, 3):
        raise ValueError(f"K must be (3, 3) or ({B}, 3, 3); got {tuple(K.shape)}")
    return x_hat, q_hat, t_hat, x, q, t, K


def _rotation(q: torch.Tensor) -> torch.Tensor:
    """``R(q / ‖q‖)`` ``(..., 3, 3)``; a (near-)zero q gives the identity instead of NaN."""
    identity = torch.zeros_like(q)
    identity[..., 0] = 1.0
    small = torch.linalg.vector_norm(q.detach(), dim=-1, keepdim=True) < _MIN_QUAT_NORM
    return cv.quat_to_matrix(torch.where(small, identity, q))


def _to_camera(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``R x + t`` for points ``(B, N, 3)``, R ``(B, 3, 3)``, t ``(B, 3)`` → ``(B, N, 3)``."""
    return torch.baddbmm(t[:, None, :], points, R.transpose(-1, -2))


def _project(points: torch.Tensor, M: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixels ``(B, N, 2)`` of ``h = M x + b`` for points ``(B, N, 3)``, ``M (B, 3, 3)``, ``b (B, 3)``.

    With ``M = K R`` and ``b = K t`` this is ``P(q, t)(x)``: K's last row is (0, 0, 1), so ``h_z``
    is the camera depth Z, clamped to ``_MIN_DEPTH`` before the division.
    """
    h = torch.baddbmm(b[:, None, :], points, M.transpose(-1, -2))
    return h[..., :2] / h[..., 2:3].clamp_min(_MIN_DEPTH)


def _weight(loss: str, name: str, value) -> float | torch.Tensor:
    if value is None:
        raise FacebenchError(f"the {loss} loss needs the weight {name} (see ramon2019_scale_weights)")
    if isinstance(value, torch.Tensor):
        return value
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise FacebenchError(f"the {loss} loss weight {name} must be a finite number >= 0, got {value}")
    return value


def _align_sign(q: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``q`` flipped to the hemisphere of ``reference``: ``-q`` where ``<q, reference> < 0``."""
    dot = (q * reference.detach()).sum(-1, keepdim=True)
    return torch.where(dot < 0, -q, q)


# ---------------------------------------------------------------------------- multiterm losses
def _shape_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).square().mean(dim=(1, 2))


def coarse(x_hat, q_hat, t_hat, x, q, t, K=None, *, alpha=None, sign_invariant: bool = True) -> torch.Tensor:
    """Coarse loss ``mean((x − x̂)²) + α · mean(([q, t] − [q̂, t̂])²)`` per sample, ``(B,)``.

    Units: mm² for the shape term; the pose term mixes quaternion units and mm² (hence α).
    ``K`` is accepted for the common signature and unused. q̂ is used unnormalized; with
    ``sign_invariant`` the ground-truth q is flipped into q̂'s hemisphere first (module docstring).
    """
    alpha = _weight("coarse", "alpha", alpha)
    x_hat, q_hat, t_hat, x, q, t, _ = _prepare(x_hat, q_hat, t_hat, x, q, t, torch.eye(3) if K is None else K)
    if sign_invariant:
        q = _align_sign(q, q_hat)
    pose = torch.cat((q - q_hat, t - t_hat), dim=-1).square().mean(dim=-1)
    return _shape_mse(x_hat, x) + alpha * pose


def xqt(
    x_hat, q_hat, t_hat, x, q, t, K=None, *, beta=None, gamma=None, sign_invariant: bool = True
) -> torch.Tensor:
    """XQT loss ``mean((x − x̂)²) + β · mean((q − q̂)²) + γ · mean((t − t̂)²)`` per sample, ``(B,)``.

    Means over the N·3 shape coordinates, the 4 quaternion and the 3 translation components.
    ``K`` is unused. q̂ unnormalized; ``sign_invariant`` as in :func:`coarse`.
    """
    beta = _weight("xqt", "beta", beta)
    gamma = _weight("xqt", "gamma", gamma)
    x_hat, q_hat, t_hat, x, q, t, _ = _prepare(x_hat, q_hat, t_hat, x, q, t, torch.eye(3) if K is None else K)
    if sign_invariant:
        q = _align_sign(q, q_hat)
    return (
        _shape_mse(x_hat, x)
        + beta * (q - q_hat).square().mean(dim=-1)
        + gamma * (t - t_hat).square().mean(dim=-1)
    )


# ---------------------------------------------------------------------------- hyperparameter-free losses
def gal(x_hat, q_hat, t_hat, x, q, t, K=None) -> torch.Tensor:
    """Geometric alignment loss ``mean(|E x − Ê x̂|)`` per sample, ``(B,)``, mm.

    Both shapes are placed in the camera frame by their own pose; the mean is over N points and
    3 coordinates. ``K`` is unused.
    """
    x_hat, q_hat, t_hat, x, q, t, _ = _prepare(x_hat, q_hat, t_hat, x, q, t, torch.eye(3) if K is None else K)
    truth = _to_camera(x, _rotation(q), t)
    prediction = _to_camera(x_hat, _rotation(q_hat), t_hat)
    return (truth - prediction).abs().mean(dim=(1, 2))


def srl(x_hat, q_hat, t_hat, x, q, t, K) -> torch.Tensor:
    """Shape reprojection loss ``mean(|P(q, t)(x) − P(q̂, t̂)(x̂)|)`` per sample, ``(B,)``, pixels.

    The mean is over N points and the 2 pixel coordinates (u, v).
    """
    x_hat, q_hat, t_hat, x, q, t, K = _prepare(x_hat, q_hat, t_hat, x, q, t, K)
    truth = _project(x, K @ _rotation(q), (K @ t[..., None])[..., 0])
    prediction = _project(x_hat, K @ _rotation(q_hat), (K @ t_hat[..., None])[..., 0])
    return (truth - prediction).abs().mean(dim=(1, 2))


def sample_views(
    t,
    n_views: int = 2,
    *,
    generator: torch.Generator | None = None,
    yaw_range: tuple[float, float] = (-90.0, 90.0),
    pitch_range: tuple[float, float] = (-45.0, 45.0),
) -> torch.Tensor:
    """Random virtual cameras of MRL, ``(B, V, 7)`` = (q_v (w, x, y, z), t_v mm), no gradient.

    For each of the B ground-truth translations ``t (B, 3)`` mm and each of ``V = n_views`` views:
    yaw ~ U(yaw_range), pitch ~ U(pitch_range) degrees, roll 0, ``q_v = pose_from_angles(yaw,
    pitch, 0)`` and ``t_v = (0, 0, ‖t‖)``: the camera looks at the head origin from the
    ground-truth camera distance. The uniforms come from ``generator`` (drawn on its device, in
    float64, yaw before pitch per view), so a seeded generator gives the same views on any
    device; the result has ``t``'s dtype and device.
    """
    t = torch.as_tensor(t)
    if t.ndim != 2 or t.shape[-1] != 3:
        raise ValueError(f"t must be (B, 3); got {tuple(t.shape)}")
    if int(n_views) < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    for name, (lo, hi) in (("yaw_range", yaw_range), ("pitch_range", pitch_range)):
        if not lo <= hi:
            raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
    B, V = t.shape[0], int(n_views)
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((B, V, 2), generator=generator, dtype=torch.float64, device=device).cpu()
    yaw = yaw_range[0] + (yaw_range[1] - yaw_range[0]) * u[..., 0]
    pitch = pitch_range[0] + (pitch_range[1] - pitch_range[0]) * u[..., 1]
    q_v = cv.pose_from_angles(yaw, pitch, torch.zeros_like(yaw))
    distance = torch.linalg.vector_norm(t.detach().to(torch.float64).cpu(), dim=-1)
    t_v = torch.zeros(B, V, 3, dtype=torch.float64)
    t_v[..., 2] = distance[:, None]
    dtype = t.dtype if t.dtype.is_floating_point else torch.get_default_dtype()
    return torch.cat((q_v, t_v), dim=-1).to(device=t.device, dtype=dtype)


def mrl(
    x_hat,
    q_hat,
    t_hat,
    x,
    q,
    t,
    K,
    *,
    views=None,
    n_views: int = 2,
    generator: torch.Generator | None = None,
    yaw_range: tuple[float, float] = (-90.0, 90.0),
    pitch_range: tuple[float, float] = (-45.0, 45.0),
) -> torch.Tensor:
    """Multiview reprojection loss per sample, ``(B,)``, pixels.

    ``(1/V) Σ_v mean(|P(q_v, t_v)(x) − P(q_v, t_v)(D x̂)|)`` with ``D x̂ = R(q)ᵀ (R(q̂) x̂ + t̂ − t)``
    (prediction → camera by its pose → ground-truth head frame); the inner mean is over N points
    and (u, v). ``views (B, V, 7)`` = virtual (q_v, t_v) poses of the ground-truth head frame; when
    None, ``n_views`` views per sample are drawn by :func:`sample_views` with ``generator``,
    ``yaw_range`` and ``pitch_range`` (degrees). Same ``K`` for every view.
    """
    x_hat, q_hat, t_hat, x, q, t, K = _prepare(x_hat, q_hat, t_hat, x, q, t, K)
    B, N = x.shape[:2]
    if views is None:
        views = sample_views(t, n_views, generator=generator, yaw_range=yaw_range, pitch_range=pitch_range)
    views = torch.as_tensor(views).to(device=x.device, dtype=x.dtype)
    if views.ndim != 3 or views.shape[0] != B or views.shape[-1] != 7 or views.shape[1] < 1:
        raise ValueError(f"views must be ({B}, V, 7) with V >= 1; got {tuple(views.shape)}")
    V = views.shape[1]
    # In view v: P_v(x) = π(K R_v x + K t_v) and, with D x̂ = Rᵀ (R̂ x̂ + t̂ − t),
    # P_v(D x̂) = π(M_v x̂ + b_v), M_v = K R_v Rᵀ R̂, b_v = K R_v Rᵀ (t̂ − t) + K t_v.
    KR_v = K[:, None] @ _rotation(views[..., :4])  # (B, V, 3, 3)
    Kt_v = (K[:, None] @ views[..., 4:, None])[..., 0]  # (B, V, 3)
    relative = _rotation(q).transpose(-1, -2)[:, None]  # Rᵀ (B, 1, 3, 3)
    M_hat = KR_v @ relative @ _rotation(q_hat)[:, None]
    b_hat = (KR_v @ relative @ (t_hat - t)[:, None, :, None])[..., 0] + Kt_v

    def pixels(points, M, b):  # every view with one (B, N, 3) x (B, 3, 3V) product -> (B, N, V, 2)
        h = torch.bmm(points, M.transpose(-1, -2).transpose(1, 2).reshape(B, 3, 3 * V)).reshape(B, N, V, 3)
        h = h + b[:, None]
        return h[..., :2] / h[..., 2:3].clamp_min(_MIN_DEPTH)

    error = (pixels(x, KR_v, Kt_v) - pixels(x_hat, M_hat, b_hat)).abs()
    return error.mean(dim=(1, 3)).mean(dim=1)  # mean over points and (u, v), then over views


# ---------------------------------------------------------------------------- registry
#: The five losses by name.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"coarse": coarse, "xqt": xqt, "gal": gal, "srl": srl, "mrl": mrl}
_REQUIRED: dict[str, tuple[str, ...]] = {"coarse": ("alpha",), "xqt": ("beta", "gamma"), "gal": (), "srl": (), "mrl": ()}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "coarse": ("sign_invariant",),
    "xqt": ("sign_invariant",),
    "gal": (),
    "srl": (),
    "mrl": ("views", "n_views", "generator", "yaw_range", "pitch_range"),
}


def _known(name: str) -> str:
    if name not in LOSSES:
        raise FacebenchError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return name


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSSES`); FacebenchError otherwise."""
    return LOSSES[_known(name)]


def required_params(name: str) -> tuple[str, ...]:
    """Keyword parameters the loss ``name`` cannot run without: ``("alpha",)`` for coarse,
    ``("beta", "gamma")`` for xqt, ``()`` for the hyperparameter-free losses."""
    return _REQUIRED[_known(name)]


def optional_params(name: str) -> tuple[str, ...]:
    """Keyword parameters the loss ``name`` accepts besides :func:`required_params`."""
    return _OPTIONAL[_known(name)]


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise FacebenchError (one line) when ``params`` lacks a required weight of loss ``name``,
    holds a parameter that loss does not take, or a weight that is not a finite number >= 0.

    Parameters whose value is None count as absent (convenient for CLI options)."""
    given = {k for k, v in params.items() if v is not None}
    missing = [p for p in required_params(name) if p not in given]
    if missing:
        flags = ", ".join(f"--{p}" for p in missing)
        raise FacebenchError(f"the {name} loss needs {flags} (weights of its pose terms; "
                             "see ramon2019_scale_weights)")
    unknown = sorted(given - set(required_params(name)) - set(optional_params(name)))
    if unknown:
        raise FacebenchError(f"the {name} loss takes no {', '.join(unknown)}")
    for p in required_params(name):
        _weight(name, p, params[p])


def make_loss(name: str, **params) -> Callable[..., torch.Tensor]:
    """The loss ``name`` with its keyword parameters bound after :func:`check_params`:
    ``make_loss("xqt", beta=1e3, gamma=0.1)(x_hat, q_hat, t_hat, x, q, t, K) -> (B,)``."""
    check_params(name, params)
    return functools.partial(get_loss(name), **{k: v for k, v in params.items() if v is not None})


# ---------------------------------------------------------------------------- weights from data
def _arrays(data, chunk: int):
    """Yield (vertices (n, V, 3), q (n, 4), t (n, 3)) float64 chunks of a dataset or arrays."""
    if isinstance(data, (str, Path)):
        from facebench.datasets.dataset_file import FaceDataset

        data = FaceDataset(data)
    if isinstance(data, Mapping):
        arrays = [np.asarray(data[k], dtype=np.float64) for k in ("vertices", "q", "t")]
        yield tuple(arrays)
        return
    for start in range(0, len(data), chunk):
        stop = min(start + chunk, len(data))
        yield tuple(np.asarray(data.read(k, start, stop), dtype=np.float64) for k in ("vertices", "q", "t"))


def target_variances(data, *, chunk: int = 256) -> dict[str, float]:
    """Mean per-coordinate variances of a training set's targets (one streaming pass, float64).

    ``data``: a :class:`~facebench.datasets.dataset_file.FaceDataset`, a dataset path, or a
    mapping with ``vertices (n, V, 3)`` mm, ``q (n, 4)``, ``t (n, 3)`` mm. Returns

    - ``shape``: ``mean_{i,v,c} (x_ivc − x̄_vc)²`` mm² (x̄ the per-vertex mean shape of the set),
    - ``q``: ``mean_{i,c} (q_ic − q̄_c)²`` over the 4 components, after flipping every q into the
      hemisphere of the frontal pose ``Q_FRONT`` (``<q, Q_FRONT> >= 0``, the sign a regressor
      initialized at ``Q_FRONT`` sees with ``sign_invariant`` losses; the stored w >= 0 sign would
      add spurious variance from sign flips at pitch 0),
    - ``t``: ``mean_{i,c} (t_ic − t̄_c)²`` mm² over the 3 components,
    - ``pose``: ``(4 q + 3 t) / 7``, the variance averaged over the 7 numbers of ``[q, t]``,
    - ``n``: the number of samples.
    """
    front = np.asarray(cv.Q_FRONT, dtype=np.float64)
    n = 0
    shift = sum_x = None
    sum_x2 = 0.0
    qs, ts = [], []
    for vertices, q, t in _arrays(data, chunk):
        if vertices.ndim != 3 or vertices.shape[-1] != 3 or q.shape != (len(vertices), 4) or t.shape != (len(vertices), 3):
            raise FacebenchError(f"training targets must be vertices (n, V, 3), q (n, 4), t (n, 3); got "
                                 f"{vertices.shape}, {q.shape}, {t.shape}")
        if not (np.isfinite(vertices).all() and np.isfinite(q).all() and np.isfinite(t).all()):
            raise FacebenchError("training targets hold NaN or infinite vertices, q or t")
        if shift is None:
            shift = vertices[0].copy()  # shifted sums: no cancellation in E[x²] − E[x]²
            sum_x = np.zeros_like(shift)
        centred = vertices - shift
        sum_x += centred.sum(axis=0)
        sum_x2 += float(np.einsum("ivc,ivc->", centred, centred))
        n += len(vertices)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        qs.append(np.where((q @ front)[:, None] < 0, -q, q))
        ts.append(t)
    if n < 2:
        raise FacebenchError(f"need at least 2 training samples to derive loss weights, got {n}")
    shape = (sum_x2 - float((sum_x**2).sum()) / n) / (n * sum_x.size)
    q_var = float(np.concatenate(qs).var(axis=0).mean())
    t_var = float(np.concatenate(ts).var(axis=0).mean())
    return {"shape": float(shape), "q": q_var, "t": t_var, "pose": (4 * q_var + 3 * t_var) / 7, "n": n}


def ramon2019_scale_weights(data, *, chunk: int = 256) -> dict[str, float]:
    """Weights ``alpha`` (Coarse), ``beta``, ``gamma`` (XQT) that compensate the scale difference
    between the pose terms and the shape term, derived from a training set.

    Ramon et al. searched their weights around "the values that compensate the scale difference
    with the shape term" without giving a formula; our reading: at the start of training the
    regressor predicts about the training set's mean (mean shape, frontal rotation, mean distance),
    where each squared-error term is the variance of its target. The weights make every weighted
    pose term as large as the shape term there (:func:`target_variances`):

    ``alpha = shape / pose``, ``beta = shape / q``, ``gamma = shape / t``

    (``shape`` mm², ``q`` unitless, ``t`` and ``pose`` mixed; see :func:`target_variances`).
    ``data`` as in :func:`target_variances`. FacebenchError when a variance is zero (e.g. a set
    of frontal views only), where no weight compensates anything.
    """
    v = target_variances(data, chunk=chunk)
    for key, what in (("shape", "shapes"), ("q", "rotations"), ("t", "translations")):
        if not v[key] > 0:
            raise FacebenchError(f"the training {what} do not vary (variance {v[key]:g}): "
                                 "the loss weights are undefined; give --alpha/--beta/--gamma")
    return {"alpha": v["shape"] / v["pose"], "beta": v["shape"] / v["q"], "gamma": v["shape"] / v["t"]}
