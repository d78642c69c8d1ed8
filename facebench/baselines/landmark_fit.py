"""A classic baseline: a 3D morphable model fitted to 2D landmarks by regularized least squares.

For each image, find the camera pose ``(q, t)`` (head → camera, :mod:`facebench.conventions`) and
the identity/expression coefficients ``a``, ``e`` (standard-deviation units) minimizing

    sum_l w_l ||project(X_l(a, e), q, t, K) - u_l||^2  +  w_identity^2 ||a||^2  +  w_expression^2 ||e||^2

where ``X_l`` are the model's landmark vertices in the head frame (mm) and ``u_l`` the observed
landmarks (pixels). The priors are Tikhonov terms; under Gaussian landmark noise of ``sigma`` pixels
and the model's N(0, 1) coefficient prior the MAP weights are ``w = sigma``.

Solver: Levenberg–Marquardt with Marquardt's diagonal damping on the small parameter vector of
each sample (3 rotation + 3 translation + ``ki`` + ``ke``), batched over samples, analytic
Jacobians. Rotation updates are axis-angle increments applied on the left of the current rotation
(camera frame), so there is no singularity at any pose. Only the landmark rows of the bases are
evaluated while fitting; the full mesh is built once at the end.

Initialization (robust for yaw up to ±90°): a scaled-orthographic (affine) camera fitted in closed
form to the mean shape's landmarks, plus frontal poses turned by yaw −60°, 0°, +60°; each candidate
gets a few pose-only iterations and the one with the lowest cost is kept.

Known approximation: the contour landmarks (iBUG 1–17) sit on fixed mesh vertices, whereas on a real
face image the visible jaw outline slides over the surface as the head turns. At large yaw a
detector's contour points therefore disagree with the fixed vertices; ``contour_weight < 1``
down-weights them. (The synthetic datasets of facebench project the fixed vertices, so there the
default weight 1 is exact.)

Everything runs on the device of the input tensors (CPU or CUDA), in float64 by default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from facebench import __version__
from facebench.atomic import atomic_path
from facebench.conventions import matrix_to_quat, pose_from_angles, quat_to_matrix
from facebench.device import resolve_device
from facebench.errors import InputFileError, InvalidInputError
from facebench.safe_hdf5 import open_hdf5

__all__ = ["FitResult", "fit_landmarks", "fit_dataset", "METHOD", "CONTOUR_LANDMARKS", "INITIAL_YAWS_DEG"]

#: The ``method`` attribute of the submissions written by :func:`fit_dataset`.
METHOD = "landmark-fit"

#: 0-based indices of the iBUG-68 jaw contour landmarks (iBUG 1–17).
CONTOUR_LANDMARKS = tuple(range(17))
#: Yaw angles (degrees) of the frontal-pose starting candidates, besides the affine-camera start.
INITIAL_YAWS_DEG = (-60.0, 0.0, 60.0)

_MIN_DEPTH_MM = 1.0  # a landmark closer to the camera plane than this makes a step invalid


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Result of :func:`fit_landmarks` for B samples (numpy arrays, or torch tensors on the input's
    device when the landmarks were a tensor).

    Attributes:
        identity: ``(B, ki)`` identity coefficients, std units.
        expression: ``(B, ke)`` expression coefficients, std units.
        q: ``(B, 4)`` head → camera rotation, unit quaternion (w, x, y, z), w >= 0.
        t: ``(B, 3)`` head → camera translation, mm.
        vertices: ``(B, V, 3)`` fitted shape in the head frame, mm (float32).
        reprojection_px: ``(B,)`` mean distance in pixels between the fitted model's projected
            landmarks and the observed ones, over the landmarks used (NaN when a sample has fewer
            than 4 usable landmarks: its pose is then the frontal start and meaningless).
        cost: ``(B,)`` final value of the objective (pixels² plus the priors).
    """

    identity: Any
    expression: Any
    q: Any
    t: Any
    vertices: Any
    reprojection_px: Any
    cost: Any


