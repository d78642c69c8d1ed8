"""Units, frames, quaternions, projection and head angles: the one source of truth of facebench.

Every other module imports these definitions (docs/conventions.md explains them).

- **Units**: millimetres for 3D coordinates and translations; degrees at every interface.
- **Head frame** (model space): right-handed; +x toward the subject's left (the viewer's right in
  a frontal photo), +y up, +z out of the face toward a frontal viewer. Origin: per model.
- **Camera**: OpenCV pinhole. The extrinsic pose ``(q, t)`` maps head to camera,
  ``x_cam = R(q) x + t``; the camera looks along +z, image x right, y down. A pixel is
  ``(u, v) = (fx X/Z + cx, fy Y/Z + cy)``; integer pixel coordinates are pixel centres and (0, 0)
  is the top-left pixel's centre. Points in front of the camera have Z > 0.
- **Frontal view**: ``R_FRONT = diag(1, -1, -1)``, i.e. ``q = (0, 1, 0, 0)``, with ``t = (0, 0, d)``.
- **Quaternions**: unit, scalar first ``(w, x, y, z)``, Hamilton product; q and -q are the same
  rotation; canonical (stored) quaternions have w >= 0.
- **Head angles**: ``R = R_FRONT @ R_head`` with ``R_head = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` about
  the head's own axes (intrinsic y-x-z), right-hand rule: positive yaw turns the face toward the
  subject's left (+z toward +x), positive pitch tilts the face down (+z toward -y), positive roll
  raises the subject's left side (+x toward +y), i.e. tilts the head toward the right shoulder.

Every function accepts numpy arrays or torch tensors (batched over leading dimensions, CPU or
CUDA). Torch inputs give torch outputs on the same device, differentiable; numpy inputs give
numpy outputs (float64 unless every input is float32). Internally numpy inputs are computed in
torch float64 on the CPU, so both paths run the same code.
"""

from __future__ import annotations

import math

import numpy as np

from facebench.lazy_torch import is_tensor, torch

__all__ = [
    "R_FRONT",
    "Q_FRONT",
    "quat_to_matrix",
    "matrix_to_quat",
    "quat_multiply",
    "quat_conjugate",
    "quat_canonical",
    "transform",
    "project",
    "rotation_error_deg",
    "head_angles",
    "pose_from_angles",
    "intrinsics",
]

#: Rotation of a frontal view: head +y up becomes camera -y (image up), head +z toward the camera.
R_FRONT = np.diag([1.0, -1.0, -1.0])
R_FRONT.setflags(write=False)
#: The quaternion of :data:`R_FRONT` (w, x, y, z).
Q_FRONT = np.array([0.0, 1.0, 0.0, 0.0])
Q_FRONT.setflags(write=False)


# ---------------------------------------------------------------------------- numpy/torch bridge
def _is_numpy_call(*args) -> bool:
    return not any(is_tensor(a) for a in args)


def _to_torch(*args):
    """Convert arguments to torch tensors; returns (tensors, numpy_output_dtype or None)."""
    if _is_numpy_call(*args):
        arrays = [np.asarray(a) for a in args]
        out_dtype = (
            np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
        )
        arrays = [a if a.flags.writeable else a.copy() for a in arrays]
        return [torch.as_tensor(a, dtype=torch.float64) for a in arrays], out_dtype
    ref = next(a for a in args if is_tensor(a))
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.get_default_dtype()
    return [torch.as_tensor(a, dtype=dtype, device=ref.device) for a in args], None


def _from_torch(result, out_dtype):
    if out_dtype is None:
        return result
    if isinstance(result, tuple):
        return tuple(r.detach().numpy().astype(out_dtype) for r in result)
    return result.detach().numpy().astype(out_dtype)


def _bridge(function):
    """Run a torch implementation on numpy or torch inputs (see module docstring)."""

    def wrapper(*args):
        tensors, out_dtype = _to_torch(*args)
        return _from_torch(function(*tensors), out_dtype)

    wrapper.__name__ = function.__name__
    wrapper.__qualname__ = function.__qualname__
    wrapper.__doc__ = function.__doc__
    return wrapper


# ---------------------------------------------------------------------------- quaternions
@_bridge
def quat_to_matrix(q):
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``q (..., 4)`` (w, x, y, z).

    ``q`` is normalized first, so any non-zero quaternion gives a proper rotation.
    """
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


@_bridge
def matrix_to_quat(R):
    """Unit quaternions ``(..., 4)`` with w >= 0 of rotation matrices ``R (..., 3, 3)``.

    Numerically stable for every rotation (the best-conditioned of the four candidate
    formulas is used per matrix); differentiable almost everywhere.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*q_i^2 for each component, from the diagonal.
    four_sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    )
    root = torch.sqrt(torch.clamp(four_sq, min=1e-12))  # 2|q_i|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    candidates = torch.stack(
        (
            torch.stack((root[..., 0] ** 2, d21, d02, d10), dim=-1) / (2 * root[..., 0:1]),
            torch.stack((d21, root[..., 1] ** 2, s10, s02), dim=-1) / (2 * root[..., 1:2]),
            torch.stack((d02, s10, root[..., 2] ** 2, s21), dim=-1) / (2 * root[..., 2:3]),
            torch.stack((d10, s02, s21, root[..., 3] ** 2), dim=-1) / (2 * root[..., 3:4]),
        ),
        dim=-2,
    )  # (..., 4 candidates, 4)
    best = four_sq.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return _canonical(q)


def _canonical(q):
    return torch.where(q[..., :1] < 0, -q, q)


@_bridge
def quat_canonical(q):
    """The same rotation with w >= 0: ``q`` or ``-q``, ``(..., 4)``."""
    return _canonical(q)


