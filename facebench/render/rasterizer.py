"""A pure-torch triangle rasterizer (CPU and CUDA, batched, differentiable barycentrics).

Frames and units (DESIGN.md, :mod:`facebench.conventions`): vertices are given in the **camera
frame** in mm (OpenCV: x right, y down, the camera looks along +z, points in front have Z > 0).
A vertex projects to ``u = fx X/Z + s Y/Z + cx``, ``v = fy Y/Z + cy`` (pixels); integer pixel
coordinates are pixel **centres**, ``(0, 0)`` is the centre of the top-left pixel, and a pixel
``(x, y)`` of an image is ``image[y, x]``. Coverage and barycentrics are sampled at pixel centres
only (no anti-aliasing).

Rules
-----
- **Coverage**: a pixel centre ``p`` is covered by a triangle when all three edge functions are
  positive there, with the **top-left rule** for centres exactly on an edge: a centre on an edge
  counts only when the edge is a *top* edge (horizontal, the triangle below it on screen) or a
  *left* edge (the triangle to its right). Edge functions are evaluated from the two shared
  vertices in one canonical order (lower vertex index first), so two triangles sharing an edge
  compute bit-identical values of opposite sign: every pixel centre on a shared edge is covered
  exactly once — no holes, no double cover.
- **Front faces**: faces are counter-clockwise seen from outside (DESIGN.md). With the camera's
  image y axis pointing down, a front-facing triangle appears **counter-clockwise on the displayed
  image**, i.e. its signed pixel area ``(u1-u0)(v2-v0) - (v1-v0)(u2-u0)`` is **negative**.
  Equivalently its outward normal ``n = (v1-v0)×(v2-v0)`` (camera frame) satisfies ``n·v0 < 0``.
  ``cull_backfaces=True`` drops triangles whose signed pixel area is positive (and degenerate
  ones, of zero area, are always dropped).
- **Near plane**: triangles with any vertex at ``Z < near`` (mm) are discarded whole (no
  clipping). Keep meshes in front of the camera.
- **Visibility**: nearest surface wins (largest ``1/Z`` at the pixel centre, which is affine in
  screen space); exact depth ties go to the lower face index. The depth test and the face id
  come from one ``scatter_reduce(amax)`` on an int64 key (float32 bits of ``1/Z`` in the high 32
  bits, the face index in the low bits).
- **Gradients**: the visible face of each pixel is chosen without gradient; barycentrics and
  depth are then recomputed for the chosen faces with differentiable torch ops (ray/triangle
  intersection through the pixel centre), so gradients flow to the vertex positions through
  :attr:`Fragments.bary` and :attr:`Fragments.depth` (coverage itself is not differentiable).

Algorithm (why it is fast in pure torch): triangles are projected, culled and clipped to their
pixel bounding box; triangles covering no pixel centre are dropped at once (most triangles of a
dense mesh at a small resolution). The rest are bucketed by bounding-box size into square
power-of-two stencils (1×1, 2×2, 4×4, …) evaluated by broadcasting, so every candidate pixel costs
a few fused element-wise operations and one scatter. The B images are processed in one flat pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["Fragments", "rasterize", "as_batched_intrinsics"]

# Which vertex starts / ends the edge opposite vertex i (edge i runs from vertex J[i] to K[i]).
_EDGE_START = (1, 2, 0)
_EDGE_END = (2, 0, 1)
# Rows of the packed per-triangle table (see _triangle_setup).
_A, _B, _UA, _VA, _THR = 0, 3, 6, 9, 12  # first of three rows each (edges 0, 1, 2)
_P, _Q, _R = 15, 16, 17
_XMIN, _XMAX, _YMIN, _YMAX = 18, 19, 20, 21
# Which int32 word of an int64 holds its low bits.
_LOW_WORD = 0 if sys.byteorder == "little" else 1


@dataclass
class Fragments:
    """What is visible at every pixel centre of B images of size H×W.

    Per-pixel data of the N covered pixels is stored packed (component-major, fast to gather);
    :attr:`bary` and :attr:`depth` scatter it into full images on first access.

    Attributes:
        face_id: ``(B, H, W)`` long, index into ``faces`` of the visible triangle, ``-1`` for
            background.
        mask: ``(B, H, W)`` bool, ``face_id >= 0``.
        pix_index: ``(N,)`` long, the covered pixels as flat indices into ``B*H*W`` (ascending).
        faces: ``(F, 3)`` long, the faces that ``face_id`` indexes.
        packed_bary: ``(3, N)`` perspective-correct barycentrics of the covered pixels
            (differentiable w.r.t. the vertices).
        packed_depth: ``(N,)`` camera Z in mm of the covered pixels (differentiable).
        packed_vertex_ids: ``(3, N)`` long, the vertex (in ``0..V-1``) of each corner.
        packed_image: ``(N,)`` long, the image (in ``0..B-1``) of each covered pixel.
    """

    face_id: torch.Tensor
    mask: torch.Tensor
    pix_index: torch.Tensor
    faces: torch.Tensor
    packed_bary: torch.Tensor
    packed_depth: torch.Tensor
    packed_vertex_ids: torch.Tensor
    packed_image: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, H, W)``."""
        return tuple(self.face_id.shape)

    @cached_property
    def bary(self) -> torch.Tensor:
        """``(B, H, W, 3)`` perspective-correct barycentrics at pixel centres (3D barycentrics
        of the point where the pixel ray meets the triangle), weights of the three vertices
        ``faces[face_id]``; zero for background. Differentiable w.r.t. the vertices."""
        out = self.packed_bary.new_zeros(3, self.face_id.numel())
        out = out.index_copy(1, self.pix_index, self.packed_bary)
        return out.T.reshape(*self.shape, 3)

    @cached_property
    def depth(self) -> torch.Tensor:
        """``(B, H, W)`` camera-frame Z in mm of the visible surface at the pixel centre; ``0``
        for background. Differentiable w.r.t. the vertices."""
        out = self.packed_depth.new_zeros(self.face_id.numel())
        return out.index_copy(0, self.pix_index, self.packed_depth).reshape(self.shape)


