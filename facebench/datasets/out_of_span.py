"""Faces beyond a model's span: geometry and reflectance detail no predictor of that model can output.

The synthetic generator (:mod:`facebench.datasets.generator`) draws every in-span face from the
model's identity, expression and reflectance modes, so a predictor that uses the same modes has a
perfect fit available. The ``out-of-span`` world adds, per **subject** and deterministically from
the seed, detail that is orthogonal (Euclidean inner product of the flattened ``(3V,)`` vectors) to
the **predictors' span**: the first ``span_identity_dims`` identity and ``span_expression_dims``
expression modes of the model (shape), the first ``span_reflectance_dims`` reflectance modes
(reflectance). Three parts (``datasets/synthetic.md`` gives the measured energies):

1. **Held-out identity modes** (``heldout_modes`` of them): smooth displacement fields along the
   mean shape's normals, each a sum of 6 Gaussian bumps (widths 12–40 mm) at random vertices. They
   are a property of the world, not of a dataset: drawn from the fixed stream
   ``default_rng([WORLD_SEED, 1, j])`` for mode ``j``, made orthogonal to the predictors' span and
   orthonormalized (QR), with standard deviations decaying as ``0.85^j`` and scaled so that a
   subject's held-out displacement has an expected RMS (over vertices, 3D length) of
   ``heldout_rms_mm``. A subject draws N(0, 1) coefficients, clipped to ±3.
2. **Wrinkle-scale detail**: a band-limited displacement along the normals, the sum of 32 plane
   waves ``sin(2π k·x / λ + φ)`` with uniform random directions ``k`` and wavelengths λ in
   ``detail_wavelength_mm`` (5–15 mm by default: the procedural mesh's median edge is 2.2 mm, so
   pore-scale detail below ~4.4 mm cannot be represented by its vertices at all), projected out of
   the predictors' span and scaled to exactly ``detail_rms_mm`` RMS.
3. **Reflectance detail** (linear RGB offsets per vertex): freckles (0–150 spots of 1–2.5 mm
   radius), moles (0–3 spots of 2–4 mm), eyebrow darkening and lip colour around the iBUG eyebrow
   (17–26) and lip (48–67) landmarks, and smooth skin-tone blotches (4 bumps of 20–45 mm), projected
   out of the reflectance span; the generator adds them to the in-span reflectance and clips to
   [0, 1] (clipping is the only step that can put back a component in the span; its size is
   reported by ``facebench synth world``).

Frames and units: head frame, mm; reflectance linear RGB. Subject streams:
``default_rng([seed, 5, subject])``. All arithmetic in float64 with fixed-order numpy calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.linalg

__all__ = ["WORLDS", "WORLD_SEED", "OutOfSpanSettings", "OutOfSpanWorld", "orthonormal_span",
           "project_out", "vertex_normals"]

#: The generator's worlds: ``in-span`` (faces in the model's span, the default) or ``out-of-span``.
WORLDS = ("in-span", "out-of-span")
#: Seed of the world's held-out identity modes (shared by every dataset, whatever its seed).
WORLD_SEED = 0xFACE
_STREAM_DETAIL = 5
_LIP = tuple(range(48, 68))
_BROW = tuple(range(17, 27))


@dataclasses.dataclass(frozen=True)
class OutOfSpanSettings:
    """What the out-of-span world adds (mm, linear RGB); the span is the predictors' model."""

    span_identity_dims: int
    span_expression_dims: int
    span_reflectance_dims: int
    heldout_modes: int = 20
    heldout_rms_mm: float = 1.5
    detail_rms_mm: float = 0.25
    detail_wavelength_mm: tuple[float, float] = (5.0, 15.0)
    reflectance_detail: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(V, 3)`` unit area-weighted vertex normals (outward for counter-clockwise faces)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def orthonormal_span(*bases: np.ndarray) -> np.ndarray:
    """``(D, k)`` orthonormal basis (CholeskyQR2, float64) of the columns of the ``(D, k_i)`` arrays given;
    ``(D, 0)`` when they have no column."""
    columns = [np.asarray(b, np.float64) for b in bases if b.shape[1] > 0]
    if not columns:
        return np.zeros((bases[0].shape[0], 0))
    q = np.concatenate(columns, axis=1)
    for _ in range(2):  # CholeskyQR2: as accurate as Householder QR for well-conditioned columns, 5x faster
        upper = np.linalg.cholesky(q.T @ q).T
        q = scipy.linalg.solve_triangular(upper, q.T, trans="T", lower=False).T
    return q