@_bridge
def quat_conjugate(q):
    """Conjugate ``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def _hamilton(a, b):
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


@_bridge
def quat_multiply(a, b):
    """Hamilton product ``a ⊗ b`` (..., 4): ``R(a ⊗ b) = R(a) @ R(b)``; batch shapes broadcast."""
    a, b = torch.broadcast_tensors(a, b)
    return _hamilton(a, b)


# ---------------------------------------------------------------------------- points
def _rotate(points, q, t):
    """``R(q) points + t`` with points (..., N, 3), q (..., 4), t (..., 3)."""
    R = quat_to_matrix(q)
    if points.ndim == 3 and R.ndim == 3 and t.ndim == 2 and len(points) == len(R) == len(t):
        return torch.baddbmm(t[:, None, :], points, R.transpose(-1, -2))  # fused, 2x faster
    return points @ R.transpose(-1, -2) + t[..., None, :]


@_bridge
def transform(points, q, t):
    """Head frame → camera frame: ``R(q) x + t`` for ``points (..., N, 3)`` mm, ``q (..., 4)``,
    ``t (..., 3)`` mm; returns ``(..., N, 3)`` mm in the camera frame."""
    return _rotate(points, q, t)


@_bridge
def project(points, q, t, K):
    """Pixels ``(..., N, 2)`` of head-frame ``points (..., N, 3)`` mm seen by camera ``(q, t, K)``.

    ``K`` is ``(3, 3)`` or ``(..., 3, 3)``; ``u = fx X/Z + s Y/Z + cx``, ``v = fy Y/Z + cy`` with
    ``(X, Y, Z) = R(q) x + t``. Integer pixel coordinates are pixel centres. Points with Z <= 0
    (behind the camera) give meaningless pixels: callers that care must check depth.
    """
    cam = _rotate(points, q, t)
    if K.ndim > 2:  # (..., 3, 3): one K per batch element, shared by its N points
        K = K[..., None, :, :]
    homogeneous = (K @ cam[..., None]).squeeze(-1)
    return homogeneous[..., :2] / homogeneous[..., 2:3]


@_bridge
def rotation_error_deg(q1, q2):
    """Angle in degrees ``(...)`` of the rotation between ``q1`` and ``q2`` (both ``(..., 4)``).

    Equals ``2 acos(|<q1, q2>|)`` for unit quaternions (docs/metrics.md), computed as
    ``2 atan2(|vec(q1* ⊗ q2)|, |w(q1* ⊗ q2)|)``, accurate near 0 and 180 degrees; sign of q
    does not matter.
    """
    q1 = q1 / torch.linalg.vector_norm(q1, dim=-1, keepdim=True)
    q2 = q2 / torch.linalg.vector_norm(q2, dim=-1, keepdim=True)
    q1, q2 = torch.broadcast_tensors(q1, q2)
    conj = q1 * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q1.dtype, device=q1.device)
    rel = _hamilton(conj, q2)
    vec = torch.linalg.vector_norm(rel[..., 1:], dim=-1)
    return torch.rad2deg(2 * torch.atan2(vec, rel[..., 0].abs()))


# ---------------------------------------------------------------------------- head angles
def _axis_rotation(angle, axis: str):
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == "y":
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


@_bridge
def head_angles(q):
    """``(yaw, pitch, roll)`` in degrees, each ``(...)``, of camera rotations ``q (..., 4)``.

    Inverse of :func:`pose_from_angles`: ``R(q) = R_FRONT @ Ry(yaw) @ Rx(pitch) @ Rz(roll)``.
    yaw and roll are in (-180, 180], pitch in [-90, 90] (gimbal lock at |pitch| = 90).
    """
    front = torch.tensor(R_FRONT.tolist(), dtype=q.dtype, device=q.device)
    R = front @ quat_to_matrix(q)  # R_head = R_FRONT^T R(q), and R_FRONT^T = R_FRONT
    pitch = torch.atan2(-R[..., 1, 2], torch.hypot(R[..., 1, 0], R[..., 1, 1]))
    yaw = torch.atan2(R[..., 0, 2], R[..., 2, 2])
    roll = torch.atan2(R[..., 1, 0], R[..., 1, 1])
    return torch.rad2deg(yaw), torch.rad2deg(pitch), torch.rad2deg(roll)


@_bridge
def pose_from_angles(yaw, pitch, roll):
    """Camera rotation quaternions ``(..., 4)`` (w >= 0) from head angles in degrees (broadcast).

    ``R = R_FRONT @ Ry(yaw) @ Rx(pitch) @ Rz(roll)``; ``pose_from_angles(0, 0, 0) == Q_FRONT``.
    """
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    R_head = (
        _axis_rotation(torch.deg2rad(yaw), "y")
        @ _axis_rotation(torch.deg2rad(pitch), "x")
        @ _axis_rotation(torch.deg2rad(roll), "z")
    )
    front = torch.tensor(R_FRONT.tolist(), dtype=R_head.dtype, device=R_head.device)
    return matrix_to_quat(front @ R_head)


# ---------------------------------------------------------------------------- intrinsics
def intrinsics(focal_px: float, width: int, height: int | None = None) -> np.ndarray:
    """``K (3, 3)`` float64 for square pixels, focal ``focal_px`` and the principal point at the
    image centre: ``cx = (width - 1) / 2`` because integer coordinates are pixel centres."""
    height = width if height is None else height
    return np.array(
        [[focal_px, 0.0, (width - 1) / 2.0], [0.0, focal_px, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length in pixels giving a horizontal field of view ``fov_deg`` over ``width`` pixels."""
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