# ---------------------------------------------------------------------------- landmark model
@dataclasses.dataclass(frozen=True)
class _LandmarkModel:
    """The landmark rows of a model: ``mean (L,3)`` mm and ``basis (L,3,k)`` mm per std unit."""

    mean: torch.Tensor
    basis: torch.Tensor

    def points(self, c: torch.Tensor) -> torch.Tensor:
        """Landmarks ``(B, L, 3)`` head frame, mm, for coefficients ``c (B, k)``."""
        return self.mean + torch.einsum("lik,bk->bli", self.basis, c)

    def jacobian(self, dp_dX: torch.Tensor) -> torch.Tensor:
        """``(B, L, m, k)``: ``dp_dX (B, L, m, 3)`` (derivatives of some m outputs with respect to
        each head-frame landmark) chained with the basis."""
        return torch.einsum("blij,ljk->blik", dp_dX, self.basis)


def _landmark_model(model, indices: np.ndarray, ki: int, ke: int, device, dtype) -> _LandmarkModel:
    safe = np.where(indices >= 0, indices, 0)
    mean = model.mean[safe].astype(np.float64)
    identity = model.identity_basis[safe][:, :, :ki] * model.identity_std[:ki]
    expression = model.expression_basis[safe][:, :, :ke] * model.expression_std[:ke]
    basis = np.concatenate([identity, expression], axis=2).astype(np.float64)
    return _LandmarkModel(
        torch.as_tensor(mean, device=device, dtype=dtype), torch.as_tensor(basis, device=device, dtype=dtype)
    )


# ---------------------------------------------------------------------------- small geometry
def _skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``(..., 3, 3)`` of vectors ``v (..., 3)``: ``skew(v) @ x = v × x``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*v.shape, 3)


