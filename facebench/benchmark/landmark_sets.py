"""Scan landmark sets of the real-data protocols on a face model's topology.

A submission for ``micc-ramon2019`` / ``micc-95mm`` (landmark set ``micc4``),
``facewarehouse-ramon2019`` (``facewarehouse6``) or ``now`` / ``now-metrical`` (``now7``: NoW's
eye corners, subnasale and mouth corners, iBUG-68 37, 40, 43, 46, 34, 49, 55) gives the vertex of each scan landmark on its own
topology, in the protocol's order (:data:`facebench.landmarks.SCAN_LANDMARK_SETS`).
:func:`landmark_indices_for` finds them on a :class:`~facebench.models.MorphableModel`:

==================== ============================================ =======================================
scan landmark        model's named landmark (first found)          else, from the iBUG-68 landmarks
==================== ============================================ =======================================
right_eye_lacrimal   ``right_eye_lacrimal``                        iBUG 40 (right eye, inner corner)
left_eye_lacrimal    ``left_eye_lacrimal``                         iBUG 43 (left eye, inner corner)
nose_base            ``nose_base``, ``subnasale``                  iBUG 34 (nose base, centre)
lips_central         ``lips_central``                              the mean-shape vertex nearest the mean
                                                                   of iBUG 63 and 67 (upper and lower
                                                                   inner lip, centre): the lips' meeting
                                                                   point
right_ear_tragus     ``right_ear_tragus``, ``right_ear_level``     none: iBUG-68 has no ear point;
left_ear_tragus      ``left_ear_tragus``, ``left_ear_level``       :class:`LandmarkSetError`
==================== ============================================ =======================================

iBUG numbers are 1-based as in the iBUG annotation scheme ("right"/"left" are the subject's). The
choices: the lacrimal caruncle sits at the inner eye corner, which is iBUG 40/43; Ramon et al.'s
"nose base" on the MICC scans is the subnasale, iBUG 34; "lips central" is the midpoint of the
mouth line, between the inner lip contours (iBUG 63 above, 67 below), taken as the model vertex
nearest their mean on the mean shape so it lies on the surface. The procedural model names
``subnasale`` (the nose base), ``lips_central``, the lacrimals and ``right/left_ear_level`` (a
vertex at ear height on the side of the head: the tragus's place on a model without ears).
"""

from __future__ import annotations

import numpy as np

from facebench.errors import FacebenchError
from facebench.landmarks import SCAN_LANDMARK_SETS

__all__ = ["LandmarkSetError", "NAMED_ALIASES", "IBUG_FALLBACK", "landmark_indices_for", "landmark_set_names"]

#: Named model landmarks accepted for each scan landmark, in order of preference.
NAMED_ALIASES: dict[str, tuple[str, ...]] = {
    "right_eye_lacrimal": ("right_eye_lacrimal",),
    "left_eye_lacrimal": ("left_eye_lacrimal",),
    "nose_base": ("nose_base", "subnasale"),
    "lips_central": ("lips_central",),
    "right_ear_tragus": ("right_ear_tragus", "right_ear_level"),
    "left_ear_tragus": ("left_ear_tragus", "left_ear_level"),
    "subnasale": (),  # now7: iBUG-68 34, the landmark NoW's submissions take from their 68 (not a named vertex)
}
#: 1-based iBUG-68 landmarks used when the model has no named landmark: one number, or a tuple
#: whose mean is snapped to the nearest vertex of the mean shape.
IBUG_FALLBACK: dict[str, int | tuple[int, ...]] = {
    "right_eye_lacrimal": 40,
    "left_eye_lacrimal": 43,
    "nose_base": 34,
    "lips_central": (63, 67),
    # now7 (NoW's landmarks): eye corners, subnasale, mouth corners
    "right_eye_outer_corner": 37,
    "right_eye_inner_corner": 40,
    "left_eye_inner_corner": 43,
    "left_eye_outer_corner": 46,
    "subnasale": 34,
    "right_mouth_corner": 49,
    "left_mouth_corner": 55,
}


class LandmarkSetError(FacebenchError):
    """A model cannot give a vertex for a scan landmark of a protocol."""


def landmark_set_names(landmark_set: str) -> tuple[str, ...]:
    """Names of ``landmark_set`` (``"micc4"`` or ``"facewarehouse6"``) in protocol order."""
    try:
        return SCAN_LANDMARK_SETS[landmark_set]
    except KeyError:
        raise LandmarkSetError(f"unknown scan landmark set {landmark_set!r}; known: "
                               f"{', '.join(SCAN_LANDMARK_SETS)}") from None


def landmark_indices_for(model, landmark_set: str) -> np.ndarray:
    """Vertex indices of the scan landmarks of ``landmark_set`` on ``model``'s topology.

    Args:
        model: a :class:`~facebench.models.MorphableModel` (``named_landmarks``,
            ``landmark_indices (68,)`` with −1 where undefined, ``mean (V,3)``).
        landmark_set: ``"micc4"`` or ``"facewarehouse6"``.

    Returns:
        ``(L,)`` int64 vertex indices in the set's order (module table for the choices).

    Raises:
        LandmarkSetError: a landmark the model defines neither by name nor by its iBUG landmarks
            (e.g. the ear tragus on a model without named ear points).
    """
    names = landmark_set_names(landmark_set)
    return np.array([_vertex_for(model, name) for name in names], dtype=np.int64)


def _vertex_for(model, name: str) -> int:
    named = getattr(model, "named_landmarks", {}) or {}
    for alias in NAMED_ALIASES.get(name, (name,)):
        if alias in named:
            return int(named[alias])
    fallback = IBUG_FALLBACK.get(name)
    if fallback is None:
        raise LandmarkSetError(f"model {model.name!r} has no vertex for {name!r}: it names none of "
                               f"{', '.join(NAMED_ALIASES.get(name, (name,)))} and iBUG-68 has no equivalent")
    numbers = (fallback,) if isinstance(fallback, int) else fallback
    indices = np.asarray(model.landmark_indices)[[n - 1 for n in numbers]]
    if (indices < 0).any():
        missing = [n for n, i in zip(numbers, indices) if i < 0]
        raise LandmarkSetError(f"model {model.name!r} has no vertex for {name!r}: neither a named landmark nor "
                               f"iBUG-68 landmark(s) {', '.join(map(str, missing))}")
    if len(indices) == 1:
        return int(indices[0])
    mean = np.asarray(model.mean, np.float64)
    target = mean[indices].mean(axis=0)
    return int(np.argmin(np.sum((mean - target) ** 2, axis=1)))
