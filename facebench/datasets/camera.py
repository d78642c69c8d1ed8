"""Synthetic cameras: the fixed look-at camera and a per-sample camera like real captures.

``fixed`` (the default): every sample is seen from ``distance`` mm, aimed at the centre ``c`` of
the mean shape's bounding box, one focal length for the whole file: ``t = (0, 0, d) − R(q) c``.
The translation is then a function of the rotation.

``variable``: per sample, from its own stream ``default_rng([seed, 4, i])``:

- distance ``d`` ~ U(``distance_range``) mm (400–1200 by default: arm's length to a few metres of
  a face crop);
- the fraction ``fill`` ~ U(``fill_range``) (0.55–0.85) of the image width that the mean shape's
  larger side spans, as a face detector's crop varies; the focal length follows,
  ``f = fill · W · d / extent`` px, and with it the horizontal field of view
  ``2 atan(W / 2f)`` (about 9°–40° for the procedural model at the default ranges);
- an off-centre shift of the face centre's image position by ``(du, dv)`` ~ U(±``offset``)·W px
  (0.08 W by default): ``t = (du · d / f, dv · d / f, d) − R(q) c`` puts ``c`` at pixel
  ``(cx + du, cy + dv)``.

The principal point stays at the image centre (``facebench.conventions.intrinsics``), so the
mirror image of a sample is still the horizontal flip of its image (``--symmetrize``). Units: mm,
pixels, degrees.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["CAMERAS", "CameraSettings", "CameraDraw", "draw_camera", "look_at_translation", "fov_deg"]

#: Camera kinds of the generator.
CAMERAS = ("fixed", "variable")
_STREAM_CAMERA = 4


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    """Ranges of the ``variable`` camera (mm, fractions of the image width)."""

    distance_range: tuple[float, float] = (400.0, 1200.0)
    fill_range: tuple[float, float] = (0.55, 0.85)
    offset: float = 0.08

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CameraDraw:
    """One sample's camera: ``distance`` mm, ``focal`` px, ``shift (2,)`` px of the face centre."""

    distance: float
    focal: float
    shift: np.ndarray


def draw_camera(seed: int, index: int, settings: CameraSettings, size: int, extent_mm: float) -> CameraDraw:
    """The ``variable`` camera of sample ``index`` (depends only on seed, index and settings).

    Args:
        extent_mm: the larger side (x or y) of the mean shape's bounding box, mm.
    """
    rng = np.random.default_rng([int(seed), _STREAM_CAMERA, int(index)])
    distance = float(rng.uniform(*settings.distance_range))
    fill = float(rng.uniform(*settings.fill_range))
    shift = rng.uniform(-1.0, 1.0, 2) * settings.offset * size
    return CameraDraw(distance, fill * size * distance / extent_mm, shift)


def look_at_translation(R: np.ndarray, centre, distance: float, shift=(0.0, 0.0), focal: float = 1.0) -> np.ndarray:
    """``t (3,)`` mm putting head-frame point ``centre`` at depth ``distance`` and ``shift`` px from
    the principal point: ``t = (shift · d / f, d) − R c``."""
    d = float(distance)
    offset = np.array([shift[0] * d / focal, shift[1] * d / focal, d], np.float64)
    return offset - np.asarray(R, np.float64) @ np.asarray(centre, np.float64)


def fov_deg(focal: float, width: int) -> float:
    """Horizontal field of view ``2 atan(W / 2f)`` in degrees."""
    return math.degrees(2.0 * math.atan(width / (2.0 * focal)))