def _exp_so3(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(B, 3, 3)`` of axis-angle vectors ``w (B, 3)`` radians (Rodrigues)."""
    theta = torch.linalg.vector_norm(w, dim=-1)[:, None, None]
    W = _skew(w)
    small = theta < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1 - theta**2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta**2 / 24, (1 - torch.cos(safe)) / safe**2)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(W)
    return eye + a * W + b * (W @ W)


# ---------------------------------------------------------------------------- problem
@dataclasses.dataclass
class _State:
    R: torch.Tensor  # (B, 3, 3)
    t: torch.Tensor  # (B, 3) mm
    c: torch.Tensor  # (B, k) std units (identity then expression)

    def index(self, keep: torch.Tensor) -> _State:
        return _State(self.R[keep], self.t[keep], self.c[keep])


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Observations and weights of one batch: ``obs (B,L,2)`` px (0 where unused), ``weight (B,L)``,
    ``K (B,3,3)``, ``prior (k,)`` Tikhonov weights of the coefficients."""

    lm: _LandmarkModel
    obs: torch.Tensor
    weight: torch.Tensor
    K: torch.Tensor
    prior: torch.Tensor

    def project(self, state: _State):
        """Camera points ``Y (B,L,3)``, pixels ``uv (B,L,2)`` and head-frame landmarks ``X``."""
        X = self.lm.points(state.c)
        Y = X @ state.R.transpose(1, 2) + state.t[:, None, :]
        h = Y @ self.K.transpose(1, 2)
        depth = h[..., 2:3]
        safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
        return Y, h[..., :2] / safe, X

    def cost(self, state: _State) -> torch.Tensor:
        """Objective ``(B,)``; +inf where a used landmark is behind or too near the camera."""
        Y, uv, _ = self.project(state)
        residual = ((uv - self.obs) ** 2).sum(-1)
        total = (self.weight * residual).sum(-1) + ((self.prior * state.c) ** 2).sum(-1)
        behind = ((Y[..., 2] < _MIN_DEPTH_MM) & (self.weight > 0)).any(-1)
        return torch.where(behind, torch.full_like(total, math.inf), total)

    def normal_equations(self, state: _State, with_shape: bool):
        """Gauss–Newton ``H (B,P,P)`` and gradient ``g (B,P)`` (halved) of the objective, with
        ``P = 6 (+ k)``: axis-angle (left), translation, then coefficients."""
        Y, uv, X = self.project(state)
        K = self.K[:, None]  # (B,1,3,3)
        Z = (Y * K[..., 2, :]).sum(-1, keepdim=True)  # homogeneous depth (K[2] = (0, 0, 1): Z), (B,L,1)
        # d(uv)/dY = (K[:2] - uv K[2]) / Z  (B,L,2,3)
        dp_dY = (K[..., :2, :] - uv[..., :, None] * K[..., 2:3, :]) / Z[..., None]
        RX = Y - state.t[:, None, :]
        J = [-(dp_dY @ _skew(RX)), dp_dY]  # rotation (left increment), translation: (B,L,2,3) each
        if with_shape:  # d(uv)/dc = d(uv)/dY R basis
            J.append(self.lm.jacobian(dp_dY @ state.R[:, None]))
        J = torch.cat(J, dim=-1).flatten(1, 2)  # (B,2L,P)
        Jw = J * self.weight.repeat_interleave(2, dim=1)[..., None]
        H = Jw.transpose(1, 2) @ J
        g = (Jw.transpose(1, 2) @ (uv - self.obs).flatten(1, 2)[..., None])[..., 0]
        if with_shape:
            prior2 = self.prior**2
            idx = torch.arange(6, H.shape[-1], device=H.device)
            H[:, idx, idx] += prior2
            g[:, 6:] += prior2 * state.c
        return H, g


def _step(state: _State, delta: torch.Tensor, with_shape: bool) -> _State:
    R = _exp_so3(delta[:, :3]) @ state.R
    c = state.c + delta[:, 6:] if with_shape else state.c
    return _State(R, state.t + delta[:, 3:6], c)


def _levenberg_marquardt(problem: _Problem, state: _State, *, iterations: int, with_shape: bool,
                         tolerance: float = 1e-10) -> tuple[_State, torch.Tensor]:
    """Damped Gauss–Newton on every sample at once; returns the final state and cost ``(B,)``."""
    cost = problem.cost(state)
    lam = torch.full_like(cost, 1e-3)
    done = torch.zeros_like(cost, dtype=torch.bool)
    for _ in range(iterations):
        H, g = problem.normal_equations(state, with_shape)
        diag = torch.diagonal(H, dim1=-2, dim2=-1)
        damping = lam[:, None] * (diag + 1e-9 * diag.amax(-1, keepdim=True) + 1e-12)
        A = H + torch.diag_embed(damping)
        delta, info = torch.linalg.solve_ex(A, -g[..., None])
        delta = torch.where((info == 0)[:, None, None] & torch.isfinite(delta), delta, 0)[..., 0]
        candidate = _step(state, delta, with_shape)
        new_cost = problem.cost(candidate)
        accept = (new_cost < cost) & ~done
        state = _State(*(torch.where(accept.view(-1, *[1] * (a.ndim - 1)), a, b)
                         for a, b in ((candidate.R, state.R), (candidate.t, state.t), (candidate.c, state.c))))
        improvement = (cost - new_cost) / cost.clamp_min(1e-30)
        cost = torch.where(accept, new_cost, cost)
        lam = torch.where(accept, (lam / 3).clamp_min(1e-9), (lam * 4).clamp_max(1e12))
        done = done | (accept & (improvement < tolerance)) | (lam >= 1e12) | (cost < 1e-20)
        if bool(done.all()):
            break
    return state, cost


# ---------------------------------------------------------------------------- initialization
def _affine_start(problem: _Problem, X: torch.Tensor, default_depth: float):
    """Scaled-orthographic camera fitted in closed form to the head-frame landmarks ``X (B,L,3)``.

    Returns the rotation ``(B,3,3)``, the depth ``(B,)`` mm of the landmark centroid, the centroid
    ``(B,3)`` in the head frame and its normalized image position ``(B,2)``; samples with fewer than
    4 usable landmarks get the frontal rotation at ``default_depth``."""
    w = problem.weight
    wsum = w.sum(-1, keepdim=True).clamp_min(1e-12)
    centroid_head = (w[..., None] * X).sum(1) / wsum  # (B,3)
    ones = torch.ones_like(problem.obs[..., :1])
    normalized = torch.linalg.solve(problem.K[:, None], torch.cat([problem.obs, ones], -1)[..., None])[..., 0]
    xn = normalized[..., :2] / normalized[..., 2:3]  # (B,L,2) X/Z, Y/Z
    design = torch.cat([X - centroid_head[:, None], torch.ones_like(X[..., :1])], -1)  # (B,L,4)
    M = torch.einsum("bl,bli,blj->bij", w, design, design)
    M = M + 1e-9 * torch.eye(4, dtype=M.dtype, device=M.device) * M.diagonal(dim1=-2, dim2=-1).amax(-1)[:, None, None]
    rhs = torch.einsum("bl,bli,blj->bij", w, design, xn)
    A, info = torch.linalg.solve_ex(M, rhs)
    enough = (info == 0) & ((w > 0).sum(-1) >= 4) & torch.isfinite(A).flatten(1).all(-1)
    A = torch.where(enough[:, None, None], A, 0).transpose(1, 2)  # (B,2,4)
    U, S, Vh = torch.linalg.svd(A[:, :, :3], full_matrices=False)
    rows = U @ Vh  # (B,2,3) orthonormal rows closest to the affine part
    R = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], 1)
    scale = S.mean(-1)
    ok = enough & (scale > 1e-6)
    depth = torch.where(ok, 1 / torch.where(ok, scale, torch.ones_like(scale)), torch.full_like(scale, default_depth))
    front = quat_to_matrix(torch.as_tensor(pose_from_angles(0.0, 0.0, 0.0), dtype=R.dtype, device=R.device))
    R = torch.where(ok[:, None, None], R, front.expand_as(R))
    centroid_image = torch.where(ok[:, None], A[:, :, 3], xn.mul(w[..., None]).sum(1) / wsum)
    return R, depth, centroid_head, centroid_image