def project_out(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``x - Q (Qᵀ x)`` for ``x (D,)`` or ``(D, m)`` and orthonormal ``Q (D, k)``, done twice
    (re-orthogonalization keeps the residual's inner products with Q at rounding level)."""
    for _ in range(2):
        if q.shape[1]:
            x = x - q @ (q.T @ x)
    return x


def _bumps(points: np.ndarray, centres: np.ndarray, widths: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(V, C)`` sum of Gaussian bumps ``weights[b] exp(-|x - c_b|² / 2 w_b²)`` (weights ``(B, C)``)."""
    out = np.zeros((len(points), weights.shape[1]))
    for c, w, a in zip(centres, widths, weights):
        d2 = np.sum((points - c) ** 2, axis=1)
        out += np.exp(-d2 / (2.0 * w * w))[:, None] * a[None, :]
    return out


class OutOfSpanWorld:
    """The detail of one model and predictors' span (built once per generation run).

    Args:
        model: the :class:`~facebench.models.MorphableModel` the data are drawn from.
        settings: :class:`OutOfSpanSettings`.
    """

    def __init__(self, model, settings: OutOfSpanSettings):
        self.settings = s = settings
        V = model.n_vertices
        self.n_vertices = V
        self.mean = np.asarray(model.mean, np.float64)
        self.normals = vertex_normals(self.mean, model.faces)
        ident = np.asarray(model.identity_basis, np.float64).reshape(3 * V, -1)[:, : s.span_identity_dims]
        expr = np.asarray(model.expression_basis, np.float64).reshape(3 * V, -1)[:, : s.span_expression_dims]
        refl = np.asarray(model.reflectance_basis, np.float64).reshape(3 * V, -1)[:, : s.span_reflectance_dims]
        self.shape_span = orthonormal_span(ident, expr)
        self.reflectance_span = orthonormal_span(refl)
        self.heldout_basis, self.heldout_std = self._heldout_modes()
        landmarks = np.asarray(model.landmark_indices, np.int64)
        self.lip_points = self.mean[[landmarks[i] for i in _LIP if landmarks[i] >= 0]]
        self.brow_points = self.mean[[landmarks[i] for i in _BROW if landmarks[i] >= 0]]
        # the face region where spots land: in front of the ear plane
        self.front = np.flatnonzero(self.mean[:, 2] > np.quantile(self.mean[:, 2], 0.5))

    # ------------------------------------------------------------------ geometry
    def _heldout_modes(self) -> tuple[np.ndarray, np.ndarray]:
        s, V = self.settings, self.n_vertices
        m = s.heldout_modes
        if m == 0:
            return np.zeros((3 * V, 0)), np.zeros(0)
        fields = np.empty((3 * V, m))
        for j in range(m):
            rng = np.random.default_rng([WORLD_SEED, 1, j])
            centres = self.mean[rng.integers(0, V, 6)]
            amplitude = _bumps(self.mean, centres, rng.uniform(12.0, 40.0, 6), rng.standard_normal((6, 1)))
            fields[:, j] = (amplitude * self.normals).reshape(-1)
        basis, _ = np.linalg.qr(project_out(fields, self.shape_span))
        basis = project_out(basis, self.shape_span)
        basis /= np.linalg.norm(basis, axis=0, keepdims=True)
        weights = 0.85 ** np.arange(m)
        std = weights * s.heldout_rms_mm * np.sqrt(V) / np.sqrt(np.sum(weights**2))
        return basis, std

    def _rng(self, seed: int, subject: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), _STREAM_DETAIL, int(subject)])

    def shape_detail(self, seed: int, subject: int) -> dict[str, np.ndarray]:
        """Out-of-span displacement of one subject: ``heldout (V,3)``, ``detail (V,3)`` mm and their
        sum ``total (V,3)``; each orthogonal to the predictors' shape span."""
        s, V = self.settings, self.n_vertices
        rng = self._rng(seed, subject)
        c = np.clip(rng.standard_normal(s.heldout_modes), -3.0, 3.0)
        heldout = self.heldout_basis @ (c * self.heldout_std) if s.heldout_modes else np.zeros(3 * V)
        detail = np.zeros(3 * V)
        if s.detail_rms_mm > 0:
            direction = rng.standard_normal((32, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            lo, hi = s.detail_wavelength_mm
            wavelength = np.exp(rng.uniform(np.log(lo), np.log(hi), 32))
            phase = rng.uniform(0.0, 2 * np.pi, 32)
            amplitude = rng.uniform(0.5, 1.0, 32)
            k = direction * (2 * np.pi / wavelength)[:, None]
            height = np.sin(self.mean @ k.T + phase) @ amplitude  # (V,)
            field = project_out((height[:, None] * self.normals).reshape(-1), self.shape_span)
            detail = field * (s.detail_rms_mm / _rms_3d(field))
        total = heldout + detail
        return {"heldout": heldout.reshape(V, 3), "detail": detail.reshape(V, 3), "total": total.reshape(V, 3)}

    # ------------------------------------------------------------------ reflectance
    def reflectance_detail(self, seed: int, subject: int) -> np.ndarray:
        """``(V, 3)`` linear-RGB offset of one subject (before clipping), orthogonal to the
        predictors' reflectance span; zeros when ``reflectance_detail`` is off."""
        V = self.n_vertices
        if not self.settings.reflectance_detail:
            return np.zeros((V, 3))
        rng = np.random.default_rng([int(self._rng(seed, subject).integers(1 << 62)), 1])
        x = self.mean
        offset = np.zeros((V, 3))
        brown = np.array([0.30, 0.42, 0.55])  # freckle/mole darkening per channel (red least)
        # freckles
        n_freckles = int(rng.integers(0, 151))
        centres = x[rng.choice(self.front, n_freckles)]
        offset -= _bumps(x, centres, rng.uniform(1.0, 2.5, n_freckles),
                         rng.uniform(0.05, 0.15, (n_freckles, 1)) * brown)
        # moles
        n_moles = int(rng.integers(0, 4))
        centres = x[rng.choice(self.front, n_moles)]
        offset -= _bumps(x, centres, rng.uniform(2.0, 4.0, n_moles), rng.uniform(0.15, 0.3, (n_moles, 1)) * brown)
        # eyebrows: darker along the brow landmarks (4 mm wide)
        brow = rng.uniform(0.0, 0.25)
        offset -= brow * np.minimum(_bumps(x, self.brow_points, np.full(len(self.brow_points), 4.0),
                                           np.ones((len(self.brow_points), 1))), 1.0) * np.array([0.8, 0.9, 1.0])
        # lips: a redder or paler tint
        lip = rng.uniform(-0.06, 0.10)
        offset += lip * np.minimum(_bumps(x, self.lip_points, np.full(len(self.lip_points), 3.5),
                                          np.ones((len(self.lip_points), 1))), 1.0) * np.array([1.0, -0.6, -0.4])
        # skin-tone blotches
        centres = x[rng.choice(self.front, 4)]
        offset += _bumps(x, centres, rng.uniform(20.0, 45.0, 4), rng.normal(0.0, 0.03, (4, 3)))
        return project_out(offset.reshape(-1), self.reflectance_span).reshape(V, 3)


def _rms_3d(field: np.ndarray) -> float:
    """RMS over vertices of the 3D length of a flattened ``(3V,)`` displacement, mm."""
    return float(np.sqrt(np.sum(field**2) / (field.size // 3)))
