"""The procedural face model ``synthetic``: facebench's default model, generated in code.

The model is a smooth human-face-shaped surface built on a regular grid in a cylindrical
parameter space (azimuth ``phi`` around the vertical axis, a profile parameter ``s`` running from
under the chin up over the forehead), with linear identity, expression and reflectance spaces.
Nothing is downloaded; every run on every machine gives the same bytes
(:data:`SYNTHETIC_MODEL_SHA256`).

Frame and units (see :mod:`facebench.conventions`): millimetres, head frame with +x toward the
subject's left, +y up, +z out of the face. **Origin**: on the vertical axis of the head (the axis
through both ear levels, x = 0, z = 0) at the height of the eye corners (y = 0). With this origin
the nose tip is at z ~ +105 mm, the ear levels at x ~ +-71 mm, z ~ 0, the chin at y ~ -120 mm.

Surface: the base head is, at each profile level, an ellipse of half-width ``a(s)`` (x) and
front depth ``b(s)`` (z) for ``|phi| <= 90 deg``, continued behind the ears to ``|phi| = 105 deg``
so renders up to 90 deg of yaw show a closed side. The profile curls under the chin and back over
the forehead. Facial features (brow ridges, eye sockets with eyeballs and lid creases, nose bridge,
tip, alae and nostrils, upper/lower lips with a mouth line, labiomental fold, chin, cheekbones,
temples) are smooth Gaussian bumps and dents displaced along the base normals. Three grid rows lie
on the mouth line (upper inner lip, mouth line, lower inner lip) so the jaw-open expression opens
the mouth along it and shows the dark mouth-line row pulled back into the mouth.

Vertex order is row-major on a grid symmetric in ``phi``: :func:`mirror_permutation` maps each
vertex to its mirror image about x = 0 and the mean is exactly symmetric.

Spaces (coefficients in standard deviations; columns of each basis, reshaped ``(3V, K)``, are
orthonormal, so ``std`` is the Euclidean norm over all 3V coordinates of the 1-std displacement,
in mm (shape) or reflectance units; the per-vertex RMS displacement is ``std / sqrt(V)``; the
per-mode RMS values are also stored in ``metadata``):

- identity: 100 modes, global. The first are semantic (``metadata["identity_mode_names"]``),
  the rest smooth random fields (sums of wide Gaussian radial functions), Gram-Schmidt
  orthonormalized in a fixed order.
- expression: 64 modes, localized (mouth, jaw, eyes, brows, cheeks, nose); the first are semantic
  (jaw open moves the chin about 9 mm at 1 std), the rest smooth random local fields.
- reflectance: 80 modes over linear RGB: skin tone, redness, yellowness, lip colour, brow
  darkness, then smooth regional per-channel variation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.linalg import solve_triangular

from facebench.geometry import vertex_normals
from facebench.landmarks import IBUG68_MIRROR
from facebench.models.morphable_model import N_LANDMARKS, MorphableModel

__all__ = [
    "SYNTHETIC_MODEL_VERSION",
    "SYNTHETIC_MODEL_SHA256",
    "SYNTHETIC_ORIGIN",
    "REGION_NAMES",
    "load_synthetic",
    "generate_synthetic_model",
    "mirror_permutation",
    "vertex_regions",
]

#: Version of the procedural generator; change it (and the digest) whenever the output changes.
SYNTHETIC_MODEL_VERSION = "1.1"

#: ``generate_synthetic_model().digest()``: the cross-machine contract of the generator.
SYNTHETIC_MODEL_SHA256 = "28989f7eece501b50694fd71157f123e16162a2d4437ca4461595533c31a1cc8"

SYNTHETIC_ORIGIN = (
    "on the vertical axis of the head (x = 0, z = 0 on the line through both ear levels), at the "
    "height of the eye corners (y = 0); the nose tip is at z ~ +105 mm"
)

#: Region names returned by :func:`vertex_regions`.
REGION_NAMES = (
    "skin", "forehead", "brows", "eyes", "nose", "nostrils", "cheeks", "lips", "mouth_line",
    "chin", "jaw", "sides",
)

_SEED = 20180611
_N_IDENTITY, _N_EXPRESSION, _N_REFLECTANCE = 100, 64, 80

# Layout of the face in the head frame (mm).
_EYE_X, _EYE_HALF = 31.0, 14.5  # eye centre |x|, half-width of the eye opening
_MOUTH_Y, _MOUTH_HALF = -68.0, 24.0  # mouth line height, half-width of the mouth
_NOSE_TIP_Y = -37.0
_SUBNASALE_Y = -50.0

_PHI_MAX = math.radians(105.0)
_N_COLS = 111  # odd: a centre column on x = 0
_S_BOTTOM, _S_TOP = -106.0, 55.0  # profile parameter range where y == s
_R_CHIN, _BETA_CHIN = 14.0, math.radians(100.0)  # curl under the chin
_R_HEAD, _BETA_HEAD = 55.0, math.radians(46.0)  # curl back over the forehead


# ---------------------------------------------------------------------------- small helpers
def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Cubic smoothstep from 0 at ``e0`` to 1 at ``e1`` (``e0 > e1`` gives a falling step)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((X - cx) / sx) ** 2 + ((Y - cy) / sy) ** 2))


def _pair(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Two Gaussians at ``(+-cx, cy)``: smooth and exactly symmetric about x = 0."""
    return _gauss(X, Y, cx, cy, sx, sy) + _gauss(X, Y, -cx, cy, sx, sy)