def _place(R, depth, centroid_head, centroid_image):
    """Translation ``(B,3)`` putting the head-frame centroid at ``depth`` on the ray of
    ``centroid_image`` (normalized image coordinates)."""
    camera = torch.cat([centroid_image * depth[:, None], depth[:, None]], -1)
    return camera - (R @ centroid_head[..., None])[..., 0]


def _initialize(problem: _Problem, k: int, *, init_distance_mm: float, pose_iterations: int) -> _State:
    """Best of the affine start and the yaw candidates after pose-only iterations, mean shape."""
    B, dtype, device = problem.obs.shape[0], problem.obs.dtype, problem.obs.device
    X = problem.lm.mean.expand(B, -1, -1)
    R_affine, depth, centroid_head, centroid_image = _affine_start(problem, X, init_distance_mm)
    starts = [R_affine]
    for yaw in INITIAL_YAWS_DEG:
        q = torch.as_tensor(pose_from_angles(yaw, 0.0, 0.0), dtype=dtype, device=device)
        starts.append(quat_to_matrix(q).expand(B, 3, 3))
    n = len(starts)
    R = torch.cat(starts)
    rep = lambda x: x.repeat(n, *[1] * (x.ndim - 1))  # noqa: E731
    t = _place(R, rep(depth), rep(centroid_head), rep(centroid_image))
    state = _State(R, t, torch.zeros(n * B, k, dtype=dtype, device=device))
    tiled = _Problem(problem.lm, rep(problem.obs), rep(problem.weight), rep(problem.K), problem.prior)
    state, cost = _levenberg_marquardt(tiled, state, iterations=pose_iterations, with_shape=False)
    cost = torch.nan_to_num(cost, nan=math.inf).view(n, B)
    best = cost.argmin(0) * B + torch.arange(B, device=device)
    return state.index(best)


