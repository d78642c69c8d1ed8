"""The iBUG-68 landmark scheme (Sagonas et al. 2013, 300-W): names and left/right mirror pairs.

Landmark numbers in names are the usual 1-based iBUG numbers; arrays are 0-based. "Right" and
"left" are the subject's (the subject's right appears on the image's left in a frontal photo).
"""

from __future__ import annotations

import numpy as np

_GROUPS = [
    ("jaw", 17),
    ("right brow", 5),
    ("left brow", 5),
    ("nose bridge", 4),
    ("nose base", 5),
    ("right eye", 6),
    ("left eye", 6),
    ("outer lip", 12),
    ("inner lip", 8),
]

_SPECIAL = {
    1: "jaw 1 (right, ear level)",
    9: "chin",
    17: "jaw 17 (left, ear level)",
    18: "right brow outer",
    22: "right brow inner",
    23: "left brow inner",
    27: "left brow outer",
    28: "nose bridge top",
    31: "nose tip",
    32: "right nostril",
    34: "subnasale",
    36: "left nostril",
    37: "right eye outer corner",
    40: "right eye inner corner",
    43: "left eye inner corner",
    46: "left eye outer corner",
    49: "right mouth corner",
    52: "upper lip top",
    55: "left mouth corner",
    58: "lower lip bottom",
    61: "right inner mouth corner",
    63: "upper lip inner",
    65: "left inner mouth corner",
    67: "lower lip inner",
}


def _names() -> tuple[str, ...]:
    names, number = [], 1
    for group, count in _GROUPS:
        for i in range(count):
            names.append(_SPECIAL.get(number, f"{group} {i + 1}"))
            number += 1
    return tuple(names)


#: Human-readable name of each iBUG-68 landmark, index 0 = landmark 1.
IBUG68_NAMES: tuple[str, ...] = _names()

_MIRROR_PAIRS_1BASED = (
    [(i, 18 - i) for i in range(1, 9)]  # jaw
    + [(18 + i, 27 - i) for i in range(5)]  # brows
    + [(32, 36), (33, 35)]  # nose base
    + [(37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47)]  # eyes
    + [(49, 55), (50, 54), (51, 53), (56, 60), (57, 59)]  # outer lip
    + [(61, 65), (62, 64), (66, 68)]  # inner lip
)


def _mirror() -> np.ndarray:
    perm = np.arange(68)
    for a, b in _MIRROR_PAIRS_1BASED:
        perm[a - 1], perm[b - 1] = b - 1, a - 1
    perm.setflags(write=False)
    return perm


#: ``IBUG68_MIRROR[i]`` is the 0-based index of landmark i's mirror image (x -> -x) partner.
IBUG68_MIRROR: np.ndarray = _mirror()


#: Scan landmark sets of the real-data protocols, in protocol order (names of Ramon et al.'s
#: annotation files). ``micc4``: the 4 vertices annotated on each MICC scan
#: (``data/micc/cases/subject_N/correspondences.txt``); ``facewarehouse6``: the 6 template vertices
#: of ``data/facewarehouse/vertex_identifiers.txt``. "right"/"left" are the subject's.
SCAN_LANDMARK_SETS: dict[str, tuple[str, ...]] = {
    "micc4": ("right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central"),
    "facewarehouse6": ("right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central",
                       "right_ear_tragus", "left_ear_tragus"),
    # NoW's seven landmarks in NoW's order (``now7``): iBUG-68 37, 40, 43, 46, 34, 49, 55 (1-based)
    "now7": ("right_eye_outer_corner", "right_eye_inner_corner", "left_eye_inner_corner", "left_eye_outer_corner",
             "subnasale", "right_mouth_corner", "left_mouth_corner"),
}
#: 0-based iBUG-68 indices of NoW's seven landmarks, in NoW's order (``SCAN_LANDMARK_SETS["now7"]``).
NOW7_IBUG68: tuple[int, ...] = (36, 39, 42, 45, 33, 48, 54)
