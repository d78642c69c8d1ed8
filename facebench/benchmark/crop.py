"""The face region a scan protocol scores: a sphere around a centre found on the ground truth.

- :func:`crop_sphere`: the scan vertices within a radius (mm) of a centre;
- :func:`crop_center`: the centre a protocol names (a ground-truth landmark, iBUG-68's nose tip, or
  the nose tip found on the scan);
- :func:`face_forward` / :func:`scan_nose_tip`: the scan's facing direction from its eye-corner and
  lip landmarks, and the most forward scan vertex near ``nose_base`` within the mid-sagittal band
  (for MICC, whose annotations have no nose tip).
"""

from __future__ import annotations

import numpy as np

from facebench.benchmark.similarity import AlignmentError, points_array

__all__ = ["IBUG68_NOSE_TIP", "CROP_CENTERS", "CROP_RULES", "SCAN_LANDMARK_ORDER", "NOSE_TIP_SEARCH_MM",
           "NOSE_TIP_LATERAL_MM", "NOW_CENTRE_FRACTION", "NOW_RADIUS_FACTOR", "crop_sphere", "crop_center",
           "face_forward", "scan_nose_tip", "now_crop"]

#: 0-based iBUG-68 index of the nose tip (landmark 31).
IBUG68_NOSE_TIP = 30
#: Crop centres a protocol can name: a ground-truth landmark index, ``"nose_tip"`` (iBUG-68
#: landmark 31 of the ground truth) or ``"scan_nose_tip"`` (found on the scan, :func:`scan_nose_tip`).
CROP_CENTERS = ("nose_tip", "scan_nose_tip")
#: Crop rules that set both centre and radius from the landmarks (None: ``crop_center`` + radius).
CROP_RULES = (None, "now")
#: NoW's crop (``compute_mask`` in now_evaluation's scan2mesh_computations.py, read, not copied): the
#: centre lies this fraction of the way from the subnasale to the inner-eye-corner midpoint ...
NOW_CENTRE_FRACTION = 0.3
#: ... and the radius is this factor times the mean of the outer-eye-corner distance and the nose
#: length (subnasale to the inner-eye-corner midpoint).
NOW_RADIUS_FACTOR = 1.4
#: Order of the first four scan landmarks (``micc4``; ``facewarehouse6`` starts with the same four).
SCAN_LANDMARK_ORDER = ("right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central")
#: Default search radius (mm) around ``nose_base`` for :func:`scan_nose_tip`.
NOSE_TIP_SEARCH_MM = 30.0
#: Largest distance (mm) of the nose tip from the mid-sagittal plane (:func:`scan_nose_tip`).
NOSE_TIP_LATERAL_MM = 10.0


def crop_sphere(points, center, radius_mm: float) -> np.ndarray:
    """Indices (sorted, int64) of the points within ``radius_mm`` of ``center`` (boundary included).

    Args:
        points: ``(N, 3)`` mm. center: ``(3,)`` mm, same frame. radius_mm: > 0.
    """
    p = points_array(points, "points")
    c = np.asarray(center, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(c)):
        raise AlignmentError("crop centre is NaN (the landmark it comes from is missing)")
    if not radius_mm > 0:
        raise ValueError(f"crop radius must be > 0 mm, got {radius_mm}")
    d2 = np.sum((p - c) ** 2, axis=1)
    return np.flatnonzero(d2 <= float(radius_mm) ** 2).astype(np.int64)


def face_forward(scan_vertices, scan_landmarks) -> np.ndarray:
    """Unit forward direction of a scanned face from its ``micc4`` landmarks, scan frame.

    The normal of the plane through the right and left eye lacrimal points and the lips' central
    point (landmarks 0, 1 and 3 of :data:`SCAN_LANDMARK_ORDER`), oriented away from the scan's
    centroid: a face scan is a shell whose centroid lies behind the face, so the face looks along
    the normal that points from the centroid toward the landmarks. The nose base is not used (it
    lies in front of that plane and would tilt it).

    Args:
        scan_vertices: ``(V, 3)`` mm. scan_landmarks: ``(L >= 4, 3)`` mm in :data:`SCAN_LANDMARK_ORDER`.

    Raises:
        AlignmentError: a landmark is missing (NaN) or the three points are collinear.
    """
    v = points_array(scan_vertices, "scan vertices")
    lm = points_array(scan_landmarks, "scan landmarks")
    if len(lm) < 4:
        raise AlignmentError(f"the scan nose tip needs the {len(SCAN_LANDMARK_ORDER)} scan landmarks "
                             f"({', '.join(SCAN_LANDMARK_ORDER)}), got {len(lm)}")
    right, left, lips = lm[0], lm[1], lm[3]
    if not np.all(np.isfinite([right, left, lips])):
        raise AlignmentError("the scan nose tip needs both eye lacrimal points and the lips' central point; "
                             "one is missing (NaN)")
    normal = np.cross(left - right, lips - right)
    length = float(np.linalg.norm(normal))
    if not length > 1e-6 * max(float(np.linalg.norm(left - right) * np.linalg.norm(lips - right)), 1e-12):
        raise AlignmentError("the eye lacrimal and lips landmarks of the scan are collinear: no face direction")
    normal /= length
    if float(normal @ ((right + left + lips) / 3.0 - v.mean(axis=0))) < 0:
        normal = -normal
    return normal