# ---------------------------------------------------------------------------- public API
def _as_tensor(x, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def _landmark_weights(indices: np.ndarray, obs: torch.Tensor, contour_weight: float) -> torch.Tensor:
    """``(B, L)`` weights: 0 where the model lacks the landmark or the observation is NaN/Inf."""
    per_landmark = np.where(indices >= 0, 1.0, 0.0)
    if len(indices) == 68:
        per_landmark[list(CONTOUR_LANDMARKS)] *= contour_weight
    weight = torch.as_tensor(per_landmark, dtype=obs.dtype, device=obs.device).expand(obs.shape[:2]).clone()
    return weight * torch.isfinite(obs).all(-1)


def fit_landmarks(
    model,
    landmarks_2d,
    K,
    *,
    n_identity: int = 40,
    n_expression: int = 20,
    w_identity: float = 1.0,
    w_expression: float = 1.0,
    iterations: int = 50,
    pose_iterations: int = 15,
    init_distance_mm: float = 600.0,
    contour_weight: float = 1.0,
    landmark_indices=None,
    device=None,
    dtype: torch.dtype = torch.float64,
) -> FitResult:
    """Fit pose and identity/expression coefficients of ``model`` to 2D landmarks, batched.

    Args:
        model: a :class:`facebench.models.MorphableModel`.
        landmarks_2d: ``(B, L, 2)`` observed landmarks, pixels (OpenCV convention: integer
            coordinates are pixel centres), in the order of ``landmark_indices`` (iBUG-68 for the
            model's own landmarks). NaN/Inf entries are ignored. numpy array or torch tensor.
        K: ``(3, 3)`` or ``(B, 3, 3)`` intrinsics, pixels.
        n_identity, n_expression: number of leading modes to fit (``<=`` the model's).
        w_identity, w_expression: Tikhonov weights of the coefficients (std units) against
            landmark residuals in pixels; ``w ≈`` the landmark noise in pixels is the MAP choice.
        iterations: maximum Levenberg–Marquardt iterations of the full fit.
        pose_iterations: pose-only iterations for each starting candidate.
        init_distance_mm: camera distance used when the affine start is degenerate.
        contour_weight: weight of the jaw contour landmarks (iBUG 1–17) when ``L == 68``; lower it
            for real detections at large yaw (see the module docstring).
        landmark_indices: ``(L,)`` model vertex of each landmark (−1: none, ignored); default the
            model's iBUG-68 ``landmark_indices``.
        device: torch device; default the device of ``landmarks_2d`` if a tensor, else CPU.
        dtype: floating type of the solve (float64 default; the vertices are float32).

    Returns:
        A :class:`FitResult`; torch tensors on ``device`` when ``landmarks_2d`` is a tensor,
        numpy arrays otherwise.
    """
    as_torch = isinstance(landmarks_2d, torch.Tensor)
    if device is None:
        device = landmarks_2d.device if as_torch else torch.device("cpu")
    indices = np.asarray(model.landmark_indices if landmark_indices is None else landmark_indices, dtype=np.int64)
    obs = _as_tensor(landmarks_2d, device, dtype)
    if obs.ndim != 3 or obs.shape[-1] != 2 or obs.shape[1] != len(indices):
        raise ValueError(f"landmarks_2d must be (B, {len(indices)}, 2), got {tuple(obs.shape)}")
    if np.any((indices < -1) | (indices >= model.n_vertices)):
        raise ValueError(f"landmark indices outside [-1, {model.n_vertices})")
    if not (0 <= n_identity <= model.n_identity and 0 <= n_expression <= model.n_expression):
        raise InvalidInputError(f"{model.name} has {model.n_identity} identity and {model.n_expression} expression "
                         f"modes; cannot fit {n_identity} and {n_expression}")
    B = obs.shape[0]
    Kt = _as_tensor(K, device, dtype)
    if Kt.shape not in ((3, 3), (B, 3, 3)):
        raise ValueError(f"K must be (3, 3) or ({B}, 3, 3), got {tuple(Kt.shape)}")
    Kt = Kt.expand(B, 3, 3)
    weight = _landmark_weights(indices, obs, contour_weight)
    usable = (weight > 0).sum(-1) >= 4
    lm = _landmark_model(model, indices, n_identity, n_expression, device, dtype)
    prior = torch.cat([torch.full((n_identity,), float(w_identity)), torch.full((n_expression,), float(w_expression))])
    problem = _Problem(lm, torch.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0), weight, Kt,
                       prior.to(device=device, dtype=dtype))
    k = n_identity + n_expression
    if B == 0:
        state, cost = _State(Kt.new_zeros(0, 3, 3), Kt.new_zeros(0, 3), Kt.new_zeros(0, k)), Kt.new_zeros(0)
    else:
        state = _initialize(problem, k, init_distance_mm=init_distance_mm, pose_iterations=pose_iterations)
        state, cost = _levenberg_marquardt(problem, state, iterations=iterations, with_shape=True)
    return _result(model, problem, state, cost, usable, n_identity, as_torch)