def as_batched_intrinsics(K, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``K (3, 3)`` or ``(B, 3, 3)`` (numpy or torch) as a ``(B, 3, 3)`` tensor."""
    K = torch.as_tensor(K, dtype=dtype, device=device)
    if K.shape == (3, 3):
        return K.expand(batch, 3, 3)
    if K.shape != (batch, 3, 3):
        raise ValueError(f"K must be (3,3) or ({batch},3,3), got {tuple(K.shape)}")
    return K


def rasterize(
    vertices_cam: torch.Tensor,
    faces: torch.Tensor,
    K,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    near: float = 1.0,
) -> Fragments:
    """Rasterize B meshes sharing one topology at pixel centres (see the module docstring).

    Args:
        vertices_cam: ``(B, V, 3)`` (or ``(V, 3)``, treated as B = 1) vertex positions in the
            camera frame, mm. Float32 or float64, CPU or CUDA; everything runs on its device.
        faces: ``(F, 3)`` integer vertex indices, counter-clockwise seen from outside.
        K: intrinsics ``(3, 3)`` or ``(B, 3, 3)`` in pixels (integer = pixel centre).
        height, width: image size in pixels.
        cull_backfaces: drop triangles whose signed pixel area is positive (clockwise on the
            displayed image: seen from behind).
        near: triangles with a vertex at ``Z < near`` (mm) are discarded.

    Returns:
        :class:`Fragments` with ``(B, H, W)`` face ids, depth (0 = background), barycentrics,
        mask and the flat indices of covered pixels.
    """
    if vertices_cam.ndim == 2:
        vertices_cam = vertices_cam[None]
    if vertices_cam.ndim != 3 or vertices_cam.shape[-1] != 3:
        raise ValueError(f"vertices_cam must be (B,V,3), got {tuple(vertices_cam.shape)}")
    if not vertices_cam.dtype.is_floating_point:
        vertices_cam = vertices_cam.float()
    device, dtype = vertices_cam.device, vertices_cam.dtype
    batch = vertices_cam.shape[0]
    faces = torch.as_tensor(faces, device=device).long()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F,3), got {tuple(faces.shape)}")
    Kb = as_batched_intrinsics(K, batch, dtype, device)

    with torch.no_grad():
        face_flat = _visible_faces(
            vertices_cam.detach(), faces, Kb.detach(), height, width, cull_backfaces, near
        )
    return _fragments(vertices_cam, faces, Kb, face_flat, height, width)


# ---------------------------------------------------------------------------- no-grad pass
def _project(vertices: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flat pixel coordinates ``u, v`` and depth ``z``, each ``(B*V,)``, of camera-frame vertices."""
    x, y, z = vertices.unbind(-1)  # (B, V)
    x = x / z
    y = y / z
    k = K[:, None]
    u = k[..., 0, 0] * x + k[..., 0, 1] * y + k[..., 0, 2]
    v = k[..., 1, 1] * y + k[..., 1, 2]
    return u.reshape(-1), v.reshape(-1), z.reshape(-1)


def _blocks(batch: int, n_faces: int, size: int):
    """``(b0, b1, f0, f1)`` blocks of about ``size`` triangles: whole images, or face ranges."""
    if n_faces >= size:
        for b in range(batch):
            for f0 in range(0, n_faces, size):
                yield b, b + 1, f0, min(n_faces, f0 + size)
    else:
        step = max(1, size // n_faces)
        for b0 in range(0, batch, step):
            yield b0, min(batch, b0 + step), 0, n_faces


def _candidate_triangles(u, v, z, corners, height, width, cull_backfaces, near):
    """Triangles (flat indices over B*F) that may cover a pixel centre, with their corners.

    Returns ``index (T,)`` sorted by bucket, ``counts`` (triangles per bucket: bucket L uses a
    ``2^L × 2^L`` stencil), ``U, V, Z`` each ``(3, T)`` (corner-major), ``area2 (T,)`` (the
    signed doubled pixel area ``(u1-u0)(v2-v0) - (v1-v0)(u2-u0)``) and the pixel bbox ``(4, T)``.
    """
    n = corners.shape[1]
    flat = corners.reshape(-1)
    U = u.index_select(0, flat).view(3, n)
    V = v.index_select(0, flat).view(3, n)
    Z = z.index_select(0, flat).view(3, n)
    area2 = (U[1] - U[0]) * (V[2] - V[0]) - (V[1] - V[0]) * (U[2] - U[0])
    umin = torch.minimum(torch.minimum(U[0], U[1]), U[2]).clamp_(min=0).ceil_()
    umax = torch.maximum(torch.maximum(U[0], U[1]), U[2]).clamp_(max=width - 1).floor_()
    vmin = torch.minimum(torch.minimum(V[0], V[1]), V[2]).clamp_(min=0).ceil_()
    vmax = torch.maximum(torch.maximum(V[0], V[1]), V[2]).clamp_(max=height - 1).floor_()
    zmin = torch.minimum(torch.minimum(Z[0], Z[1]), Z[2])
    valid = (umin <= umax) & (vmin <= vmax) & (zmin >= near)
    valid &= (area2 < 0) if cull_backfaces else (area2 != 0)
    valid &= torch.isfinite(area2)
    # Bucket by the larger side of the pixel bounding box, rounded up to a power of two, and
    # order the kept triangles by bucket (each bucket is then one contiguous slice).
    side = torch.maximum(umax - umin, vmax - vmin).clamp_(min=0) + 1
    bucket = torch.where(valid, torch.ceil(torch.log2(side)), -1.0).to(torch.int8)
    levels = int(bucket.max()) + 1 if bucket.numel() else 0
    parts = [(bucket == level).nonzero().squeeze(1) for level in range(levels)]
    counts = [p.numel() for p in parts]
    index = torch.cat(parts) if parts else valid.nonzero().squeeze(1)
    return (
        index,
        counts,
        U.index_select(1, index),
        V.index_select(1, index),
        Z.index_select(1, index),
        area2.index_select(0, index),
        torch.stack((umin, umax, vmin, vmax)).index_select(1, index),
    )


def _triangle_setup(U, V, Z, vertex_ids, area2, bbox):
    """Packed per-triangle table ``(22, T)``: edge functions, thresholds, 1/Z plane, pixel bbox.

    Rows: ``A_0..2, B_0..2, ua_0..2, va_0..2, thr_0..2, P, Q, R, xmin, xmax, ymin, ymax``.
    Edge ``i`` (opposite corner i, from corner ``i+1`` to ``i+2``) has the edge function
    ``w_i(x, y) = A_i (x - ua_i) + B_i (y - va_i)``, positive inside, where ``a = (ua, va)`` is
    the edge's endpoint of lower vertex index: both triangles sharing an edge evaluate it with
    the same operands, so they see bit-identical values of opposite sign (negation is exact),
    and it is exactly 0 at both endpoints (the two products are exact negatives), so a vertex
    on a pixel centre is handled by the tie rule too. The threshold is 0 for top-left edges
    (``w >= 0`` covers) and the smallest normal float otherwise (``w >= tiny`` is ``w > 0``: a
    non-zero edge function of pixel-scale inputs is never sub-normal).
    ``1/Z = P x + Q y + R`` in pixel coordinates.
    """
    orient = torch.where(area2 > 0, 1.0, -1.0).to(U.dtype)  # ±1 exact: inside positive
    tiny = torch.tensor(torch.finfo(U.dtype).tiny, dtype=U.dtype, device=U.device)
    zero = torch.zeros((), dtype=U.dtype, device=U.device)
    inv_z = (1.0 / Z) / area2.abs()  # (3, T)
    A, B, UA, VA, thr = [], [], [], [], []
    for i in range(3):
        j, k = _EDGE_START[i], _EDGE_END[i]
        swap = vertex_ids[j] > vertex_ids[k]
        ua, ub = torch.where(swap, U[k], U[j]), torch.where(swap, U[j], U[k])
        va, vb = torch.where(swap, V[k], V[j]), torch.where(swap, V[j], V[k])
        sign = torch.where(swap, -orient, orient)
        A.append((va - vb) * sign)
        B.append((ub - ua) * sign)
        UA.append(ua)
        VA.append(va)
        # Edge direction in the positive orientation (clockwise on the displayed image, y down).
        ex, ey = (U[k] - U[j]) * orient, (V[k] - V[j]) * orient
        top_left = (ey < 0) | ((ey == 0) & (ex > 0))
        thr.append(torch.where(top_left, zero, tiny))
    C = [-(A[i] * UA[i] + B[i] * VA[i]) for i in range(3)]
    P = A[0] * inv_z[0] + A[1] * inv_z[1] + A[2] * inv_z[2]
    Q = B[0] * inv_z[0] + B[1] * inv_z[1] + B[2] * inv_z[2]
    R = C[0] * inv_z[0] + C[1] * inv_z[1] + C[2] * inv_z[2]
    return torch.stack((*A, *B, *UA, *VA, *thr, P, Q, R, *bbox.unbind(0)))


#: Work-chunk sizes: small enough for the allocator to recycle buffers (large fresh allocations
#: cost page faults that dominate element-wise work on the CPU), large enough to amortize the
#: per-operation overhead.
_TRIANGLE_CHUNK = 1 << 18
_CANDIDATE_CHUNK = 1 << 20


def _visible_faces(vertices, faces, K, height, width, cull_backfaces, near) -> torch.Tensor:
    """Face id ``(B*H*W,)`` long (``-1`` background) of the nearest covering triangle."""
    batch, n_vertices = vertices.shape[:2]
    n_faces = faces.shape[0]
    device = vertices.device
    u, v, z = _project(vertices, K)
    faces_t = faces.T.contiguous()
    best = torch.zeros(batch * height * width, dtype=torch.int64, device=device)
    for b0, b1, f0, f1 in _blocks(batch, n_faces, _TRIANGLE_CHUNK):
        images = torch.arange(b0, b1, device=device)
        corners = (faces_t[:, None, f0:f1] + (images * n_vertices)[:, None]).reshape(3, -1)
        index, counts, U, V, Z, area2, bbox = _candidate_triangles(
            u, v, z, corners, height, width, cull_backfaces, near
        )
        if index.numel() == 0:
            continue
        vertex_ids = corners.index_select(1, index)  # ids within B*V: same order as within V
        data = _triangle_setup(U, V, Z, vertex_ids, area2, bbox)
        span = f1 - f0
        image = b0 + index // span
        # Low 32 bits: reversed face index, so that amax prefers the lower face index on ties.
        low = ((n_faces - 1 - f0) - index % span).int()
        base = image * (height * width)
        start = 0
        for level, count in enumerate(counts):
            step = max(1, _CANDIDATE_CHUNK >> (2 * level))
            for lo in range(start, start + count, step):
                hi = min(lo + step, start + count)
                _splat(best, data[:, lo:hi], low[lo:hi], base[lo:hi], 2**level, width)
            start += count
    # Keys below 2**32 have no depth bits: no triangle covered the pixel.
    return torch.where(best >= (1 << 32), (n_faces - 1) - (best & 0xFFFFFFFF), -1)


def _splat(best, data, low, base, side, width) -> None:
    """Evaluate ``side×side`` candidate pixels per triangle and z-buffer them into ``best``.

    ``data`` is the ``(22, T)`` table of :func:`_triangle_setup`, ``low (T,)`` int32 low key
    bits, ``base (T,)`` the flat index of each triangle's image's first pixel. Candidates are laid
    out ``(side, side, T)`` (row offset, column offset, triangle) so that element-wise operations
    run contiguously over triangles; x-only and y-only terms are computed on ``(1, s, T)`` and
    ``(s, 1, T)`` slices and combined once (same operation order as a per-pixel evaluation, so
    edge values stay bit-identical between neighbouring triangles).
    """
    offsets = torch.arange(side, dtype=data.dtype, device=data.device)[:, None]  # (s, 1)
    x = (data[_XMIN] + offsets)[None]  # (1, s, T): column
    y = (data[_YMIN] + offsets)[:, None]  # (s, 1, T): row
    if side > 1:
        inside = (x <= data[_XMAX]) & (y <= data[_YMAX])
        x_pix, y_pix = torch.minimum(x, data[_XMAX]), torch.minimum(y, data[_YMAX])
    else:
        inside, x_pix, y_pix = None, x, y
    for i in range(3):
        w = data[_A + i] * (x - data[_UA + i]) + data[_B + i] * (y - data[_VA + i])
        edge = w >= data[_THR + i]
        inside = edge if inside is None else inside & edge
    inv_z = (data[_P] * x + data[_R]) + data[_Q] * y
    # int64 key = high << 32 | low, written as two int32 words without 64-bit
    # arithmetic; high = 0 (no depth) outside the triangle.
    words = torch.empty((*inside.shape, 2), dtype=torch.int32, device=inside.device)
    words[..., _LOW_WORD] = low
    words[..., 1 - _LOW_WORD] = torch.where(inside, inv_z.float().view(torch.int32), 0)
    key = words.view(torch.int64)
    # Out-of-box candidates were clamped onto a valid pixel; their key has high = 0.
    pix = (y_pix.long() * width + base) + x_pix.long()
    best.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amax")


# ---------------------------------------------------------------------------- differentiable pass
def _pixel_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Ray directions ``(B or 1, H*W, 3)``: ``K^-1 [u, v, 1]`` through every pixel centre."""
    dtype, device = K.dtype, K.device
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    grid = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1).reshape(-1, 3)
    if K.shape[0] > 1 and bool((K == K[:1]).all()):
        K = K[:1]
    return grid @ torch.linalg.inv(K).transpose(-1, -2)


def _cross(a, b):
    """Cross product of component tuples ``(x, y, z)`` of equal-shaped tensors."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _fragments(vertices, faces, K, face_flat, height, width) -> Fragments:
    """Differentiable barycentrics and depth of the chosen faces (ray/triangle intersection)."""
    batch, n_vertices = vertices.shape[:2]
    mask = face_flat >= 0
    pix = mask.nonzero().squeeze(1)
    n = pix.numel()
    face = face_flat.index_select(0, pix)
    image = pix // (height * width)
    rays = _pixel_rays(K, height, width)
    ray_index = pix if rays.shape[0] > 1 else pix - image * (height * width)
    d = [rays[..., c].reshape(-1).index_select(0, ray_index) for c in range(3)]
    vertex_ids = torch.stack([faces[:, i].index_select(0, face) for i in range(3)])  # (3, N)
    flat_ids = (vertex_ids + image * n_vertices if batch > 1 else vertex_ids).reshape(-1)
    # corner[c][i]: component c of corner i, each (N,).
    corner = [vertices[..., c].reshape(-1).index_select(0, flat_ids).view(3, n) for c in range(3)]
    v0, v1, v2 = ([corner[c][i] for c in range(3)] for i in range(3))
    # The ray point s*d = sum_i b_i v_i has b_i proportional to d·(v_j × v_k).
    w = torch.stack((_dot(d, _cross(v1, v2)), _dot(d, _cross(v2, v0)), _dot(d, _cross(v0, v1))))
    bary = w / w.sum(0)
    depth = (bary * corner[2]).sum(0)
    shape = (batch, height, width)
    return Fragments(
        face_id=face_flat.reshape(shape),
        mask=mask.reshape(shape),
        pix_index=pix,
        faces=faces,
        packed_bary=bary,
        packed_depth=depth,
        packed_vertex_ids=vertex_ids,
        packed_image=image,
    )
