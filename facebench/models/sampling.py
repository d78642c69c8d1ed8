"""Random faces from a morphable model, and writing them as meshes.

Coefficients are drawn i.i.d. N(0, 1) in units of standard deviations (the model's own prior),
optionally scaled; the generator is numpy's PCG64 seeded with ``seed``, so the same seed gives
the same faces.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from facebench.errors import InvalidInputError
from facebench.models.morphable_model import MorphableModel


@dataclasses.dataclass(frozen=True)
class FaceSamples:
    """``n`` random faces: coefficients ``(n, K*)`` in std units, vertices ``(n, V, 3)`` head frame
    mm, per-vertex linear-RGB reflectance ``(n, V, 3)`` clipped to [0, 1]."""

    identity: np.ndarray
    expression: np.ndarray
    reflectance_coefficients: np.ndarray
    vertices: np.ndarray
    reflectance: np.ndarray


def sample_faces(
    model: MorphableModel,
    n: int,
    seed: int = 0,
    *,
    identity_scale: float = 1.0,
    expression_scale: float = 1.0,
    reflectance_scale: float = 1.0,
) -> FaceSamples:
    """Draw ``n`` faces; a scale of 0 keeps that space at its mean (e.g. neutral expression)."""
    if n < 1:
        raise InvalidInputError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    identity = (rng.standard_normal((n, model.n_identity)) * identity_scale).astype(np.float32)
    expression = (rng.standard_normal((n, model.n_expression)) * expression_scale).astype(np.float32)
    refl = (rng.standard_normal((n, model.n_reflectance)) * reflectance_scale).astype(np.float32)
    vertices = model.shape(
        identity if model.n_identity else None, expression if model.n_expression else None
    )
    vertices = np.broadcast_to(vertices, (n, model.n_vertices, 3)).copy()
    reflectance = model.reflectance(refl if model.n_reflectance else None)
    reflectance = np.clip(np.broadcast_to(reflectance, (n, model.n_vertices, 3)), 0.0, 1.0)
    return FaceSamples(identity, expression, refl, vertices, reflectance.astype(np.float32))


def parse_coefficients(text: str | None, limit: int, what: str) -> np.ndarray | None:
    """Parse ``"1.5,-0.5,0"`` into a float32 vector of the first modes (std units); None if empty."""
    if text is None or not text.strip():
        return None
    try:
        values = np.array([float(v) for v in text.split(",") if v.strip()], np.float32)
    except ValueError:
        raise InvalidInputError(f"{what} coefficients must be comma-separated numbers, got {text!r}") from None
    if len(values) > limit:
        raise InvalidInputError(f"{what}: {len(values)} coefficients given but the model has {limit} modes")
    if not np.all(np.isfinite(values)):
        raise InvalidInputError(f"{what} coefficients must be finite, got {text!r}")
    return values
