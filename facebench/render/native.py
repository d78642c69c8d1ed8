"""The rasterizer's CPU kernel in C: the gradient-free passes of :func:`~facebench.render.rasterize`
(which triangle is visible at each pixel centre, and the barycentrics and depth of the visible
points) as two loops, compiled on first use with the system C compiler and called through
:mod:`ctypes`.

Why: the pure-torch passes (:mod:`facebench.render.rasterizer`) run about 150 element-wise
operations and gathers over every triangle of a call; a dense mesh at a small resolution (1.2
triangles per pixel, most covering no pixel centre or one) spends its time there, not in pixels.
A loop per triangle does the same arithmetic in registers.

**Same bits as the torch passes.** Every value is computed with the same IEEE operations in the
same order as the torch code (float32 or float64, the vertices' dtype; compiled with
``-ffp-contract=off`` and without fast-math, so no fused multiply-add and no reassociation), the
z-buffer compares the same int64 keys (float32 bits of ``1/Z`` above the reversed flat triangle
index), and the barycentrics come from the same ray/triangle intersection: face ids, depth and
barycentrics are bit-identical (``tests/test_rasterizer_native.py`` checks it on random meshes,
big triangles, degenerate and edge-on triangles, empty images and both dtypes).

Where it is used: CPU tensors of float32/float64 and, for the barycentric pass, when no gradient is
recorded (training losses keep the differentiable torch pass). Where no C compiler is found (or
``FACEBENCH_NATIVE=0``), :func:`kernel` returns None and the torch passes run: same results,
slower. The kernel runs on one thread (the thread policy's default, :mod:`facebench.threads`);
the shared library is built once per source version into the cache folder
(:func:`facebench.cache.cache_dir` ``/native``), atomically, so concurrent first calls are safe.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from string import Template

__all__ = ["ENV_VARIABLE", "kernel", "unavailable_reason", "enabled"]

#: Environment variable: ``0`` disables the kernel (the torch passes run).
ENV_VARIABLE = "FACEBENCH_NATIVE"

_TEMPLATE = Template(r"""
/* Visibility: fills face_out (B*H*W, -1 = background), returns the number of covered pixels.
   vertices: (B, V, 3) camera frame; K: (B, 3, 3); uvz: (3 V) scratch for the pixel coordinates
   and 1/Z of one image's vertices (u NaN behind the near plane); corners: (F, 3) vertex ids
   sorted ascending per face; odd: (F,) 1 when sorting the face's corners was an odd
   permutation; key: (H*W) scratch. */