def _result(model, problem: _Problem, state: _State, cost, usable, n_identity: int, as_torch: bool) -> FitResult:
    _, uv, _ = problem.project(state)
    used = problem.weight > 0
    distance = torch.linalg.vector_norm(uv - problem.obs, dim=-1)
    reprojection = (distance * used).sum(-1) / used.sum(-1).clamp_min(1)
    reprojection = torch.where(usable, reprojection, torch.full_like(reprojection, math.nan))
    a, e = state.c[:, :n_identity], state.c[:, n_identity:]
    vertices = model.shape(a.float(), e.float())
    q = matrix_to_quat(state.R)
    out = FitResult(a, e, q, state.t, vertices, reprojection, cost)
    if as_torch:
        return out
    return FitResult(*(getattr(out, f.name).detach().cpu().numpy() for f in dataclasses.fields(out)))


# ---------------------------------------------------------------------------- datasets



def _read_inputs(dataset_path: Path):
    """ids, landmarks_2d (N,L,2), K (3,3)|(N,3,3), landmark_indices (L,), faces, V, attrs."""
    from facebench.datasets.dataset_file import FaceDataset

    dataset = FaceDataset(dataset_path)
    try:
        if "landmarks_2d" not in dataset.fields:
            raise InputFileError(dataset_path, "dataset has no landmarks_2d to fit")
        landmarks = dataset.array("landmarks_2d")
        K = dataset.shared_K if dataset.shared_K is not None else dataset.array("K")
        ids = dataset.ids
        with open_hdf5(dataset_path) as f:
            n_vertices = int(f["vertices"].shape[1]) if "vertices" in f else None
    except (OSError, KeyError) as error:
        raise InputFileError(dataset_path, f"unreadable dataset file: {error}") from None
    finally:
        dataset.close()
    L = len(dataset.landmark_indices)
    if landmarks.shape != (len(ids), L, 2):
        raise InputFileError(dataset_path, f"landmarks_2d has shape {landmarks.shape}, expected ({len(ids)}, {L}, 2)")
    if np.shape(K) not in ((3, 3), (len(ids), 3, 3)) or not np.all(np.isfinite(K)):
        raise InputFileError(dataset_path, f"K must be finite (3,3) or ({len(ids)},3,3), got shape {np.shape(K)}")
    return ids, landmarks, K, dataset.landmark_indices, dataset.faces, n_vertices, dataset.attrs


def _load_model_for(dataset_path: Path, attrs: dict, model_path):
    from facebench.models import load

    name = attrs.get("model")
    if not isinstance(name, str) or not name:
        raise InputFileError(dataset_path, "dataset attrs name no face model ('model')")
    return load(name, model_path)


def _check_topology(dataset_path: Path, model, landmark_indices, n_vertices) -> None:
    if n_vertices is not None and n_vertices != model.n_vertices:
        raise InputFileError(dataset_path, f"dataset vertices have {n_vertices} vertices but model "
                                           f"{model.name!r} has {model.n_vertices}")
    if np.any((landmark_indices < -1) | (landmark_indices >= model.n_vertices)):
        raise InputFileError(dataset_path, f"landmark_indices outside [-1, {model.n_vertices}) of model {model.name!r}")