# ---------------------------------------------------------------------------- the grid
def _rows() -> np.ndarray:
    """Profile parameter ``s`` of every grid row (increasing: under the chin -> over the head)."""
    chin = _S_BOTTOM - _R_CHIN * np.linspace(_BETA_CHIN, 0.0, 10)[:-1]
    lower = np.linspace(_S_BOTTOM, -84.0, 12)[:-1]
    middle = np.linspace(-84.0, 10.0, 76)[:-1]  # ~1.25 mm: mouth, nose, eyes
    upper = np.linspace(10.0, _S_TOP, 22)
    head = _S_TOP + _R_HEAD * np.linspace(0.0, _BETA_HEAD, 13)[1:]
    s = np.concatenate([chin, lower, middle, upper, head])
    mouth = np.array([_MOUTH_Y - 0.4, _MOUTH_Y, _MOUTH_Y + 0.4])
    s = s[np.abs(s - _MOUTH_Y) > 0.9]
    return np.sort(np.concatenate([s, mouth]))


def _columns() -> np.ndarray:
    """Azimuth ``phi`` (radians) of every column: symmetric, denser on the front of the face."""
    u = np.linspace(-1.0, 1.0, _N_COLS)
    u = (u - u[::-1]) / 2.0  # exactly antisymmetric
    return _PHI_MAX * (0.55 * u + 0.45 * u**3)


