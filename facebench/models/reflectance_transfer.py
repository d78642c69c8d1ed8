"""Reflectance for shape-only models (ICT-FaceKit, SFM without colour, FLAME).

A shape-only model gets the built-in synthetic model's reflectance space transferred by nearest
vertex: the synthetic mean is aligned to the model's mean by a similarity fitted on the iBUG
landmarks both have (Umeyama, no reflections), then each model vertex takes the reflectance mean,
basis rows of its nearest synthetic vertex. Vertices farther than ``max_distance_mm`` from the
synthetic surface (back of the head, eyeballs, teeth) keep the synthetic model's mean skin colour
with no variation. Without at least 6 shared landmarks the model gets a constant albedo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from facebench.geometry import similarity_from_correspondences
from facebench.models.morphable_model import MorphableModel, empty_basis

#: Linear-RGB albedo used when no reflectance can be transferred (a mid skin tone).
CONSTANT_ALBEDO = (0.55, 0.38, 0.30)


def constant_reflectance(n_vertices: int, albedo=CONSTANT_ALBEDO) -> dict:
    """Reflectance fields for a constant albedo with no modes: ``reflectance_mean (V,3)``, empty basis."""
    basis, std = empty_basis(n_vertices)
    mean = np.tile(np.asarray(albedo, np.float32), (n_vertices, 1))
    return {"reflectance_mean": mean, "reflectance_basis": basis, "reflectance_std": std}


def with_synthetic_reflectance(model: MorphableModel, max_distance_mm: float = 15.0) -> MorphableModel:
    """``model`` with the synthetic model's reflectance transferred (see module docstring)."""
    from facebench.models.procedural import load_synthetic

    source = load_synthetic()
    shared = model.has_landmark & source.has_landmark
    if shared.sum() < 6:
        return dataclasses.replace(
            model, **constant_reflectance(model.n_vertices),
            reflectance_source=f"constant albedo {CONSTANT_ALBEDO} (fewer than 6 iBUG landmarks to align)",
        )
    src_points = source.mean[source.landmark_indices[shared]]
    dst_points = model.mean[model.landmark_indices[shared]]
    s, R, t = similarity_from_correspondences(src_points, dst_points)
    aligned = s * source.mean.astype(np.float64) @ R.T + t
    distance, nearest = cKDTree(aligned).query(model.mean.astype(np.float64))
    far = distance > max_distance_mm * s
    skin = source.reflectance_mean[source.landmark_indices[30]]  # iBUG 31: nose tip, skin
    mean = source.reflectance_mean[nearest].copy()
    mean[far] = skin
    basis = source.reflectance_basis[nearest].copy()
    basis[far] = 0.0
    return dataclasses.replace(
        model,
        reflectance_mean=mean,
        reflectance_basis=basis,
        reflectance_std=source.reflectance_std.copy(),
        reflectance_source=(
            f"transferred from synthetic {source.version} by nearest vertex after a landmark "
            f"similarity ({int(shared.sum())} landmarks); {int(far.sum())} vertices farther than "
            f"{max_distance_mm} mm get constant skin"
        ),
    )