def fit_dataset(
    dataset_path: str | Path,
    out_path: str | Path,
    *,
    n_identity: int = 40,
    n_expression: int = 20,
    batch_size: int = 256,
    device="cpu",
    model=None,
    model_path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    **fit_options,
) -> Path:
    """Fit every sample of a dataset file to its ``landmarks_2d`` and write an HDF5 submission.

    Reads ``landmarks_2d``, ``K``, ``landmark_indices`` and the model named by the ``model``
    attribute (``facebench.models.load(attrs["model"], model_path)``, or ``model`` if given) of
    the dataset; fits ``batch_size`` samples at a time with :func:`fit_landmarks`; writes the
    submission (docs/file-formats.md) atomically: attrs ``format="facebench-submission"``, ``version=1``,
    ``method="landmark-fit"`` (plus ``model``, ``settings`` JSON, ``mean_reprojection_px``,
    ``seconds``), datasets ``ids (N,)``, ``vertices (N,V,3)`` float32 head frame mm,
    ``landmark_indices (L,)``, ``q (N,4)`` (w >= 0), ``t (N,3)`` mm; ``faces`` only when the
    model's differ from the dataset's.

    Args:
        progress: called as ``progress(samples_done, samples_total)`` after each batch.
        **fit_options: passed to :func:`fit_landmarks` (``w_identity``, ``contour_weight``...).

    Returns:
        ``out_path`` as a Path.

    Raises:
        InputFileError: unreadable or inconsistent dataset; FacebenchError: unknown model or
        unavailable device.
    """
    dataset_path, out_path = Path(dataset_path), Path(out_path)
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    ids, landmarks, K, indices, faces, n_vertices, attrs = _read_inputs(dataset_path)
    model = model if model is not None else _load_model_for(dataset_path, attrs, model_path)
    _check_topology(dataset_path, model, indices, n_vertices)
    settings = {"n_identity": n_identity, "n_expression": n_expression, "batch_size": batch_size, **fit_options}
    n, started = len(ids), time.perf_counter()
    reprojection = np.full(n, np.nan)
    with atomic_path(out_path, suffix=out_path.suffix) as tmp, h5py.File(tmp, "w") as f:
        vertices_out, q_out, t_out = _create_submission(f, ids, model, faces, indices)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            K_batch = K if K.ndim == 2 else K[start:stop]
            fit = fit_landmarks(model, torch.as_tensor(landmarks[start:stop], device=device), K_batch,
                                n_identity=n_identity, n_expression=n_expression,
                                landmark_indices=indices, **fit_options)
            vertices_out[start:stop] = fit.vertices.cpu().numpy()
            q_out[start:stop] = fit.q.cpu().numpy()
            t_out[start:stop] = fit.t.cpu().numpy()
            reprojection[start:stop] = fit.reprojection_px.cpu().numpy()
            if progress is not None:
                progress(stop, n)
        seconds = time.perf_counter() - started
        f.attrs.update({
            "model": model.name, "model_version": model.version, "dataset": dataset_path.name,
            "settings": json.dumps(settings, sort_keys=True, default=str), "facebench_version": __version__,
            "mean_reprojection_px": float(np.nanmean(reprojection)) if np.isfinite(reprojection).any() else math.nan,
            "failed_samples": int((~np.isfinite(reprojection)).sum()), "seconds": seconds,
        })
    return out_path


def _create_submission(f: h5py.File, ids, model, faces, indices):
    f.attrs.update({"format": "facebench-submission", "version": 1, "method": METHOD})
    n = len(ids)
    f.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
    if faces.shape != model.faces.shape or not np.array_equal(faces, model.faces):
        f.create_dataset("faces", data=model.faces.astype(np.int32))
    f.create_dataset("landmark_indices", data=np.asarray(indices, np.int32))
    vertices = f.create_dataset("vertices", shape=(n, model.n_vertices, 3), dtype=np.float32,
                                chunks=(1, model.n_vertices, 3))
    q = f.create_dataset("q", shape=(n, 4), dtype=np.float64)
    t = f.create_dataset("t", shape=(n, 3), dtype=np.float64)
    return vertices, q, t
