"""Summaries of a :class:`MorphableModel` as data (the CLI formats them)."""

from __future__ import annotations

import numpy as np

from facebench.landmarks import IBUG68_NAMES
from facebench.models.morphable_model import MorphableModel


def model_summary(model: MorphableModel) -> dict:
    """Counts, extents (mm), std ranges, origin and provenance of ``model`` as a JSON-able dict."""
    extent = model.extent_mm()

    def std_range(std: np.ndarray) -> list[float] | None:
        return [float(std[0]), float(std[-1])] if len(std) else None

    def rms(std: np.ndarray) -> float | None:
        # a unit basis column spread over V vertices: 1 std moves a vertex by std/sqrt(V) RMS
        return float(std[0] / np.sqrt(model.n_vertices)) if len(std) else None

    return {
        "name": model.name,
        "version": model.version,
        "source": model.source or "procedural",
        "vertices": model.n_vertices,
        "faces": model.n_faces,
        "identity_modes": model.n_identity,
        "expression_modes": model.n_expression,
        "reflectance_modes": model.n_reflectance,
        "identity_std_first_last": std_range(model.identity_std),
        "expression_std_first_last": std_range(model.expression_std),
        "reflectance_std_first_last": std_range(model.reflectance_std),
        "identity_mode1_rms_mm_per_vertex": rms(model.identity_std),
        "expression_mode1_rms_mm_per_vertex": rms(model.expression_std),
        "extent_mm": {"width_x": float(extent[0]), "height_y": float(extent[1]), "depth_z": float(extent[2])},
        "bbox_min_mm": [float(v) for v in model.mean.min(axis=0)],
        "bbox_max_mm": [float(v) for v in model.mean.max(axis=0)],
        "landmarks_defined": int(model.has_landmark.sum()),
        "origin": model.origin,
        "reflectance_source": model.reflectance_source,
        "digest": model.digest(),
    }


def landmark_table(model: MorphableModel) -> list[dict]:
    """One row per iBUG-68 landmark: number (1-based), name, vertex (-1 if none), x, y, z in mm."""
    rows = []
    for i, (name, vertex) in enumerate(zip(IBUG68_NAMES, model.landmark_indices)):
        xyz = model.mean[vertex] if vertex >= 0 else np.full(3, np.nan)
        rows.append({"ibug": i + 1, "name": name, "vertex": int(vertex),
                     "x": float(xyz[0]), "y": float(xyz[1]), "z": float(xyz[2])})
    return rows
