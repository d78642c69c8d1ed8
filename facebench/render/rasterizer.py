"""A triangle rasterizer in torch (CPU and CUDA, batched, differentiable barycentrics), with a C
kernel for its gradient-free passes on the CPU (:mod:`facebench.render.native`, same bits).

Frames and units (docs/conventions.md, :mod:`facebench.conventions`): vertices are given in the **camera
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
- **Front faces**: faces are counter-clockwise seen from outside (docs/conventions.md). With the camera's
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
  bits, the reversed flat triangle index ``B*F - 1 - (b*F + f)`` in the low bits).
- **Gradients**: the visible face of each pixel is chosen without gradient; barycentrics and
  depth are then recomputed for the chosen faces with differentiable torch ops (ray/triangle
  intersection through the pixel centre), so gradients flow to the vertex positions through
  :attr:`Fragments.bary` and :attr:`Fragments.depth` (coverage itself is not differentiable).

Algorithm (why it is fast in pure torch): a classification pass projects the triangles of all B
images, culls them and clips them to their pixel bounding box; triangles covering no pixel centre
are dropped (most triangles of a dense mesh at a small resolution). One sort groups the rest by
bounding-box size rounded up to powers of two per axis (1×1, 1×2, 2×1, 2×2, 4×2, …); each group
is evaluated on a rectangular stencil of its size by broadcasting, so every candidate pixel costs
a few element-wise operations and one scatter. The CPU is memory-bound here: every pass works on
cache-sized chunks, and the large per-call work buffers are kept and reused across calls (per
thread, on the CPU; about 60 bytes per triangle of a call, e.g. 58 MB for 16 images of 60k
triangles). The visible faces' barycentrics and depth are computed in chunks as well.

On the CPU (float32/float64) the visibility pass, and the barycentric pass when no gradient is
recorded, run instead in the C kernel of :mod:`facebench.render.native`: the same operations in
the same order, one loop per triangle and per covered pixel, about 4x faster for a dense mesh
(``perf/bench_render.py``); face ids, depth and barycentrics are bit-identical
(``tests/test_rasterizer_native.py``). Where it cannot be built (no C compiler) or
``FACEBENCH_NATIVE=0``, the torch passes run.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from functools import cached_property

import torch

__all__ = ["Fragments", "rasterize", "as_batched_intrinsics"]

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
    #: ``(V, (N, 3) int)``: vertex indices into the flattened ``(B*V)`` vertices, pixel-major
    #: (set by :func:`rasterize`, used by :func:`~facebench.render.interpolate`).
    _flat_vertex_ids: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, H, W)``."""
        return tuple(self.face_id.shape)

    @cached_property
    def bary(self) -> torch.Tensor:
        """``(B, H, W, 3)`` perspective-correct barycentrics at pixel centres (3D barycentrics
        of the point where the pixel ray meets the triangle), weights of the three vertices
        ``faces[face_id]``; zero for background. Differentiable w.r.t. the vertices."""
        out = self.packed_bary.new_zeros(self.face_id.numel(), 3)
        out.index_copy_(0, self.pix_index, self.packed_bary.T)
        return out.view(*self.shape, 3)

    @cached_property
    def depth(self) -> torch.Tensor:
        """``(B, H, W)`` camera-frame Z in mm of the visible surface at the pixel centre; ``0``
        for background. Differentiable w.r.t. the vertices."""
        out = self.packed_depth.new_zeros(self.face_id.numel())
        out.index_copy_(0, self.pix_index, self.packed_depth)
        return out.view(self.shape)


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
        face_flat, covered = _visible_faces(
            vertices_cam.detach(), faces, Kb.detach(), height, width, cull_backfaces, near
        )
    return _fragments(vertices_cam, faces, Kb, face_flat, height, width, covered)


def _native(tensor: torch.Tensor):
    """The C kernel (:mod:`facebench.render.native`) for CPU float32/float64 tensors, else None."""
    if tensor.device.type != "cpu" or tensor.dtype not in (torch.float32, torch.float64):
        return None
    from facebench.render import native

    return native.kernel()


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