def _profile(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Base profile at parameter ``s``: height y, front depth b, half-width a, back depth c (mm)."""
    knots_y = np.array([-106.0, -90.0, -70.0, -50.0, -30.0, -10.0, 0.0, 10.0, 25.0, 40.0, 55.0])
    knots_b = np.array([76.0, 79.0, 83.0, 85.0, 85.5, 84.0, 83.0, 85.0, 87.0, 87.0, 86.0])
    knots_a = np.array([47.0, 55.0, 62.0, 66.5, 69.5, 71.5, 72.0, 72.0, 71.0, 69.0, 66.0])
    b_of = CubicSpline(knots_y, knots_b, bc_type="clamped")
    a_of = CubicSpline(knots_y, knots_a, bc_type="clamped")
    s = np.asarray(s, dtype=np.float64)
    main = np.clip(s, _S_BOTTOM, _S_TOP)
    y, b, a = main.copy(), b_of(main), a_of(main)
    low, high = s < _S_BOTTOM, s > _S_TOP
    beta = (_S_BOTTOM - s[low]) / _R_CHIN
    y[low] = _S_BOTTOM - _R_CHIN * np.sin(beta)
    b[low] -= _R_CHIN * (1.0 - np.cos(beta))
    a[low] -= 0.9 * _R_CHIN * (1.0 - np.cos(beta))
    beta = (s[high] - _S_TOP) / _R_HEAD
    y[high] = _S_TOP + _R_HEAD * np.sin(beta)
    b[high] -= _R_HEAD * (1.0 - np.cos(beta))
    a[high] -= 0.55 * _R_HEAD * (1.0 - np.cos(beta))
    return y, b, a, 0.75 * a


def _jaw_line(y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Raise the lower border toward the ears: below y = -55 heights are compressed by up to
    half at the sides, so the jaw line runs from the chin (y ~ -120) up to y ~ -88 at the ears."""
    lift = 0.48 * _smoothstep(0.25, 1.45, np.abs(phi))
    u = y + 55.0
    below = 0.5 * (u - np.sqrt(u * u + 100.0))  # smooth min(u, 0)
    return y - lift * below


def _grid_faces(n_rows: int, n_cols: int) -> np.ndarray:
    """Triangles of the row-major grid, CCW seen from outside, mirror-symmetric diagonals."""
    r, c = np.meshgrid(np.arange(n_rows - 1), np.arange(n_cols - 1), indexing="ij")
    a = r * n_cols + c
    b, cc, d = a + 1, a + n_cols, a + n_cols + 1
    left = (c < n_cols // 2).ravel()
    a, b, cc, d = a.ravel(), b.ravel(), cc.ravel(), d.ravel()
    t1 = np.where(left[:, None], np.stack([a, b, d], 1), np.stack([a, b, cc], 1))
    t2 = np.where(left[:, None], np.stack([a, d, cc], 1), np.stack([b, d, cc], 1))
    faces = np.stack([t1, t2], axis=1).reshape(-1, 3)
    return faces.astype(np.int32)


@functools.lru_cache(maxsize=1)
def _grid() -> dict:
    """Base surface, parameters and the feature displacement (float64, cached)."""
    s, phi = _rows(), _columns()
    n_rows, n_cols = len(s), len(phi)
    y, b, a, c = _profile(s)
    P = np.broadcast_to(phi[None, :], (n_rows, n_cols))
    x = a[:, None] * np.sin(P)
    z = np.where(np.abs(P) <= np.pi / 2, b[:, None] * np.cos(P), c[:, None] * np.cos(P))
    Y = _jaw_line(np.broadcast_to(y[:, None], x.shape), P)
    base = np.stack([x, Y, z], axis=-1).reshape(-1, 3)
    faces = _grid_faces(n_rows, n_cols)
    normals = vertex_normals(base, faces)
    X, Y = base[:, 0], base[:, 1]
    phi_v = P.ravel().copy()
    front = _smoothstep(-0.05, 0.45, np.cos(phi_v))  # 1 on the face, 0 behind the ears
    height = _features(X, Y) * front
    return {
        "s": s, "phi": phi, "n_rows": n_rows, "n_cols": n_cols, "base": base, "faces": faces,
        "normals": normals, "X": X, "Y": Y, "phi_v": phi_v, "front": front, "height": height,
        "row": np.repeat(np.arange(n_rows), n_cols), "col": np.tile(np.arange(n_cols), n_rows),
    }


def _nose(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Height (mm) of the nose: bridge ridge from the nasion to the tip, underside to subnasale."""
    ky = np.array([14.0, 5.0, -5.0, -15.0, -25.0, -33.0, -37.5, -42.0, -46.0, -49.0, -52.0])
    kh = np.array([0.0, 1.5, 4.5, 8.5, 13.0, 17.0, 18.5, 16.0, 8.0, 1.5, 0.0])
    ks = np.array([9.0, 8.0, 6.5, 6.5, 7.5, 9.0, 10.0, 11.0, 12.0, 12.0, 12.0])
    width = np.interp(Y, ky[::-1], ks[::-1])
    ridge = _smooth_profile(Y, ky, kh) * np.exp(-0.5 * (X / width) ** 2)
    tip = 3.0 * _gauss(X, Y, 0.0, _NOSE_TIP_Y, 6.0, 5.0)
    alae = 7.0 * _pair(X, Y, 14.0, -42.0, 5.0, 4.5)
    nostrils = -2.0 * _pair(X, Y, 7.0, -47.5, 2.6, 1.6)
    return ridge + tip + alae + nostrils


def _smooth_profile(Y: np.ndarray, ky: np.ndarray, kh: np.ndarray) -> np.ndarray:
    """C1 spline through ``kh`` at heights ``ky`` with zero slope at both ends, 0 outside."""
    order = np.argsort(ky)
    spline = CubicSpline(ky[order], kh[order], bc_type="clamped")
    inside = (Y > ky.min()) & (Y < ky.max())
    out = np.zeros_like(Y)
    out[inside] = spline(Y[inside])
    return np.maximum(out, 0.0)


def _mouth_window(X: np.ndarray) -> np.ndarray:
    """1 between the mouth corners, 0 beyond them."""
    return _smoothstep(_MOUTH_HALF + 2.0, _MOUTH_HALF - 6.0, np.abs(X))


def _features(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Outward displacement (mm) of the facial features at base coordinates ``(X, Y)``."""
    h = np.zeros_like(X)
    # forehead, brow ridges, glabella, temples
    h += 3.5 * _pair(X, Y, 27.0, 15.0, 16.0, 5.5) + 2.0 * _gauss(X, Y, 0.0, 12.0, 9.0, 6.0)
    h += -3.0 * _pair(X, Y, 58.0, 22.0, 9.0, 12.0)
    # eye sockets, eyeballs, upper-lid crease, lower-lid bulge
    h += -9.0 * _pair(X, Y, _EYE_X, 1.0, 12.0, 8.5)
    h += 5.5 * _pair(X, Y, _EYE_X, 0.3, 9.5, 5.0)
    h += -1.0 * _pair(X, Y, _EYE_X, 7.0, 9.0, 1.4)
    h += 0.6 * _pair(X, Y, _EYE_X, -5.5, 9.0, 1.5)
    h += _nose(X, Y)
    # cheekbones, cheeks
    h += 4.0 * _pair(X, Y, 47.0, -20.0, 12.0, 10.0) + 2.0 * _pair(X, Y, 40.0, -52.0, 13.0, 12.0)
    # maxilla under the nose, lips, mouth line, labiomental fold, chin
    h += 4.5 * _gauss(X, Y, 0.0, -62.0, 22.0, 11.0)
    window = _mouth_window(X)
    upper_c = (1.0 - 0.25 * _gauss(X, Y, 0.0, 0.0, 3.0, 1e9))  # Cupid's bow dip
    h += 2.8 * window * upper_c * np.exp(-0.5 * ((Y - (_MOUTH_Y + 2.4)) / 2.4) ** 2)
    h += 3.6 * window * np.exp(-0.5 * ((Y - (_MOUTH_Y - 3.8)) / 3.2) ** 2)
    h += -1.6 * window * np.exp(-0.5 * ((Y - _MOUTH_Y) / 0.45) ** 2)
    h += -1.2 * _gauss(X, Y, 0.0, -56.0, 3.0, 4.0)  # philtrum
    h += -3.0 * _gauss(X, Y, 0.0, -86.0, 15.0, 4.0)
    h += 6.0 * _gauss(X, Y, 0.0, -101.0, 14.0, 9.0)
    return h


# ---------------------------------------------------------------------------- regions
def _lip_bounds(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower vermilion borders (y, mm) above each X (clamped at the corners)."""
    t = np.clip(np.abs(X) / (_MOUTH_HALF + 1.0), 0.0, 1.0)
    bow = 0.9 * np.exp(-0.5 * ((np.abs(X) - 5.0) / 3.0) ** 2)
    upper = _MOUTH_Y + 5.5 * np.sqrt(1.0 - t**2) + bow
    lower = _MOUTH_Y - 8.5 * np.sqrt(1.0 - t**2)
    return upper, lower


def _eye_bounds(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per X: relative position t in the eye opening and the upper/lower lid lines (y, mm)."""
    t = (np.abs(X) - _EYE_X) / _EYE_HALF
    open_ = np.clip(1.0 - t**2, 0.0, None)
    skew = 0.6 * t  # the opening is slightly higher toward the nose
    upper = 4.8 * open_ - 0.2 * skew
    lower = -3.6 * open_ - 0.2 * skew
    return t, upper, lower


def _soft_masks(g: dict) -> dict[str, np.ndarray]:
    """Soft (0..1) masks of the facial regions at every vertex."""
    X, Y, front = g["X"], g["Y"], g["front"]
    ax = np.abs(X)
    t, up, lo = _eye_bounds(X)
    eye = (_smoothstep(0.6, -0.6, Y - up) * _smoothstep(-0.6, 0.6, Y - lo)
           * _smoothstep(1.02, 0.9, np.abs(t)))
    iris = _smoothstep(5.6, 4.8, np.hypot(ax - _EYE_X, Y - 0.3)) * eye
    pupil = _smoothstep(2.4, 1.8, np.hypot(ax - _EYE_X, Y - 0.3)) * eye
    brow_y = 16.5 + 3.0 * np.clip(1.0 - ((ax - 30.0) / 22.0) ** 2, 0.0, None) - 0.02 * (ax - 30.0)
    brows = (_smoothstep(3.0, 1.5, np.abs(Y - brow_y)) * _smoothstep(12.0, 14.0, ax)
             * _smoothstep(53.0, 49.0, ax))
    lu, ll = _lip_bounds(X)
    lips = (_smoothstep(0.5, -0.5, Y - lu) * _smoothstep(-0.5, 0.5, Y - ll)
            * _smoothstep(_MOUTH_HALF + 1.5, _MOUTH_HALF - 0.5, ax))
    mouth_line = (np.abs(Y - _MOUTH_Y) < 0.2) * _smoothstep(_MOUTH_HALF, _MOUTH_HALF - 3.0, ax)
    nostrils = np.clip(_pair(X, Y, 7.0, -47.5, 2.6, 1.5) * 1.6, 0.0, 1.0)
    nose = (_smoothstep(14.0, 11.0, np.abs(X) - 0.15 * np.clip(-Y, 0, None)) * (Y < 12.0) * (Y > -51.0))
    return {
        "eyes": eye * front, "iris": iris * front, "pupil": pupil * front,
        "brows": brows * front, "lips": lips * front, "mouth_line": mouth_line * front,
        "nostrils": nostrils * front, "nose": nose * front,
    }


def vertex_regions(model: MorphableModel | None = None) -> dict[str, np.ndarray]:
    """Boolean ``(V,)`` masks of the synthetic model's regions, keyed by :data:`REGION_NAMES`.

    ``skin`` is every vertex that is not eye, brow, lip, mouth line or nostril (the vertices a
    skin-reflectance prior should tie together); the others are facial areas in the head frame.

    Args:
        model: the synthetic model (or a truncated copy) whose vertices are meant; None for the
            default model. Raises ValueError for another topology.
    """
    g = _grid()
    V = g["n_rows"] * g["n_cols"]
    if model is not None and (model.n_vertices != V or model.name != "synthetic"):
        raise ValueError(f"vertex_regions needs the synthetic model's {V} vertices, got {model!r}")
    m = _soft_masks(g)
    X, Y, front = g["X"], g["Y"], g["front"] > 0.5
    ax = np.abs(X)
    eyes, brows = m["eyes"] > 0.5, m["brows"] > 0.5
    lips, mouth = m["lips"] > 0.5, m["mouth_line"] > 0.5
    nostrils, nose = m["nostrils"] > 0.5, m["nose"] > 0.5
    skin = ~(eyes | brows | lips | mouth | nostrils)
    forehead = front & (Y > 20.0) & (ax < 55.0) & ~brows
    cheeks = front & (Y < -5.0) & (Y > -75.0) & (ax > 22.0) & (ax < 62.0) & ~nose & ~lips
    chin = front & (Y < -80.0) & (ax < 30.0)
    jaw = front & (Y < -60.0) & (ax >= 30.0)
    sides = ~front | (ax >= 62.0)
    return {
        "skin": skin, "forehead": forehead, "brows": brows, "eyes": eyes, "nose": nose,
        "nostrils": nostrils, "cheeks": cheeks, "lips": lips | mouth, "mouth_line": mouth,
        "chin": chin, "jaw": jaw, "sides": sides,
    }


def mirror_permutation() -> np.ndarray:
    """``(V,)`` int64 permutation with ``mean[perm] * [-1, 1, 1] == mean`` (exactly).

    Vertex ``i`` of a mirrored face (x -> -x) is vertex ``perm[i]`` of the original; apply it to
    per-vertex arrays when mirroring a shape (``shape[perm] * [-1, 1, 1]``).
    """
    g = _grid()
    return (g["row"] * g["n_cols"] + (g["n_cols"] - 1 - g["col"])).astype(np.int64)


# ---------------------------------------------------------------------------- landmarks
def _nearest(g: dict, points_xy: np.ndarray, *, side: str | None = None) -> np.ndarray:
    """Indices of the front vertices nearest (in base x, y) to each target point."""
    X, Y = g["X"], g["Y"]
    ok = np.abs(g["phi_v"]) < math.radians(80.0)
    if side == "right":
        ok &= X < 0.0
    candidates = np.flatnonzero(ok)
    d = (X[candidates, None] - points_xy[None, :, 0]) ** 2 + (Y[candidates, None] - points_xy[None, :, 1]) ** 2
    return candidates[np.argmin(d, axis=0)]


def _midline(g: dict, ys) -> np.ndarray:
    centre = np.flatnonzero(g["col"] == g["n_cols"] // 2)
    Y = g["Y"][centre]
    return np.array([centre[np.argmin(np.abs(Y - y))] for y in ys], dtype=np.int64)


def _landmarks(g: dict, mean: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """iBUG-68 vertex indices and extra named vertices."""
    perm = mirror_permutation()
    lm = np.full(N_LANDMARKS, -1, dtype=np.int64)
    # jaw contour, subject's right (x < 0), at (azimuth deg, y)
    jaw = np.array([(-80, -8), (-78, -29), (-74, -50), (-67, -69), (-57, -86), (-45, -99),
                    (-31, -110), (-16, -116)], dtype=np.float64)
    phi_v, Y = g["phi_v"], g["Y"]
    for i, (ang, y) in enumerate(jaw):
        d = (np.degrees(phi_v) - ang) ** 2 + (Y - y) ** 2 + 1e6 * (phi_v > 0)
        lm[i] = int(np.argmin(d))
    centre = np.flatnonzero(g["col"] == g["n_cols"] // 2)
    chin_rows = centre[(Y[centre] < -100.0)]
    # chin bottom: the front-most-down point: lowest y among midline points with z >= 60
    lm[8] = int(chin_rows[np.argmin(Y[chin_rows] - 10.0 * (mean[chin_rows, 2] >= 70.0))])
    # right brow outer -> inner, right eye, nostrils, lips (right halves), picked on x < 0
    right = {
        17: (-49, 17.5), 18: (-41, 20.0), 19: (-32, 21.0), 20: (-23, 20.0), 21: (-15, 18.0),
        31: (-12, -46.0), 32: (-6.5, -49.0),
        36: (-_EYE_X - _EYE_HALF, 0.0), 37: (-36.5, 4.2), 38: (-25.5, 4.2),
        39: (-_EYE_X + _EYE_HALF, 0.0), 40: (-25.5, -3.2), 41: (-36.5, -3.2),
        48: (-_MOUTH_HALF, _MOUTH_Y), 49: (-16.0, _MOUTH_Y + 4.9), 50: (-6.0, _MOUTH_Y + 6.2),
        58: (-6.0, _MOUTH_Y - 8.3), 59: (-16.0, _MOUTH_Y - 6.4),
        60: (-21.0, _MOUTH_Y), 61: (-8.0, _MOUTH_Y + 0.4), 67: (-8.0, _MOUTH_Y - 0.4),
    }
    keys = sorted(right)
    found = _nearest(g, np.array([right[k] for k in keys]), side="right")
    for k, v in zip(keys, found):
        lm[k] = v
    # midline: nose bridge top -> tip, subnasale, lips
    nose_rows = centre[(Y[centre] > -45.0) & (Y[centre] < -25.0)]
    tip = int(nose_rows[np.argmax(mean[nose_rows, 2])])
    lm[27:30] = _midline(g, [0.5, -11.0, -23.0])
    lm[30] = tip
    lm[[33, 51, 57, 62, 66]] = _midline(
        g, [_SUBNASALE_Y + 1.0, _MOUTH_Y + 6.0, _MOUTH_Y - 8.6, _MOUTH_Y + 0.4, _MOUTH_Y - 0.4])
    # left halves by the mirror permutation (perm maps a vertex to its mirror image)
    for i in range(N_LANDMARKS):
        j = IBUG68_MIRROR[i]
        if lm[i] < 0 and lm[j] >= 0:
            lm[i] = perm[lm[j]]
    ear = _nearest_param(g, 90.0, -5.0)
    named = {
        "nose_tip": tip,
        "chin": int(lm[8]),
        "subnasale": int(_midline(g, [_SUBNASALE_Y])[0]),
        "lips_central": int(_midline(g, [_MOUTH_Y])[0]),
        "forehead_center": int(_midline(g, [60.0])[0]),
        "nasion": int(_midline(g, [3.0])[0]),
        "left_ear_level": ear,
        "right_ear_level": int(perm[ear]),
        "right_eye_lacrimal": int(lm[39]),
        "left_eye_lacrimal": int(lm[42]),
        "right_eye_center": int(_nearest(g, np.array([[-_EYE_X, 0.3]]))[0]),
        "left_eye_center": int(_nearest(g, np.array([[_EYE_X, 0.3]]))[0]),
    }
    return lm.astype(np.int32), named


def _nearest_param(g: dict, phi_deg: float, y: float) -> int:
    d = (np.degrees(g["phi_v"]) - phi_deg) ** 2 + (g["Y"] - y) ** 2
    return int(np.argmin(d))


# ---------------------------------------------------------------------------- modes
def _orthonormalize(fields: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Gram-Schmidt in the given order, done as Cholesky-QR twice: ``(3V, K)`` orthonormal, raw norms.

    ``Q = F R^-1`` with ``R`` upper triangular with a positive diagonal is unique: mode k is field
    k minus its projection on the previous modes, normalized (no sign or order ambiguity).
    """
    F = np.stack([f.reshape(-1).astype(np.float64) for f in fields], axis=1)
    norms = np.sqrt(np.sum(F * F, axis=0))
    Q = F / norms
    for _ in range(2):
        gram = Q.T @ Q
        gram = (gram + gram.T) / 2.0
        try:
            lower = np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            raise RuntimeError("synthetic modes are linearly dependent") from None
        Q = solve_triangular(lower, Q.T, lower=True).T
    return Q, norms


def _without_rigid_motion(fields: list[np.ndarray], mean: np.ndarray) -> list[np.ndarray]:
    """Remove from each ``(V,3)`` field its component along the 6 rigid motions of ``mean``.

    Identity variation of a real 3DMM is built from scans aligned by Procrustes, so it holds no
    rigid motion; without this step about 29 % of the identity variance (v1.0) was a translation or
    rotation of the whole head, which a pose can imitate and the head-frame shape metric cannot
    tell apart. The rigid subspace is spanned by the 3 translations and the 3 infinitesimal
    rotations about the mean's centroid (any centre spans the same subspace).
    """
    centred = mean - mean.mean(axis=0)
    generators = []
    for k in range(3):
        axis = np.zeros(3)
        axis[k] = 1.0
        generators.append(np.broadcast_to(axis, mean.shape).copy())
        generators.append(np.cross(axis, centred))
    rigid, _ = _orthonormalize(generators)  # (3V, 6)
    out = []
    for f in fields:
        flat = f.reshape(-1).astype(np.float64)
        out.append((flat - rigid @ (rigid.T @ flat)).reshape(f.shape))
    return out


def _decreasing(stds: np.ndarray, ratio: float = 0.98) -> np.ndarray:
    out = np.array(stds, dtype=np.float64)
    for k in range(1, len(out)):
        out[k] = min(out[k], ratio * out[k - 1])
    return out


def _rbf_field(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_c w_c exp(-|p - p_c|^2 / (2 r_c^2))``: ``(V, D)`` for weights ``(C, D)``."""
    d2 = np.sum((points[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    return np.exp(-0.5 * d2 / radii[None, :] ** 2) @ weights


def _pick(rng: np.random.Generator, candidates: np.ndarray, n: int) -> np.ndarray:
    return candidates[np.floor(rng.random(n) * len(candidates)).astype(np.int64)]


def _identity_fields(g: dict, mean: np.ndarray, rng: np.random.Generator) -> tuple[list, list]:
    """Semantic then random identity displacement fields (1 std, mm)."""
    X, Y, front, n = g["X"], g["Y"], g["front"], g["normals"]
    Z = mean[:, 2]
    zero = np.zeros_like(mean)

    def vec(dx=0.0, dy=0.0, dz=0.0):
        f = zero.copy()
        f[:, 0], f[:, 1], f[:, 2] = dx, dy, dz
        return f

    def outward(h):
        return h[:, None] * n

    ax = np.abs(X)
    nose = _smoothstep(16.0, 10.0, ax) * _smoothstep(14.0, 6.0, Y) * _smoothstep(-54.0, -48.0, Y)
    lower = _smoothstep(-40.0, -90.0, Y)
    fields = {
        "face_width": vec(dx=0.05 * X),
        "face_length": vec(dy=0.045 * np.minimum(Y, 0.0) + 0.02 * np.maximum(Y, 0.0)),
        "face_depth": vec(dz=0.045 * Z * _smoothstep(-0.2, 0.6, np.cos(g["phi_v"]))),
        "nose_protrusion": outward(5.0 * nose * g["height"].clip(0, None) / 20.0 + 1.5 * nose),
        "jaw_width": vec(dx=0.07 * X * lower * _smoothstep(20.0, 50.0, ax)),
        "chin_protrusion": vec(dz=3.5 * _gauss(X, Y, 0.0, -102.0, 16.0, 12.0) * front),
        "nose_length": vec(dy=-3.0 * nose * _smoothstep(5.0, -35.0, Y)),
        "nose_width": vec(dx=2.5 * np.sign(X) * _pair(X, Y, 14.0, -42.0, 7.0, 7.0) * front),
        "eye_spacing": vec(dx=2.5 * np.sign(X) * _pair(X, Y, _EYE_X, 2.0, 14.0, 10.0) * front),
        "brow_prominence": outward(2.5 * _pair(X, Y, 27.0, 15.0, 16.0, 6.0) * front),
        "cheek_fullness": outward(3.0 * _pair(X, Y, 45.0, -45.0, 16.0, 16.0) * front),
        "lip_thickness": outward(1.8 * (_gauss(X, Y, 0.0, _MOUTH_Y + 2.5, 14.0, 3.0)
                                        + _gauss(X, Y, 0.0, _MOUTH_Y - 4.0, 14.0, 4.0)) * front),
        "forehead_slope": vec(dz=-4.0 * _smoothstep(15.0, 90.0, Y) * front),
        "mouth_height": vec(dy=2.0 * _gauss(X, Y, 0.0, _MOUTH_Y, 30.0, 14.0) * front),
    }
    names = list(fields)
    out = [fields[k] for k in names]
    centres_pool = np.flatnonzero(np.abs(g["phi_v"]) < math.radians(95.0))
    for _ in range(_N_IDENTITY - len(out)):
        c = _pick(rng, centres_pool, 5)
        radii = 25.0 + 35.0 * rng.random(5)
        w = rng.standard_normal((5, 3))
        out.append(_rbf_field(mean, mean[c], radii, w))
    return names, out


def _identity_stds(norms: np.ndarray, n_semantic: int, n_vertices: int) -> np.ndarray:
    stds = norms.copy()
    rms_first = stds[n_semantic - 1] / math.sqrt(n_vertices)
    n_random = len(stds) - n_semantic
    rms = rms_first * 0.95 * (0.05 / (0.95 * rms_first)) ** (np.arange(n_random) / (n_random - 1))
    stds[n_semantic:] = rms * math.sqrt(n_vertices)
    return _decreasing(stds)


def _jaw_weight(g: dict) -> np.ndarray:
    """0 above the mouth line, 1 on the lower lip, chin and jaw (sharp between the lips)."""
    X, Y = g["X"], g["Y"]
    ax = np.abs(X)
    side = _smoothstep(0.45, 1.35, np.abs(g["phi_v"]))
    boundary = _MOUTH_Y + (-22.0 - _MOUTH_Y) * side
    width = 0.12 + 14.0 * _smoothstep(_MOUTH_HALF - 3.0, _MOUTH_HALF + 16.0, ax)
    w = 0.5 * (1.0 - np.tanh((Y - boundary) / width))
    return w * _smoothstep(-0.1, 0.3, np.cos(g["phi_v"]))


def _expression_fields(g: dict, mean: np.ndarray, rng: np.random.Generator) -> tuple[list, list]:
    """Semantic then random local expression fields (1 std, mm)."""
    X, Y, front, n = g["X"], g["Y"], g["front"], g["normals"]
    ax = np.abs(X)
    sx = np.tanh(X / 8.0)  # smooth sign: no tear along the midline
    zero = np.zeros_like(mean)

    def vec(dx=0.0, dy=0.0, dz=0.0):
        f = zero.copy()
        f[:, 0], f[:, 1], f[:, 2] = dx * front, dy * front, dz * front
        return f

    # jaw open: rotation about the jaw hinge (y = -18, z = -5), about 9 mm at the chin
    hinge_y, hinge_z, angle = -18.0, -5.0, math.radians(3.8)
    w = _jaw_weight(g)
    mouth = np.abs(Y - _MOUTH_Y) < 0.2
    inside = _smoothstep(_MOUTH_HALF, _MOUTH_HALF - 6.0, ax) * mouth
    jaw = zero.copy()
    jaw[:, 1] = -angle * (mean[:, 2] - hinge_z) * w
    jaw[:, 2] = angle * (mean[:, 1] - hinge_y) * w - 3.0 * inside
    jaw[:, 1] -= 2.5 * w  # the condyles slide forward and down as the mouth opens
    jaw[:, 2] += 2.0 * w
    corners = _pair(X, Y, _MOUTH_HALF, _MOUTH_Y, 7.0, 7.0)
    cheeks = _pair(X, Y, 40.0, -42.0, 13.0, 13.0)
    lips = _smoothstep(_MOUTH_HALF + 6, _MOUTH_HALF - 2, ax) * _gauss(X, Y, 0.0, _MOUTH_Y, 1e9, 7.0)
    upper_lip = lips * _smoothstep(_MOUTH_Y - 0.3, _MOUTH_Y + 0.3, Y)
    lower_lip = lips * _smoothstep(_MOUTH_Y + 0.3, _MOUTH_Y - 0.3, Y)
    t_eye, up, lo = _eye_bounds(X)
    eye_x = _smoothstep(1.35, 0.95, np.abs(t_eye))
    height = np.clip(up - lo, 0.0, None)
    inner = np.clip((Y - lo), 0.0, None)
    close = np.where(Y <= up, -inner / 3.0, -height / 3.0 * _smoothstep(up + 12.0, up, Y))
    close = close * eye_x * (Y >= lo) * _smoothstep(-14.0, -5.0, Y)
    brow = _smoothstep(5.0, 12.0, Y) * _smoothstep(40.0, 22.0, Y) * _smoothstep(58.0, 45.0, ax)
    inner_brow = _gauss(X, Y, 0.0, 16.0, 14.0, 6.0)
    fields = {
        "jaw_open": jaw,
        "smile": vec(dx=2.5 * sx * corners, dy=4.0 * corners + 2.0 * cheeks, dz=-1.5 * corners + 1.0 * cheeks),
        "lip_pucker": vec(dx=-0.2 * X * lips, dz=4.0 * lips),
        "brow_raise": vec(dy=4.0 * brow + 1.5 * _smoothstep(40.0, 70.0, Y) * _smoothstep(90.0, 70.0, Y)),
        "brow_furrow": vec(dx=-0.2 * X * inner_brow, dy=-2.0 * inner_brow),
        "eye_close_right": vec(dy=close * (X < 0)),
        "eye_close_left": vec(dy=close * (X > 0)),
        "mouth_left_right": vec(dx=3.0 * (lips + 0.6 * corners)),
        "upper_lip_raise": vec(dy=2.5 * upper_lip, dz=0.8 * upper_lip),
        "lower_lip_depress": vec(dy=-2.5 * lower_lip, dz=0.5 * lower_lip),
        "cheek_puff": (1.0 * front * (3.0 * cheeks + 2.0 * _pair(X, Y, 30.0, _MOUTH_Y, 9.0, 10.0)))[:, None] * n,
        "smile_asymmetry": vec(dy=3.0 * sx * corners, dx=1.5 * corners),
        "nose_wrinkle": vec(dy=2.0 * _pair(X, Y, 13.0, -38.0, 6.0, 6.0) + 1.0 * _gauss(X, Y, 0, -10, 10, 8)),
        "jaw_sideways": vec(dx=3.0 * w),
        "brow_raise_asymmetry": vec(dy=3.0 * brow * sx),
        "lip_funnel": vec(dz=2.0 * lips, dy=1.5 * (upper_lip - lower_lip)),
    }
    names = list(fields)
    out = [fields[k] for k in names]
    ms = _soft_masks(g)
    pools = [
        np.flatnonzero(ms["lips"] > 0.5),
        np.flatnonzero(ms["eyes"] > 0.5),
        np.flatnonzero(ms["brows"] > 0.5),
        np.flatnonzero(front * (ax > 25.0) * (ax < 50.0) * (Y > -70.0) * (Y < -20.0) > 0.5),
        np.flatnonzero(front * (ax < 30.0) * (Y > -110.0) * (Y < -75.0) > 0.5),
    ]
    for k in range(_N_EXPRESSION - len(out)):
        c = _pick(rng, pools[k % len(pools)], 2)
        radii = 6.0 + 8.0 * rng.random(2)
        w_rbf = 2.0 * rng.standard_normal((2, 3))
        out.append(_rbf_field(mean, mean[c], radii, w_rbf) * front[:, None])
    return names, out


def _reflectance_mean(g: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Linear-RGB albedo per vertex and the soft masks used for it."""
    m = _soft_masks(g)
    V = len(g["X"])
    skin = np.array([0.55, 0.38, 0.30])
    rgb = np.tile(skin, (V, 1))
    X, Y = g["X"], g["Y"]
    blush = 0.5 * _pair(X, Y, 42.0, -38.0, 14.0, 14.0) * g["front"]
    rgb = rgb + blush[:, None] * np.array([0.04, -0.02, -0.01])

    def paint(mask, colour):
        nonlocal rgb
        rgb = rgb * (1.0 - mask[:, None]) + mask[:, None] * np.asarray(colour)

    paint(m["lips"], (0.50, 0.19, 0.17))
    paint(m["brows"] * 0.85, (0.10, 0.065, 0.045))
    paint(m["nostrils"] * 0.85, (0.14, 0.07, 0.06))
    paint(m["eyes"], (0.78, 0.74, 0.70))
    paint(m["iris"], (0.12, 0.07, 0.04))
    paint(m["pupil"], (0.02, 0.015, 0.01))
    paint(m["mouth_line"], (0.07, 0.02, 0.02))
    return rgb, m


def _reflectance_fields(g: dict, mean: np.ndarray, masks: dict, rng: np.random.Generator) -> tuple[list, list]:
    """Semantic then random smooth reflectance fields (1 std, linear RGB)."""
    X, Y = g["X"], g["Y"]
    skin = 1.0 - np.clip(masks["eyes"] + masks["brows"] + masks["lips"], 0.0, 1.0)
    V = len(X)

    def colour(weight, rgb):
        return weight[:, None] * np.asarray(rgb, dtype=np.float64)[None, :]

    fields = {
        "skin_tone": colour(skin, (0.10, 0.075, 0.06)) + colour(masks["lips"], (0.06, 0.03, 0.03)),
        "redness": colour(skin, (0.035, -0.01, -0.01)),
        "yellowness": colour(skin, (0.01, 0.012, -0.02)),
        "lip_colour": colour(masks["lips"], (0.06, -0.02, -0.01)),
        "brow_darkness": colour(masks["brows"], (-0.05, -0.035, -0.025)),
        "iris_colour": colour(masks["iris"] - masks["pupil"], (0.04, 0.05, 0.03)),
        "cheek_blush": colour(_pair(X, Y, 42.0, -38.0, 14.0, 14.0) * g["front"], (0.03, -0.01, -0.005)),
    }
    names = list(fields)
    out = [fields[k] for k in names]
    pool = np.flatnonzero(np.abs(g["phi_v"]) < math.radians(95.0))
    for _ in range(_N_REFLECTANCE - len(out)):
        c = _pick(rng, pool, 4)
        radii = 10.0 + 30.0 * rng.random(4)
        w = 0.03 * rng.standard_normal((4, 3))
        out.append(_rbf_field(mean, mean[c], radii, w) * (0.2 + 0.8 * skin[:, None]))
    assert all(f.shape == (V, 3) for f in out)
    return names, out


# ---------------------------------------------------------------------------- the model
def generate_synthetic_model() -> MorphableModel:
    """Generate the procedural model (uncached; about a second). See the module docstring."""
    g = _grid()
    rng = np.random.default_rng(_SEED)
    mean = g["base"] + g["height"][:, None] * g["normals"]
    perm = mirror_permutation()
    mirrored = mean[perm] * np.array([-1.0, 1.0, 1.0])
    mean = np.round((mean + mirrored) / 2.0, 4)  # exactly symmetric, then rounded
    V = len(mean)
    landmarks, named = _landmarks(g, mean)

    id_names, id_fields = _identity_fields(g, mean, rng)
    id_fields = _without_rigid_motion(id_fields, mean)
    id_basis, id_norms = _orthonormalize(id_fields)
    id_std = _identity_stds(id_norms, len(id_names), V)

    ex_names, ex_fields = _expression_fields(g, mean, rng)
    ex_basis, ex_norms = _orthonormalize(ex_fields)
    ex_std = _decreasing(ex_norms)

    refl_mean, masks = _reflectance_mean(g)
    rf_names, rf_fields = _reflectance_fields(g, mean, masks, rng)
    rf_basis, rf_norms = _orthonormalize(rf_fields)
    rf_std = _decreasing(rf_norms)

    def basis(Q):
        return np.round(Q, 8).reshape(V, 3, -1)

    sqrt_v = math.sqrt(V)
    metadata = {
        "generator": "facebench.models.synthetic",
        "seed": _SEED,
        "std_units": ("Euclidean norm over all 3V coordinates of the 1-std change (basis columns are "
                      "orthonormal); per-vertex RMS = std / sqrt(V)"),
        "identity_mode_names": id_names,
        "expression_mode_names": ex_names,
        "reflectance_mode_names": rf_names,
        "identity_rms_mm": [round(float(v) / sqrt_v, 4) for v in id_std],
        "expression_rms_mm": [round(float(v) / sqrt_v, 4) for v in ex_std],
        "regions": list(REGION_NAMES),
        "regions_function": "facebench.models.synthetic.vertex_regions",
        "grid": {"rows": g["n_rows"], "columns": g["n_cols"], "order": "row-major, rows bottom to top"},
    }
    return MorphableModel(
        name="synthetic",
        mean=mean.astype(np.float32),
        faces=g["faces"],
        identity_basis=basis(id_basis),
        identity_std=np.round(id_std, 4),
        expression_basis=basis(ex_basis),
        expression_std=np.round(ex_std, 4),
        reflectance_mean=np.round(np.clip(refl_mean, 0.0, 1.0), 5),
        reflectance_basis=basis(rf_basis),
        reflectance_std=np.round(rf_std, 5),
        landmark_indices=landmarks,
        version=SYNTHETIC_MODEL_VERSION,
        origin=SYNTHETIC_ORIGIN,
        reflectance_source="model (procedural)",
        source="procedural",
        named_landmarks=named,
        metadata=metadata,
    )


@functools.lru_cache(maxsize=1)
def load_synthetic() -> MorphableModel:
    """The procedural default model (generated once per process, then cached; immutable)."""
    return generate_synthetic_model()
