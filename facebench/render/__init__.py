"""Rendering of face meshes in torch: rasterizer, interpolation, SH shading (CPU and CUDA); the
rasterizer's gradient-free CPU passes run in a small C kernel (:mod:`facebench.render.native`).

- :func:`rasterize` — camera-frame vertices ``(B, V, 3)`` mm + faces + K → :class:`Fragments`
  (face id, depth, perspective-correct barycentrics at pixel centres, mask).
- :func:`interpolate` — per-vertex attributes → per-pixel ``(B, H, W, C)``.
- :mod:`facebench.render.shading` — 3-band SH irradiance in the camera frame, vertex normals.
- :func:`render` — head-frame mesh + pose (q, t) + K → image, mask and fragments.

Conventions are those of :mod:`facebench.conventions` (OpenCV pinhole, pixel centres at integer
coordinates, ``x_cam = R(q) x + t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facebench import conventions
from facebench.render.interpolate import interpolate
from facebench.render.rasterizer import Fragments, rasterize
from facebench.render.shading import (
    ambient_sh,
    default_sh,
    directional_sh,
    random_sh,
    rotate_sh,
    sh_basis,
    sh_irradiance,
    shade_vertices,
    vertex_normals_torch,
)

__all__ = [
    "Fragments",
    "RenderOutput",
    "rasterize",
    "interpolate",
    "render",
    "sh_basis",
    "sh_irradiance",
    "ambient_sh",
    "directional_sh",
    "default_sh",
    "random_sh",
    "rotate_sh",
    "shade_vertices",
    "vertex_normals_torch",
]


@dataclass
class RenderOutput:
    """Result of :func:`render`.

    Attributes:
        image: ``(B, H, W, 3)`` linear RGB; background pixels hold ``background``.
        mask: ``(B, H, W)`` bool, pixels covered by the mesh.
        fragments: the :class:`Fragments` (face ids, depth in mm, barycentrics).
        vertex_colors: ``(B, V, 3)`` the per-vertex colours that were interpolated.
    """

    image: torch.Tensor
    mask: torch.Tensor
    fragments: Fragments
    vertex_colors: torch.Tensor


def render(
    vertices_head: torch.Tensor,
    faces: torch.Tensor,
    q: torch.Tensor,
    t: torch.Tensor,
    K,
    height: int,
    width: int,
    *,
    colors: torch.Tensor | None = None,
    reflectance: torch.Tensor | None = None,
    sh: torch.Tensor | None = None,
    background=0.0,
    cull_backfaces: bool = True,
    near: float = 1.0,
) -> RenderOutput:
    """Render head-frame meshes seen by cameras ``(q, t, K)`` with per-vertex (Gouraud) colours.

    Args:
        vertices_head: ``(B, V, 3)`` mm, head frame.
        faces: ``(F, 3)`` counter-clockwise seen from outside.
        q: ``(B, 4)`` (or ``(4,)``) camera rotations (w, x, y, z); t: ``(B, 3)`` mm.
        K: ``(3, 3)`` or ``(B, 3, 3)`` intrinsics in pixels.
        colors: ``(V, 3)`` or ``(B, V, 3)`` unlit vertex colours (used as they are), or
        reflectance: ``(V, 3)`` or ``(B, V, 3)`` linear RGB reflectance, shaded with
        sh: ``(9, 3)`` or ``(B, 9, 3)`` SH light in the camera frame (default
            :func:`default_sh`); colour = reflectance ⊙ irradiance of the camera-frame vertex
            normal. Without ``colors`` and ``reflectance`` the surface is white (reflectance 1).
        background: scalar or RGB value of uncovered pixels.
        cull_backfaces, near: passed to :func:`rasterize`.

    Returns:
        :class:`RenderOutput`; differentiable w.r.t. vertices, pose, colours and light.
    """
    if vertices_head.ndim == 2:
        vertices_head = vertices_head[None]
    batch = vertices_head.shape[0]
    dtype, device = vertices_head.dtype, vertices_head.device
    q = torch.as_tensor(q, dtype=dtype, device=device).expand(batch, 4)
    t = torch.as_tensor(t, dtype=dtype, device=device).expand(batch, 3)
    vertices_cam = conventions.transform(vertices_head, q, t)
    fragments = rasterize(
        vertices_cam, faces, K, height, width, cull_backfaces=cull_backfaces, near=near
    )
    if colors is None:
        if reflectance is None:
            reflectance = torch.ones(1, dtype=dtype, device=device).expand(vertices_head.shape)
        if sh is None:
            sh = default_sh(dtype=dtype, device=device)
        colors = shade_vertices(vertices_cam, fragments.faces, reflectance, sh)
    colors = torch.as_tensor(colors, device=device).to(dtype)
    colors = colors.expand(batch, *colors.shape[-2:]) if colors.ndim == 2 else colors
    image = interpolate(fragments, colors)
    fill = torch.as_tensor(background, dtype=image.dtype, device=device).expand(3)
    image = torch.where(fragments.mask[..., None], image, fill)
    return RenderOutput(image=image, mask=fragments.mask, fragments=fragments, vertex_colors=colors)