# ---------------------------------------------------------------------------- no-grad pass
#: Work-chunk sizes: triangles per block of the classification pass and per chunk of the
#: evaluation pass, and candidate pixels per evaluation chunk. Small enough for every
#: element-wise operation to run in the CPU cache (the work is memory-bound), large enough to
#: amortize the per-operation overhead.
_TRIANGLE_CHUNK = 1 << 17
_CANDIDATE_CHUNK = 1 << 18
#: Bucket code of triangles that cover no pixel centre (sorts after every real bucket).
_NO_BUCKET = (1 << 15) - 1
#: Rows of the per-triangle table filled by the classification pass (corners sorted by vertex
#: index): pixel coordinates and 1/Z of the three corners.
_U, _V, _IZ = 0, 3, 6  # first of three rows each (corners 0, 1, 2)
_ROWS = 9


_workspace = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialized work tensor; on the CPU the storage is kept (per thread) and reused by
    the next call, which saves the page faults of fresh large allocations (the CUDA caching
    allocator already reuses memory)."""
    numel = math.prod(shape)
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    store = _workspace.__dict__
    cached = store.get(name)
    if cached is None or cached.dtype != dtype or cached.numel() < numel:
        cached = store[name] = torch.empty(numel, dtype=dtype)
    return cached[:numel].view(shape)


def _project(vertices: torch.Tensor, K: torch.Tensor, near: float) -> tuple[torch.Tensor, ...]:
    """Pixel coordinates ``u, v`` and inverse depth ``1/z``, each ``(B, V)``, of camera-frame
    vertices; ``u`` is NaN for vertices nearer than ``near`` (their triangles get no bbox)."""
    x, y, z = vertices.unbind(-1)  # (B, V)
    x = x / z
    y = y / z
    k = K[:, None]
    u = k[..., 0, 0] * x + k[..., 0, 1] * y + k[..., 0, 2]
    v = k[..., 1, 1] * y + k[..., 1, 2]
    u = torch.where(z >= near, u, torch.nan)
    return u, v, 1.0 / z


def _blocks(batch: int, n_faces: int, size: int):
    """``(b0, b1, f0, f1)`` blocks of about ``size`` triangles: whole images, or face ranges.
    The triangles ``b*F + f`` of a block are contiguous."""
    if n_faces >= size:
        for b in range(batch):
            for f0 in range(0, n_faces, size):
                yield b, b + 1, f0, min(n_faces, f0 + size)
    else:
        step = max(1, size // max(n_faces, 1))
        for b0 in range(0, batch, step):
            yield b0, min(batch, b0 + step), 0, n_faces


def _visible_faces(vertices, faces, K, height, width, cull_backfaces, near):
    """Face id ``(B*H*W,)`` long (``-1`` background) of the nearest covering triangle, and the
    number of covered pixels when known (None).

    Every triangle of every image has a flat index ``t = b*F + f``. A classification pass fills
    a per-triangle table and a bucket code (pixel bbox rounded up to powers of two); the
    triangles that may cover a pixel centre are sorted by bucket and evaluated bucket by bucket
    on stencils of the bucket's size. The z-buffer holds int64 keys ``bits(1/Z) << 32 |
    (B*F - 1 - t)``: within one image a lower face has a larger low word, so ``amax`` prefers it
    on exact depth ties.
    """
    batch = vertices.shape[0]
    n_faces = faces.shape[0]
    n_total = batch * n_faces
    device, dtype = vertices.device, vertices.dtype
    if n_total >= 1 << 32:
        raise ValueError(f"too many triangles in one call ({batch} x {n_faces}): split the batch")
    hw = height * width
    # Corners sorted by vertex index: every edge then runs from its lower-index vertex at a
    # fixed position; sorting with an odd permutation flips the orientation.
    sorted_faces, order = faces.sort(dim=1)
    odd = (order[:, 0] + 1) % 3 != order[:, 1]  # (F,)
    lib = _native(vertices)
    if lib is not None and n_faces and not (faces.min() >= 0 and faces.max() < vertices.shape[1]):
        lib = None  # the C loops do not check indices: the torch pass raises its IndexError
    if lib is not None:  # the same arithmetic (projection included) in C loops
        vertices, K = vertices.contiguous(), K.contiguous()
        corners, odd8 = sorted_faces.contiguous(), odd.to(torch.uint8)  # alive during the call
        face = torch.empty(batch * hw, dtype=torch.int64)
        uvz = _buffer("uvz", (3 * vertices.shape[1],), dtype, device)
        key = _buffer("key", (hw,), torch.int64, device)
        covered = getattr(lib, f"fb_visible_{_suffix(dtype)}")(
            batch, vertices.shape[1], n_faces, vertices.data_ptr(), K.data_ptr(), near,
            uvz.data_ptr(), corners.data_ptr(), odd8.data_ptr(), height, width,
            int(cull_backfaces), key.data_ptr(), face.data_ptr(),
        )
        return face, covered
    uvz = _project(vertices, K, near)
    corner_ids = sorted_faces.T.contiguous()  # (3, F)
    table = _buffer("table", (_ROWS, n_total), dtype, device)
    pix0 = _buffer("pix0", (n_total,), torch.int64, device)
    code = _buffer("code", (n_total,), torch.int16, device)
    for block in _blocks(batch, n_faces, _TRIANGLE_CHUNK):
        _classify(table, pix0, code, uvz, corner_ids, odd, block, height, width, cull_backfaces)
    codes = _buffer("codes", (n_total,), torch.int16, device)
    order = _buffer("order", (n_total,), torch.int64, device)
    torch.sort(code, stable=True, out=(codes, order))
    buckets, counts = (c.tolist() for c in torch.unique_consecutive(codes, return_counts=True))
    # Spare pixels after the last image take the writes of stencil cells beyond their image.
    best = _buffer("best", (batch * hw + hw + 2 * width + 2,), torch.int64, device).zero_()
    start = 0
    for bucket, count in zip(buckets, counts):
        if bucket == _NO_BUCKET:
            break
        cols, rows = 1 << (bucket // 32), 1 << (bucket % 32)
        offsets = (
            torch.arange(rows, device=device)[:, None] * width + torch.arange(cols, device=device)
        )[..., None]  # (rows, cols, 1)
        step = max(1, min(_TRIANGLE_CHUNK, _CANDIDATE_CHUNK // (rows * cols)))
        for lo in range(start, start + count, step):
            index = order[lo : min(lo + step, start + count)]
            data = _triangle_setup(table, index, rows, cols, width, height)
            low = ((n_total - 1) - index).int()
            _splat(best, data, low, pix0.index_select(0, index) + offsets, rows, cols)
        start += count
    key = best[: batch * hw].view(batch, hw)
    face = _buffer("face", (batch, hw), torch.int64, device)
    torch.bitwise_and(key, 0xFFFFFFFF, out=face)  # B*F - 1 - t
    face.neg_().add_(n_total - 1).sub_(torch.arange(batch, device=device)[:, None] * n_faces)
    # Keys below 2**32 have no depth bits: no triangle covered the pixel.
    return torch.where(key >= 1 << 32, face, -1).view(-1), None


def _classify(table, pix0, code, uvz, corner_ids, odd, block, height, width, cull) -> None:
    """Fill the table rows, ``pix0`` and the bucket ``code`` of the triangles of one block.

    ``pix0``: flat pixel index of the bbox's top-left pixel; ``code = 32 ex + ey`` for a
    ``2^ex × 2^ey`` (columns × rows) stencil, ``_NO_BUCKET`` when the triangle is discarded
    (no pixel centre in its bbox, behind the near plane, degenerate, not finite, or culled).
    """
    b0, b1, f0, f1 = block
    n_faces = corner_ids.shape[1]
    nb, m = b1 - b0, f1 - f0
    t0 = b0 * n_faces + f0
    rows = table[:, t0 : t0 + nb * m].view(_ROWS, nb, m)
    for c in range(3):
        ids = corner_ids[c, f0:f1]
        for first, values in zip((_U, _V, _IZ), uvz):
            for b in range(nb):  # 1-D gathers are faster than one along dim 1
                torch.index_select(values[b0 + b], 0, ids, out=rows[first + c, b])
    U, V = rows[_U : _U + 3], rows[_V : _V + 3]
    area2 = _area2(U, V)
    bbox = [_bbox(U, width), _bbox(V, height)]
    (xmin, xmax), (ymin, ymax) = bbox
    valid = (xmin <= xmax) & (ymin <= ymax) & torch.isfinite(area2)
    if cull:  # the signed area in the face's own corner order must be negative
        valid &= torch.where(odd[f0:f1], area2 > 0, area2 < 0)
    else:
        valid &= area2 != 0
    # Exponent of (size - 1) from the float bits: 0 for 1 pixel, 1 for 2, 2 for 3..4, ...
    ex, ey = (
        ((hi - lo).float().view(torch.int32) >> 23).sub_(126).clamp_(min=0) for lo, hi in bbox
    )
    code[t0 : t0 + nb * m].view(nb, m).copy_(torch.where(valid, ex * 32 + ey, _NO_BUCKET))
    if height * width < 1 << 24:  # exact in float32
        corner = torch.add(xmin, ymin, alpha=width).long()
    else:
        corner = ymin.long() * width + xmin.long()
    images = torch.arange(b0, b1, device=corner.device)[:, None] * (height * width)
    torch.add(corner, images, out=pix0[t0 : t0 + nb * m].view(nb, m))


def _area2(U, V):
    """Signed doubled pixel area ``(u1-u0)(v2-v0) - (v1-v0)(u2-u0)`` of corners ``U, V``."""
    return (U[1] - U[0]) * (V[2] - V[0]) - (V[1] - V[0]) * (U[2] - U[0])


def _bbox(values, size, upper=True):
    """First and last pixel-centre coordinate (clipped to ``0 .. size-1``) in the range of the
    three corner coordinates ``values``; the last is None unless ``upper``."""
    lo = torch.minimum(torch.minimum(values[0], values[1]), values[2]).clamp_(min=0).ceil_()
    if not upper:
        return lo, None
    hi = torch.maximum(torch.maximum(values[0], values[1]), values[2]).clamp_(max=size - 1).floor_()
    return lo, hi


def _triangle_setup(table, index, rows, cols, width, height):
    """Per-triangle rows (each ``(T,)``) for :func:`_splat` of the triangles ``index``.

    Returns ``[A_0..2, B_0..2, ua_0..2, va_0..2, thr_0..2, P, Q, R, xmin, xmax, ymin, ymax]``
    (``xmax``/``ymax`` are None when the stencil fits the bbox exactly).
    Edge ``i`` (opposite corner i) has the edge function ``w_i(x, y) = A_i (x - ua_i) + B_i
    (y - va_i)``, positive inside, where ``a = (ua, va)`` is the edge's endpoint of lower vertex
    index: both triangles sharing an edge evaluate it with the same operands, so they see
    bit-identical values of opposite sign (negation is exact), and it is exactly 0 at both
    endpoints (the two products are exact negatives), so a vertex on a pixel centre is handled
    by the tie rule too. The threshold is 0 for top-left edges (``w >= 0`` covers) and the
    smallest normal float otherwise (``w >= tiny`` is ``w > 0``: a non-zero edge function of
    pixel-scale inputs is never sub-normal). ``1/Z = P x + Q y + R`` in pixel coordinates.

    With the corners 0, 1, 2 sorted by vertex index the edges are (1, 2), (0, 2) and (0, 1)
    (from the lower index); with ``s = ±1`` the sign of the (sorted) ``area2``, the
    inside-positive functions are ``s`` times the raw ones ``(va - vb)(x - ua) + (ub - ua)(y -
    va)`` of (1, 2) and (0, 1) and ``-s`` times that of (0, 2).
    """
    def take(row):
        return table[row].index_select(0, index)

    U0, U1, U2, V0, V1, V2, iz0, iz1, iz2 = (take(r) for r in range(_ROWS))
    e01u, e01v, e02u, e02v = U1 - U0, V1 - V0, U2 - U0, V2 - V0
    area2 = e01u * e02v - e01v * e02u  # as _area2 (same operations, same bits)
    xmin, xmax = _bbox((U0, U1, U2), width, cols > 2)
    ymin, ymax = _bbox((V0, V1, V2), height, rows > 2)
    dtype, device = U0.dtype, U0.device
    one = torch.ones((), dtype=dtype, device=device)
    s = torch.where(area2 > 0, one, -one)
    ns = -s
    e12u, e12v = U2 - U1, V2 - V1
    # (va - vb) s for (1, 2) and (0, 1), -(va - vb) s = (vb - va) s for (0, 2); same for u.
    A = [e12v * ns, e02v * s, e01v * ns]
    B = [e12u * s, e02u * ns, e01u * s]
    tiny = torch.tensor(torch.finfo(dtype).tiny, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    # Top-left: with (ex, ey) = (B, -A) the edge direction in the inside-positive orientation
    # (clockwise on the displayed image, y down), top (ey == 0, ex > 0) or left (ey < 0),
    # i.e. A > 0, or A == 0 and B > 0.
    thr = [torch.where(torch.where(a == 0, b, a) > 0, zero, tiny) for a, b in zip(A, B)]
    d1, d2 = iz1 - iz0, iz2 - iz0
    inv_area = 1.0 / area2
    P = (d1 * e02v - d2 * e01v).mul_(inv_area)
    Q = (d2 * e01u - d1 * e02u).mul_(inv_area)
    R = iz0 - P * U0 - Q * V0
    return [*A, *B, U1, U0, U0, V1, V0, V0, *thr, P, Q, R, xmin, xmax, ymin, ymax]


def _splat(best, data, low, pix, rows, cols) -> None:
    """Evaluate ``rows×cols`` candidate pixels per triangle and z-buffer them into ``best``.

    ``data`` are the rows of :func:`_triangle_setup`, ``low (T,)`` int32 low key bits,
    ``pix (rows, cols, T)`` the flat indices of the candidate pixels. Candidates are laid out
    ``(rows, cols, T)`` so that element-wise operations run contiguously over triangles; x-only
    and y-only terms are computed on ``(1, cols, T)`` and ``(rows, 1, T)`` slices and combined
    once (same operation order as a per-pixel evaluation, so edge values stay bit-identical
    between neighbouring triangles). Stencils of 1 or 2 cells per axis fit the bbox exactly;
    larger ones reject cells beyond it (their writes land on other pixels, with no depth bits).
    """
    A, B, UA, VA, THR = data[0:3], data[3:6], data[6:9], data[9:12], data[12:15]
    P, Q, R, xmin, xmax, ymin, ymax = data[15:22]
    dtype, device = xmin.dtype, xmin.device
    x, y = xmin, ymin
    if cols > 1:
        x = xmin + torch.arange(cols, dtype=dtype, device=device)[:, None]  # (cols, T)
    if rows > 1:
        y = ymin + torch.arange(rows, dtype=dtype, device=device)[:, None, None]  # (rows, 1, T)
    inside = None
    for i in range(3):
        tx = A[i] * (x - UA[i])
        ty = B[i] * (y - VA[i])
        if i == 0 and xmax is not None:
            tx = torch.where(x <= xmax, tx, -torch.inf)
        if i == 0 and ymax is not None:
            ty = torch.where(y <= ymax, ty, -torch.inf)
        edge = (tx + ty) >= THR[i]
        inside = edge if inside is None else inside.logical_and_(edge)
    inv_z = (P * x + R) + Q * y
    # int64 key = high << 32 | low, written as two int32 words without 64-bit
    # arithmetic; high = 0 (no depth) outside the triangle.
    words = torch.empty((*inside.shape, 2), dtype=torch.int32, device=device)
    words[..., _LOW_WORD] = low
    zero = torch.zeros((), dtype=torch.int32, device=device)
    torch.where(inside, inv_z.float().view(torch.int32), zero, out=words[..., 1 - _LOW_WORD])
    best.scatter_reduce_(0, pix.reshape(-1), words.view(torch.int64).reshape(-1), reduce="amax")


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


def _bary_depth(d, v0, v1, v2):
    """Barycentrics ``(b0, b1, b2)`` and camera Z of the points where rays ``d`` meet the
    triangles ``(v0, v1, v2)`` (component tuples of equal-shaped tensors)."""
    # The ray point s*d = sum_i b_i v_i has b_i proportional to d·(v_j × v_k).
    w = (_dot(d, _cross(v1, v2)), _dot(d, _cross(v2, v0)), _dot(d, _cross(v0, v1)))
    inv_total = 1.0 / (w[0] + w[1] + w[2])
    bary = [wi * inv_total for wi in w]
    return bary, bary[0] * v0[2] + bary[1] * v1[2] + bary[2] * v2[2]


#: Covered pixels per chunk of the (gradient-free) fragment pass.
_PIXEL_CHUNK = 1 << 17


def _fragments(vertices, faces, K, face_flat, height, width, covered=None) -> Fragments:
    """Differentiable barycentrics and depth of the chosen faces (ray/triangle intersection).

    Per-pixel arrays are built pixel-major (``(N, 3)``, what :func:`interpolate` gathers with)
    and exposed component-major as transposed views. Without gradients the work runs in
    cache-sized chunks (same operations, same bits), or in the C kernel on the CPU (same bits
    again; ``covered`` is then the number of covered pixels when known).
    """
    batch, n_vertices = vertices.shape[:2]
    device, dtype = vertices.device, vertices.dtype
    hw = height * width
    grad = torch.is_grad_enabled() and (vertices.requires_grad or K.requires_grad)
    lib = None if grad else _native(vertices)
    if lib is not None:
        return _fragments_native(lib, vertices, faces, K, face_flat, height, width, covered)
    mask = face_flat >= 0
    pix = mask.nonzero().squeeze(1)
    n = pix.numel()
    face = torch.index_select(face_flat, 0, pix, out=_buffer("pixel_face", (n,), torch.int64, device))
    counts = mask.view(batch, hw).sum(1)
    image = torch.repeat_interleave(torch.arange(batch, device=device), counts, output_size=n)
    rays = _pixel_rays(K, height, width)
    if rays.shape[0] > 1:
        ray_index = pix
    elif grad:  # saved for backward: no reused buffer
        ray_index = pix - image * hw
    else:
        ray_index = torch.mul(image, hw, out=_buffer("ray_index", (n,), torch.int64, device))
        torch.sub(pix, ray_index, out=ray_index)
    ray_table = [c.reshape(-1) for c in rays.unbind(-1)]
    faces_t = faces.T.contiguous()
    components = [c.reshape(-1) for c in vertices.unbind(-1)]
    flat_dtype = torch.int32 if batch * n_vertices < 1 << 31 else torch.int64
    ids = torch.empty((3, n), dtype=faces.dtype, device=device)
    flat = torch.empty((n, 3), dtype=flat_dtype, device=device)
    if not grad:
        bary = torch.empty((n, 3), dtype=dtype, device=device)
        depth = torch.empty(n, dtype=dtype, device=device)
    for lo in [0] if grad else range(0, n, _PIXEL_CHUNK):
        sl = slice(lo, n if grad else min(n, lo + _PIXEL_CHUNK))
        offset = image[sl] * n_vertices if batch > 1 else None
        corners = []
        for i in range(3):
            c = torch.index_select(faces_t[i], 0, face[sl], out=ids[i, sl])
            f = (c if offset is None else c + offset).to(flat_dtype, copy=True)
            flat[sl, i] = f
            corners.append([comp.index_select(0, f) for comp in components])
        d = [r.index_select(0, ray_index[sl]) for r in ray_table]
        b, z = _bary_depth(d, *corners)
        if grad:
            bary, depth = torch.stack(b, dim=1), z
        else:
            for i in range(3):
                bary[sl, i] = b[i]
            depth[sl] = z
    return _packed_fragments(face_flat, mask, (batch, height, width), pix, faces, bary, depth, ids, image,
                             n_vertices, flat)


def _packed_fragments(face_flat, mask, shape, pix, faces, bary, depth, ids, image, n_vertices, flat) -> Fragments:
    """The :class:`Fragments` of both fragment passes: per-pixel ``face_flat`` / ``mask`` reshaped to
    ``shape`` ``(B, H, W)``, packed per visible pixel ``bary (N, 3)`` (stored transposed), ``depth (N,)``,
    vertex ids ``ids (3, N)``, and the flat vertex ids ``flat (N, 3)`` into ``B * n_vertices``."""
    fragments = Fragments(
        face_id=face_flat.reshape(shape),
        mask=mask.reshape(shape),
        pix_index=pix,
        faces=faces,
        packed_bary=bary.T,
        packed_depth=depth,
        packed_vertex_ids=ids,
        packed_image=image,
    )
    fragments._flat_vertex_ids = (n_vertices, flat)
    return fragments


def _fragments_native(lib, vertices, faces, K, face_flat, height, width, covered) -> Fragments:
    """:func:`_fragments` without gradients by the C kernel (same outputs, same bits)."""
    batch, n_vertices = vertices.shape[:2]
    dtype = vertices.dtype
    hw = height * width
    n = int((face_flat >= 0).sum()) if covered is None else covered
    rays = _pixel_rays(K, height, width).contiguous()
    vertices = vertices.contiguous()
    faces_c = faces.contiguous()
    flat64 = batch * n_vertices >= 1 << 31
    pix = torch.empty(n, dtype=torch.int64)
    image = torch.empty(n, dtype=torch.int64)
    ids = torch.empty((3, n), dtype=faces.dtype)
    flat = torch.empty((n, 3), dtype=torch.int64 if flat64 else torch.int32)
    bary = torch.empty((n, 3), dtype=dtype)
    depth = torch.empty(n, dtype=dtype)
    face_flat = face_flat.contiguous()
    getattr(lib, f"fb_fragments_{_suffix(dtype)}")(
        batch, n_vertices, hw, vertices.data_ptr(), faces_c.data_ptr(), rays.data_ptr(),
        int(rays.shape[0] > 1), face_flat.data_ptr(), pix.data_ptr(), image.data_ptr(),
        ids.data_ptr(), flat.data_ptr(), int(flat64), bary.data_ptr(), depth.data_ptr(), n,
    )
    return _packed_fragments(face_flat, face_flat >= 0, (batch, height, width), pix, faces, bary, depth, ids,
                             image, n_vertices, flat)