def scan_nose_tip(scan_vertices, scan_landmarks, *, search_mm: float = NOSE_TIP_SEARCH_MM) -> np.ndarray:
    """The nose tip of a scan annotated with the ``micc4`` landmarks, ``(3,)`` mm, scan frame.

    MICC's four annotated vertices have no nose tip; the 95 mm crop of Deng et al. is centred on
    one. It is defined here as the scan vertex that lies farthest along the face's forward
    direction (:func:`face_forward`) among the scan vertices within ``search_mm`` of the nose base
    (landmark 2) and within :data:`NOSE_TIP_LATERAL_MM` of the mid-sagittal plane (the plane
    through the nose base whose normal is the lacrimal-to-lacrimal direction, made orthogonal to
    the forward direction). The sphere keeps the chin, brows and hair out (the procedural model's
    tip lies 23 mm from its subnasale); the slab keeps out cheeks, which on some faces reach
    farther forward than the nose tip within that sphere. On procedural faces the vertex found
    is the model's ``nose_tip`` vertex or within a few mm of it (the forward direction is tilted
    a few degrees from the head's +z).

    Raises:
        AlignmentError: missing landmarks or no scan vertex within ``search_mm`` of the nose base.
    """
    v = points_array(scan_vertices, "scan vertices")
    lm = points_array(scan_landmarks, "scan landmarks")
    forward = face_forward(v, lm)
    base = lm[2]
    if not np.all(np.isfinite(base)):
        raise AlignmentError("the scan nose tip is searched around the nose base, which is missing (NaN)")
    lateral = lm[1] - lm[0]
    lateral = lateral - (lateral @ forward) * forward
    lateral /= np.linalg.norm(lateral)  # non-zero: face_forward checked the three points
    near = crop_sphere(v, base, search_mm)
    near = near[np.abs((v[near] - base) @ lateral) <= NOSE_TIP_LATERAL_MM]
    if len(near) == 0:
        raise AlignmentError(f"no scan vertex within {search_mm:g} mm of the nose base and "
                             f"{NOSE_TIP_LATERAL_MM:g} mm of the mid-sagittal plane")
    return v[near[np.argmax(v[near] @ forward)]].copy()


def crop_center(gt_landmarks, center: int | str, gt_vertices=None,
                search_mm: float = NOSE_TIP_SEARCH_MM) -> np.ndarray:
    """The crop sphere's centre ``(3,)`` mm in the ground truth's frame: a ground-truth landmark
    (an index, or ``"nose_tip"`` = iBUG-68 landmark 31) or the nose tip found on the scan
    (``"scan_nose_tip"``). AlignmentError when the landmark is missing."""
    if gt_landmarks is None:
        raise AlignmentError("a crop around a landmark needs the ground-truth landmarks")
    lm = points_array(gt_landmarks, "ground-truth landmarks")
    if center == "scan_nose_tip":
        if gt_vertices is None:
            raise AlignmentError("crop_center 'scan_nose_tip' needs the scan's vertices")
        return scan_nose_tip(gt_vertices, lm, search_mm=search_mm)
    if center == "nose_tip":
        if len(lm) != 68:
            raise AlignmentError(f"crop_center 'nose_tip' means iBUG-68 landmark 31, but the ground truth has "
                                 f"{len(lm)} landmarks; give a landmark index")
        index = IBUG68_NOSE_TIP
    else:
        index = int(center)
        if not 0 <= index < len(lm):
            raise AlignmentError(f"crop_center landmark index {index} is outside [0, {len(lm)})")
    c = lm[index]
    if not np.all(np.isfinite(c)):
        raise AlignmentError(f"crop centre landmark {index} of the ground truth is missing (NaN)")
    return c



def now_crop(landmarks) -> tuple[np.ndarray, float]:
    """NoW's crop sphere from the seven NoW landmarks of a scan: ``(centre (3,), radius)`` in mm.

    Landmarks in NoW's order (``now7``): right eye outer corner, right eye inner corner, left eye
    inner corner, left eye outer corner, subnasale, right mouth corner, left mouth corner. With
    ``b`` the midpoint of the inner eye corners (1, 2) and ``n`` the subnasale (4):
    ``centre = n + 0.3 (b − n)`` and ``radius = 1.4 (|o_r − o_l| + |b − n|) / 2`` with ``o_r, o_l``
    the outer eye corners (0, 3), as NoW's evaluation code defines its mask. The mouth corners are
    not used.

    Raises:
        AlignmentError: fewer than 5 landmarks, or one of the five used is missing (NaN).
    """
    lm = points_array(landmarks, "NoW landmarks")
    if len(lm) < 5:
        raise AlignmentError(f"NoW's crop needs the 7 NoW landmarks, got {len(lm)}")
    if not np.all(np.isfinite(lm[:5])):
        raise AlignmentError("NoW's crop needs both eyes' corners and the subnasale; one is missing (NaN)")
    subnasale = lm[4]
    bridge = (lm[1] + lm[2]) / 2.0
    centre = subnasale + NOW_CENTRE_FRACTION * (bridge - subnasale)
    radius = NOW_RADIUS_FACTOR * (float(np.linalg.norm(lm[0] - lm[3])) + float(np.linalg.norm(bridge - subnasale))) / 2.0
    if not radius > 0:
        raise AlignmentError("NoW's crop radius is 0: the eye and nose landmarks coincide")
    return centre, radius
