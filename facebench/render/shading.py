"""Spherical-harmonics (SH) shading and vertex normals (torch, CPU or CUDA, differentiable).

Convention (docs/conventions.md, spherical harmonics): 3 bands, 9 real SH functions of the unit normal
``n = (x, y, z)`` **in the camera frame** (OpenCV: x right, y down, z away from the camera, so a
surface facing the camera has n ≈ (0, 0, -1)); one coefficient set per RGB channel, ``sh (B, 9, 3)``.
Per-vertex irradiance and colour:

    irradiance_c(n) = sum_k sh[k, c] * H_k(n),      colour = reflectance ⊙ irradiance.

Basis normalization (Ramamoorthi & Hanrahan 2001, "An efficient representation for irradiance
environment maps", with the Lambertian convolution folded into the basis): ``H_k = Â_l Y_lm``
where ``Y_lm`` are the orthonormal real SH (∫ Y_lm Y_l'm' dω = δ) and ``Â_0 = π``,
``Â_1 = 2π/3``, ``Â_2 = π/4`` are the clamped-cosine convolution coefficients. In order
``k = l² + l + m``:

    H_0 = π · 0.282095                       (l = 0)
    H_1 = 2π/3 · 0.488603 · y,   H_2 = 2π/3 · 0.488603 · z,   H_3 = 2π/3 · 0.488603 · x
    H_4 = π/4 · 1.092548 · xy,   H_5 = π/4 · 1.092548 · yz,
    H_6 = π/4 · 0.315392 · (3z² − 1),
    H_7 = π/4 · 1.092548 · xz,   H_8 = π/4 · 0.546274 · (x² − y²)

so ``sh`` holds the SH coefficients ``L_lm`` of the incident **radiance** (scaled so that
irradiance 1 leaves the reflectance unchanged, i.e. the 1/π of a Lambertian BRDF is folded into
the radiance). Consequences used by the helpers below:

- a uniform (ambient) light giving irradiance ``E`` everywhere has ``sh[0] = E / (π · 0.282095)``
  and zero elsewhere (:func:`ambient_sh`);
- a distant light of strength ``I`` from direction ``l`` (unit, pointing *toward* the light) has
  ``sh[k] = I · Y_k(l)`` (:func:`directional_sh`) and gives the 3-band approximation of
  ``I · max(0, n·l)``, namely ``I · (1/4 + (n·l)/2 + 5/32 (3 (n·l)² − 1))`` (max error 3/32 · I,
  at n·l = 0).

Deep3DFaceRecon / Tewari et al. use the same three band factors ``Â_l`` with their own signs per
function (their camera frame differs); coefficients are not interchangeable without conversion.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "SH_BAND_FACTORS",
    "sh_basis",
    "sh_orthonormal",
    "sh_irradiance",
    "ambient_sh",
    "directional_sh",
    "default_sh",
    "random_sh",
    "rotate_sh",
    "shade_vertices",
    "vertex_normals_torch",
]

#: Lambertian (clamped cosine) convolution factors Â_l of bands l = 0, 1, 2.
SH_BAND_FACTORS = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_Y00 = 0.5 / math.sqrt(math.pi)  # 0.282095
_Y1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
_Y2 = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548
_Y20 = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392
_Y22 = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274
_BAND_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)


def sh_orthonormal(normals: torch.Tensor) -> torch.Tensor:
    """Orthonormal real SH ``Y_k(n)`` ``(..., 9)`` of unit vectors ``normals (..., 3)``."""
    x, y, z = normals.unbind(-1)
    return torch.stack(
        (
            torch.full_like(x, _Y00),
            _Y1 * y,
            _Y1 * z,
            _Y1 * x,
            _Y2 * x * y,
            _Y2 * y * z,
            _Y20 * (3.0 * z * z - 1.0),
            _Y2 * x * z,
            _Y22 * (x * x - y * y),
        ),
        dim=-1,
    )


def _band_factors(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([SH_BAND_FACTORS[b] for b in _BAND_OF], dtype=like.dtype, device=like.device)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Irradiance basis ``H_k(n) = Â_l Y_k(n)`` ``(..., 9)`` of unit normals ``(..., 3)``
    (camera frame; see the module docstring for the formula)."""
    return sh_orthonormal(normals) * _band_factors(normals)