int64_t fb_visible_$sfx(int64_t batch, int64_t n_vertices, int64_t n_faces,
                        const $real *vertices, const $real *K, $real near, $real *uvz,
                        const int64_t *corners, const uint8_t *odd, int64_t height, int64_t width,
                        int32_t cull, int64_t *key, int64_t *face_out)
{
    const int64_t hw = height * width, n_total = batch * n_faces;
    const $real tiny = $tiny, zero = 0, one = 1, wmax = ($real)(width - 1), hmax = ($real)(height - 1);
    $real *ub = uvz, *vb = uvz + n_vertices, *zb = uvz + 2 * n_vertices;
    int64_t covered = 0;
    for (int64_t b = 0; b < batch; ++b) {
        /* Projection, as the torch pass: u = (k00 x/z + k01 y/z) + k02, v = k11 y/z + k12. */
        const $real *k = K + 9 * b, *xyz = vertices + 3 * b * n_vertices;
        for (int64_t i = 0; i < n_vertices; ++i) {
            const $real z = xyz[3 * i + 2], x = xyz[3 * i] / z, y = xyz[3 * i + 1] / z;
            const $real uu = k[0] * x + k[1] * y + k[2];
            ub[i] = z >= near ? uu : ($real)NAN;
            vb[i] = k[4] * y + k[5];
            zb[i] = (one / z) * one;
        }
        memset(key, 0, (size_t)hw * sizeof(int64_t));
        for (int64_t f = 0; f < n_faces; ++f) {
            const int64_t *c = corners + 3 * f;
            const $real U0 = ub[c[0]], U1 = ub[c[1]], U2 = ub[c[2]];
            const $real V0 = vb[c[0]], V1 = vb[c[1]], V2 = vb[c[2]];
            const $real e01u = U1 - U0, e01v = V1 - V0, e02u = U2 - U0, e02v = V2 - V0;
            const $real area2 = e01u * e02v - e01v * e02u;
            if (!isfinite(area2)) continue;  /* also every NaN/inf corner */
            if (cull ? (odd[f] ? !(area2 > 0) : !(area2 < 0)) : area2 == 0) continue;
            /* min(a, b) = a < b ? a : b and max alike, nested as torch.minimum/maximum */
            $real xlo = U0 < U1 ? U0 : U1, xhi = U0 > U1 ? U0 : U1;
            $real ylo = V0 < V1 ? V0 : V1, yhi = V0 > V1 ? V0 : V1;
            xlo = xlo < U2 ? xlo : U2; xhi = xhi > U2 ? xhi : U2;
            ylo = ylo < V2 ? ylo : V2; yhi = yhi > V2 ? yhi : V2;
            /* Clipped to the image; an empty range is empty after rounding too, and within
               [0, size - 1] ceil/floor are exact through an integer conversion. */
            xlo = xlo < zero ? zero : xlo; xhi = xhi > wmax ? wmax : xhi;
            ylo = ylo < zero ? zero : ylo; yhi = yhi > hmax ? hmax : yhi;
            if (!(xlo <= wmax && xhi >= zero && ylo <= hmax && yhi >= zero)) continue;
            xlo = CEIL($real, xlo); xhi = FLOOR($real, xhi);
            ylo = CEIL($real, ylo); yhi = FLOOR($real, yhi);
            if (!(xlo <= xhi && ylo <= yhi)) continue;
            /* Edge i (opposite corner i) from its lower-index end, positive inside. */
            const $real s = area2 > 0 ? one : -one, ns = -s;
            const $real e12u = U2 - U1, e12v = V2 - V1;
            const $real A0 = e12v * ns, A1 = e02v * s, A2 = e01v * ns;
            const $real B0 = e12u * s, B1 = e02u * ns, B2 = e01u * s;
            const $real t0 = ((A0 == 0 ? B0 : A0) > 0) ? zero : tiny;
            const $real t1 = ((A1 == 0 ? B1 : A1) > 0) ? zero : tiny;
            const $real t2 = ((A2 == 0 ? B2 : A2) > 0) ? zero : tiny;
            const $real iz0 = zb[c[0]], d1 = zb[c[1]] - iz0, d2 = zb[c[2]] - iz0;
            const $real inv_area = one / area2;
            const $real P = (d1 * e02v - d2 * e01v) * inv_area;
            const $real Q = (d2 * e01u - d1 * e02u) * inv_area;
            const $real R = iz0 - P * U0 - Q * V0;
            const uint64_t low = (uint64_t)(n_total - 1 - (b * n_faces + f));
            for ($real y = ylo; y <= yhi; y += one) {
                const $real ty0 = B0 * (y - V1), ty1 = B1 * (y - V0), ty2 = B2 * (y - V0);
                int64_t *row = key + (int64_t)y * width;
                for ($real x = xlo; x <= xhi; x += one) {
                    /* branch-free: the inside test is a coin flip for most candidates */
                    const int inside = (A0 * (x - U1) + ty0 >= t0) & (A1 * (x - U0) + ty1 >= t1)
                                       & (A2 * (x - U0) + ty2 >= t2);
                    const float z = (float)((P * x + R) + Q * y);
                    uint32_t bits;
                    memcpy(&bits, &z, sizeof bits);
                    const int64_t k = inside ? (int64_t)(((uint64_t)bits << 32) | low) : 0;
                    int64_t *slot = row + (int64_t)x;
                    *slot = k > *slot ? k : *slot;
                }
            }
        }
        int64_t *out = face_out + b * hw;
        for (int64_t p = 0; p < hw; ++p) {
            const int64_t k = key[p];
            if (k >= ((int64_t)1 << 32)) {
                out[p] = (n_total - 1 - (k & 0xFFFFFFFFLL)) - b * n_faces;
                ++covered;
            } else {
                out[p] = -1;
            }
        }
    }
    return covered;
}

/* Barycentrics and depth of the covered pixels (face_flat >= 0, n of them, in pixel order):
   ray/triangle intersection through the pixel centre. vertices (B, V, 3); faces (F, 3) in the
   caller's corner order; rays (B or 1, H*W, 3). Outputs: pix, image (n), ids (3, n), flat (n, 3)
   int32 or int64 (flat64), bary (n, 3), depth (n). */