def sh_irradiance(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """RGB irradiance ``(..., 3)`` at unit ``normals (..., 3)`` (camera frame).

    ``sh`` is ``(9, 3)`` or ``(B, 9, 3)``; with a batch, ``normals`` is ``(B, ..., 3)``.
    ``irradiance[..., c] = sum_k sh[k, c] H_k(n)``.
    """
    basis = sh_basis(normals)  # (..., 9)
    if sh.ndim == 2:
        return basis @ sh.to(basis.dtype)
    flat = basis.reshape(basis.shape[0], -1, 9)
    return (flat @ sh.to(basis.dtype)).reshape(*basis.shape[:-1], 3)


def ambient_sh(rgb, batch: int | None = None, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Coefficients ``(9, 3)`` (or ``(B, 9, 3)``) of a uniform light of irradiance ``rgb``.

    ``rgb`` is a scalar or 3 values; the irradiance is then ``rgb`` for every normal.
    """
    rgb = torch.as_tensor(rgb, dtype=dtype, device=device).expand(3)
    sh = torch.zeros(9, 3, dtype=dtype, device=device)
    sh[0] = rgb / (SH_BAND_FACTORS[0] * _Y00)
    return sh if batch is None else sh.expand(batch, 9, 3).clone()


def directional_sh(direction, rgb=1.0, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Coefficients ``(..., 9, 3)`` of distant lights approximating ``rgb · max(0, n·l)``.

    ``direction (..., 3)`` points from the surface toward the light, camera frame (normalized
    here); ``rgb`` a scalar, ``(3,)`` or ``(..., 3)`` strength. Exact up to the 3-band
    truncation ``1/4 + t/2 + 5/32 (3t² − 1)`` of ``max(0, t)``, ``t = n·l``.
    """
    light = torch.as_tensor(direction, dtype=dtype, device=device)
    light = light / torch.linalg.vector_norm(light, dim=-1, keepdim=True)
    rgb = torch.as_tensor(rgb, dtype=dtype, device=light.device)
    rgb = rgb.expand(*light.shape[:-1], 3) if rgb.ndim <= 1 else rgb
    return sh_orthonormal(light)[..., :, None] * rgb[..., None, :]


def default_sh(batch: int | None = None, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """A neutral white light: ambient 0.6 plus a frontal key light of strength 0.5 from slightly
    above the camera (``l ∝ (0, -0.3, -1)`` camera frame). ``(9, 3)`` or ``(B, 9, 3)``."""
    sh = ambient_sh(0.6, dtype=dtype, device=device) + directional_sh(
        [0.0, -0.3, -1.0], 0.5, dtype=dtype, device=device
    )
    return sh if batch is None else sh.expand(batch, 9, 3).clone()


def random_sh(
    batch: int,
    generator: np.random.Generator | int | None = None,
    *,
    ambient: tuple[float, float] = (0.35, 0.75),
    key: tuple[float, float] = (0.2, 0.7),
    cone_deg: float = 45.0,
    tint: float = 0.1,
    dtype=torch.float32,
    device=None,
) -> torch.Tensor:
    """Random lights ``(B, 9, 3)`` for synthetic data: ambient + one frontal key light.

    Ambient irradiance ~ U(ambient), key strength ~ U(key), key direction uniform in a cone of
    half-angle ``cone_deg`` around the frontal direction ``(0, 0, -1)`` (toward the camera),
    each channel scaled by ``1 + U(-tint, tint)`` (coloured light). Deterministic given an
    integer seed or a numpy ``Generator``.
    """
    rng = np.random.default_rng(generator)
    amb = rng.uniform(*ambient, size=(batch, 1)) * (1 + rng.uniform(-tint, tint, size=(batch, 3)))
    strength = rng.uniform(*key, size=(batch, 1)) * (1 + rng.uniform(-tint, tint, size=(batch, 3)))
    cos_max = math.cos(math.radians(cone_deg))
    cos_t = rng.uniform(cos_max, 1.0, size=batch)
    phi = rng.uniform(0, 2 * math.pi, size=batch)
    sin_t = np.sqrt(1 - cos_t**2)
    direction = np.stack((sin_t * np.cos(phi), sin_t * np.sin(phi), -cos_t), axis=1)
    sh = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    sh[:, 0] = torch.as_tensor(amb, dtype=dtype, device=device) / (SH_BAND_FACTORS[0] * _Y00)
    return sh + directional_sh(
        torch.as_tensor(direction, dtype=dtype, device=device),
        torch.as_tensor(strength, dtype=dtype, device=device),
        dtype=dtype,
        device=device,
    )


def _fibonacci_sphere(n: int, dtype, device) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack((r * torch.cos(phi), r * torch.sin(phi), z), dim=1).to(dtype=dtype, device=device)


def rotate_sh(sh: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Coefficients ``(..., 9, 3)`` of the light ``sh`` rotated by ``R (..., 3, 3)``.

    The result satisfies ``sh_irradiance(R n, rotate_sh(sh, R)) == sh_irradiance(n, sh)``: use it
    to carry a light with a change of camera frame. Bands of degree ≤ 2 are closed under
    rotation, so the exact coefficients are found by least squares on 32 directions.
    """
    dirs = _fibonacci_sphere(32, sh.dtype, sh.device)  # (S, 3)
    basis = sh_basis(dirs)  # (S, 9)
    # Irradiance of the rotated light at d equals the original one at R^T d.
    back = dirs @ R  # (..., S, 3): rows are R^T d
    values = sh_basis(back) @ sh  # (..., S, 3)
    return torch.linalg.pinv(basis) @ values


def vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(..., V, 3)`` of ``vertices (..., V, 3)``.

    ``faces (F, 3)`` counter-clockwise seen from outside, so normals point outward; they are in
    the vertices' frame (pass camera-frame vertices for SH shading). Differentiable; vertices
    used by no face get a zero normal.
    """
    faces = torch.as_tensor(faces, device=vertices.device).long()
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    face_normals = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # length = 2 × area
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(-2, faces[:, i], face_normals)
    length = torch.linalg.vector_norm(normals, dim=-1, keepdim=True)
    return normals / length.clamp(min=eps)


def shade_vertices(
    vertices_cam: torch.Tensor, faces: torch.Tensor, reflectance: torch.Tensor, sh: torch.Tensor
) -> torch.Tensor:
    """Vertex colours ``(B, V, 3)`` = reflectance ⊙ SH irradiance of camera-frame vertex normals.

    ``vertices_cam (B, V, 3)`` mm camera frame, ``reflectance (V, 3)`` or ``(B, V, 3)`` linear
    RGB, ``sh (9, 3)`` or ``(B, 9, 3)``.
    """
    normals = vertex_normals_torch(vertices_cam, faces)
    if sh.ndim == 2:
        sh = sh.expand(vertices_cam.shape[0], 9, 3)
    return reflectance * sh_irradiance(normals, sh)