void fb_fragments_$sfx(int64_t batch, int64_t n_vertices, int64_t hw, const $real *vertices,
                       const int64_t *faces, const $real *rays, int32_t per_image_rays,
                       const int64_t *face_flat, int64_t *pix, int64_t *image, int64_t *ids,
                       void *flat, int32_t flat64, $real *bary, $real *depth, int64_t n)
{
    const $real one = 1;
    int64_t j = 0;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t *fb = face_flat + b * hw;
        const $real *rb = rays + (per_image_rays ? b * hw * 3 : 0);
        const int64_t offset = batch > 1 ? b * n_vertices : 0;
        for (int64_t p = 0; p < hw; ++p) {
            const int64_t f = fb[p];
            if (f < 0) continue;
            const $real *d = rb + 3 * p;
            const $real *w[3];
            for (int i = 0; i < 3; ++i) {
                const int64_t id = faces[3 * f + i], g = id + offset;
                ids[i * n + j] = id;
                if (flat64) ((int64_t *)flat)[3 * j + i] = g;
                else ((int32_t *)flat)[3 * j + i] = (int32_t)g;
                w[i] = vertices + 3 * g;
            }
            const $real *a = w[0], *c1 = w[1], *c2 = w[2];
            /* w_i = d . (v_j x v_k), cross (a1 b2 - a2 b1, a2 b0 - a0 b2, a0 b1 - a1 b0) */
            $real x0 = c1[1] * c2[2] - c1[2] * c2[1], y0 = c1[2] * c2[0] - c1[0] * c2[2], z0 = c1[0] * c2[1] - c1[1] * c2[0];
            $real x1 = c2[1] * a[2] - c2[2] * a[1], y1 = c2[2] * a[0] - c2[0] * a[2], z1 = c2[0] * a[1] - c2[1] * a[0];
            $real x2 = a[1] * c1[2] - a[2] * c1[1], y2 = a[2] * c1[0] - a[0] * c1[2], z2 = a[0] * c1[1] - a[1] * c1[0];
            const $real w0 = d[0] * x0 + d[1] * y0 + d[2] * z0;
            const $real w1 = d[0] * x1 + d[1] * y1 + d[2] * z1;
            const $real w2 = d[0] * x2 + d[1] * y2 + d[2] * z2;
            const $real inv_total = (one / (w0 + w1 + w2)) * one;
            const $real b0 = w0 * inv_total, b1 = w1 * inv_total, b2 = w2 * inv_total;
            bary[3 * j] = b0;
            bary[3 * j + 1] = b1;
            bary[3 * j + 2] = b2;
            depth[j] = b0 * a[2] + b1 * c1[2] + b2 * c2[2];
            pix[j] = b * hw + p;
            image[j] = b;
            ++j;
        }
    }
}
""")

_HEADER = r"""#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>
/* ceil and floor of x in [0, 2^31): no library call. */
#define FLOOR(T, x) ((T)(int64_t)(x))
#define CEIL(T, x) ((T)(int64_t)(x) < (x) ? (T)(int64_t)(x) + 1 : (T)(int64_t)(x))
"""


def source() -> str:
    """The C source: both passes for float32 (``_f32``) and float64 (``_f64``)."""
    return _HEADER + "".join(
        _TEMPLATE.substitute(real=real, sfx=sfx, tiny=tiny)
        for real, sfx, tiny in (("float", "f32", "FLT_MIN"), ("double", "f64", "DBL_MIN"))
    )


#: Compiler flags: no FMA contraction, no fast-math (bit-identical to the torch passes).
FLAGS = ("-O2", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")

_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    """False when ``FACEBENCH_NATIVE=0`` (read at every call, so tests and benchmarks can switch)."""
    return os.environ.get(ENV_VARIABLE, "1") != "0"


def kernel():
    """The loaded :class:`ctypes.CDLL` (built on first use), or None where it cannot be built
    (:func:`unavailable_reason` says why) or is disabled (:data:`ENV_VARIABLE`)."""
    if not enabled():
        return None
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"], _state["reason"] = _load()
    return _state["lib"]


def unavailable_reason() -> str | None:
    """Why :func:`kernel` is None (None when it is available)."""
    if not enabled():
        return f"{ENV_VARIABLE}=0"
    kernel()
    return _state.get("reason")


def _load():
    text = source()
    # per source, flags and machine type (a cache folder may be shared between machines)
    digest = hashlib.sha256((text + " ".join(FLAGS) + platform.machine()).encode()).hexdigest()[:16]
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        from facebench.cache import cache_dir

        folder = cache_dir("native")
        target = folder / f"render-{digest}.so"
        if not target.exists():
            if compiler is None:
                return None, "no C compiler (cc) found"
            _build(compiler, text, folder, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
    for sfx, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        visible = getattr(lib, f"fb_visible_{sfx}")
        visible.restype = i64
        visible.argtypes = [i64, i64, i64, ptr, ptr, real, ptr, ptr, ptr, i64, i64, i32, ptr, ptr]
        fragments = getattr(lib, f"fb_fragments_{sfx}")
        fragments.restype = None
        fragments.argtypes = [i64, i64, i64, ptr, ptr, ptr, i32, ptr, ptr, ptr, ptr, ptr, i32, ptr, ptr, i64]
    return lib, None


def _build(compiler: str, text: str, folder: Path, target: Path) -> None:
    """Compile ``text`` into ``target`` (a temporary file in the same folder, then renamed)."""
    with tempfile.TemporaryDirectory(dir=folder) as work:
        src = Path(work) / "render.c"
        src.write_text(text)
        out = Path(work) / target.name
        result = subprocess.run(
            [compiler, *FLAGS, "-o", str(out), str(src), "-lm"],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[:500]}")
        os.replace(out, target)
