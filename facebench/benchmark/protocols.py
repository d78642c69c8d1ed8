"""Scoring protocols: frozen, versioned objects saved with every score.

A protocol fixes everything that changes a number: which samples, which landmarks in which order,
the alignment (none, rigid or similarity; reflections are never accepted), the ICP variant with its
iterations and tolerance, the crop, the distance direction and the aggregation. Its
:meth:`Protocol.to_dict` is written into every ``summary.json`` so a score can always be traced to
the exact parameters; :func:`get_protocol` returns a preset by name.

Presets:

- ``synthetic`` — corresponding topology: shape error by vertex index in the head frame (no
  alignment, as Ramon et al. 2019 evaluate on synthetic data), plus camera translation, rotation
  and reprojection errors when the submission has poses.
- ``synthetic-scan`` — the same ground truth treated as a scan: similarity from the 68 iBUG
  landmarks (Umeyama, no reflection), point-to-plane ICP with scale refinement, distance from every
  ground-truth vertex to the predicted surface. Tests the scan machinery with exact ground truth.
- ``micc-ramon2019``, ``facewarehouse-ramon2019`` (version 1.3), ``micc-95mm`` (version 1.2) —
  re-implementations of the papers' descriptions for real data, scored on files written by
  ``facebench datasets prepare micc|facewarehouse`` (per-sample scans of their own topology; see
  :mod:`facebench.datasets.scan_dataset`). Each parameter and its source (the paper's text, the
  authors' data README, or our choice) is in ``benchmark/<name>.md``.
- ``now``, ``now-metrical`` (version 1.1) — the NoW challenge's scan protocol (Sanyal et al. 2019,
  ``soubhiksanyal/now_evaluation``) on files written by ``facebench datasets prepare now``:
  NoW's seven landmarks, NoW's crop rule, similarity (metrical: rigid) over every cropped scan
  vertex, and NoW's pooled aggregation beside the per-sample statistics (``benchmark/now.md``).

**Versions.** A preset whose numbers change gets a new version; the old version stays scoreable
as ``name@version`` (:func:`get_protocol`, :data:`VERSIONS`). Version 1.1 of the four scan presets
above replaces 1.0's final open3d ICP step on the predicted vertices and vertex normals (off by
0.01–0.02 mm on an exact copy of a scan denser than the prediction) by exact point-to-plane steps on
the predicted triangles (``icp_final="exact"``), and stops a sample whose landmark fit is a
reflection or implausible after the landmark fit (``stop_implausible``; every version warns).
Version 1.2 of the two Table 3 presets (``micc-ramon2019``, ``facewarehouse-ramon2019``) scores
the face region only: the scan vertices within :data:`FACE_REGION_RADIUS_MM` of the scan's nose
tip (1.1 counted every scan vertex, hair, neck and back of the head included, at full distance,
which no face-only prediction can bring near the paper's 2.2–2.9 mm); 1.1 stays scoreable.
The next version of every scan preset (``synthetic-scan`` and ``micc-95mm`` 1.2, the Table 3
presets 1.3, ``now``/``now-metrical`` 1.1) replaces the exact final stage's point-to-plane steps,
which stall ~1e-6 short of convergence so that the score depends on ``icp_max_iterations``, by
Gauss-Newton on the exact point-to-surface distances with a line search (``icp_final="feature"``,
:func:`facebench.benchmark.align._refine_feature`): it converges to a minimum of
the squared distances (4–8 steps on smooth predictions); the previous versions stay scoreable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from facebench.errors import FacebenchError

#: Default |yaw| bins in degrees (docs/metrics.md): [0,15), [15,30), [30,45), [45,60), [60,90].
DEFAULT_YAW_BINS: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A versioned scoring protocol (all lengths in mm, angles in degrees).

    Attributes:
        name, version: identity of the protocol; change ``version`` whenever a parameter changes.
        description: one paragraph for people.
        reimplements: the paper/code this follows, or "" for facebench's own.
        dataset_kind: "synthetic", "micc" or "facewarehouse": which dataset files it accepts.
        topology: "corresponding" (prediction vertex n ↔ ground-truth vertex n) or "scan"
            (any predicted topology; landmarks + ICP alignment; surface distances).
        alignment: "none", "rigid" or "similarity" (from landmarks; never a reflection).
        landmarks: landmark set used for the initial alignment ("ibug68", or a named list).
        icp: "none", "point_to_plane" or "point_to_point".
        icp_scale: refine scale during ICP (similarity protocols).
        icp_max_iterations, icp_tolerance: ICP convergence (relative RMSE change).
        icp_max_correspondence_mm: correspondence distance cut-off during ICP; None: no cut-off.
        icp_max_points: ICP uses at most this many ground-truth points (fixed-seed subset); None: all.
        crop_center: "nose_tip" (iBUG 31 of the ground truth), "scan_nose_tip" (the scan vertex
            most frontal along the face's forward direction near the annotated nose base, see
            :func:`facebench.benchmark.crop.scan_nose_tip`) or None.
        crop_radius_mm: radius of the ground-truth crop sphere, None for no crop.
        crop_search_mm: for "scan_nose_tip", the search radius around the nose base (mm).
        distance_direction: "gt_to_pred" (each kept ground-truth vertex to the predicted surface),
            "pred_to_gt" or "symmetric".
        aggregation: "mean" (mean distance per sample, then mean over samples) or
            "rmse_mean_std" (RMSE per sample, then mean ± std over samples).
        pose_metrics: report camera translation/rotation and reprojection errors when given.
        yaw_bins: |yaw| bin edges for per-bin aggregates.
        bootstrap_resamples, bootstrap_seed: percentile bootstrap of each mean (95% CI).
        icp_final: last ICP stage, "feature" (Gauss-Newton on the exact point-to-surface distances
            with a line search, to convergence; the current scan presets), "exact" (point-to-plane
            steps on the selected triangle's normal; scan presets 1.1/1.2, now 1.0; the field's
            default, so that protocols written before "feature" keep their parameters) or "open3d"
            (version 1.0: a rigid open3d ICP on the predicted vertices with vertex normals); see
            :data:`facebench.benchmark.align.FINALS`.
        crop_rule: "now" (centre and radius from NoW's seven landmarks, NoW's rule; ``crop_center``
            and ``crop_radius_mm`` unused) or None.
        landmark_residual_limit: a landmark fit with an RMS residual above this fraction of the
            ground-truth landmarks' RMS radius is implausible (warned); None: not checked.
        stop_implausible: a sample whose landmark fit is a reflection or implausible stops after
            the landmark fit (measured there, no ICP) instead of grinding ICP.
    """

    name: str
    version: str
    description: str
    reimplements: str = ""
    dataset_kind: str = "synthetic"
    topology: str = "corresponding"
    alignment: str = "none"
    landmarks: str = "ibug68"
    icp: str = "none"
    icp_scale: bool = False
    icp_max_iterations: int = 50
    icp_tolerance: float = 1e-6
    icp_max_correspondence_mm: float | None = 10.0
    icp_max_points: int | None = 5000
    crop_center: str | None = None
    crop_radius_mm: float | None = None
    crop_search_mm: float = 30.0
    distance_direction: str = "gt_to_pred"
    aggregation: str = "mean"
    pose_metrics: bool = True
    yaw_bins: tuple[float, ...] = DEFAULT_YAW_BINS
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    icp_final: str = "exact"
    crop_rule: str | None = None
    landmark_residual_limit: float | None = 0.3
    stop_implausible: bool = True

    def __post_init__(self) -> None:
        allowed = {
            "topology": ("corresponding", "scan"),
            "alignment": ("none", "rigid", "similarity"),
            "icp": ("none", "point_to_plane", "point_to_point"),
            "distance_direction": ("gt_to_pred", "pred_to_gt", "symmetric"),
            "aggregation": ("mean", "rmse_mean_std", "now_pooled"),
            "dataset_kind": ("synthetic", "micc", "facewarehouse", "now"),
            "crop_center": (None, "nose_tip", "scan_nose_tip"),
            "icp_final": ("feature", "exact", "open3d"),
            "crop_rule": (None, "now"),
        }
        for field, values in allowed.items():
            if getattr(self, field) not in values:
                raise ValueError(f"protocol {self.name}: {field} must be one of {values}, got {getattr(self, field)!r}")
        if self.topology == "scan" and self.alignment == "none":
            raise ValueError(f"protocol {self.name}: a scan protocol needs an alignment")
        if list(self.yaw_bins) != sorted(self.yaw_bins) or len(self.yaw_bins) < 2:
            raise ValueError(f"protocol {self.name}: yaw_bins must be increasing edges")

    @property
    def id(self) -> str:
        """``name@version``, the key of leaderboard rows."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, JSON-serializable (stored in each summary.json)."""
        data = dataclasses.asdict(self)
        data["yaw_bins"] = list(self.yaw_bins)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown protocol fields: {sorted(unknown)}")
        data = dict(data)
        # written before these fields existed (version 1.0 presets): the behaviour of that time
        data.setdefault("icp_final", "open3d")
        data.setdefault("stop_implausible", False)
        if "yaw_bins" in data:
            data["yaw_bins"] = tuple(data["yaw_bins"])
        return cls(**data)


SYNTHETIC = Protocol(
    name="synthetic",
    version="1.0",
    description=(
        "Corresponding topology on facebench synthetic data: mean per-vertex Euclidean distance between "
        "predicted and ground-truth vertices in the head frame (no alignment), camera translation error "
        "(cm), rotation error (degrees) and reprojection error (pixels) when poses are submitted; errors "
        "binned by |yaw|."
    ),
    reimplements="Ramon et al. 2019, Sec. 5 (synthetic evaluation)",
)

#: ``synthetic-scan@1.1``: the exact final stage's point-to-plane steps (``icp_final="exact"``).
SYNTHETIC_SCAN_1_1 = Protocol(
    name="synthetic-scan",
    version="1.1",
    description=(
        "Synthetic ground truth treated as a scan: similarity from the 68 iBUG landmarks (Umeyama, "
        "reflections refused), point-to-plane ICP with scale refinement, then the distance from every "
        "ground-truth vertex to the predicted surface (closest point on triangles), mean per sample."
    ),
    topology="scan",
    alignment="similarity",
    icp="point_to_plane",
    icp_scale=True,
    icp_max_iterations=50,
    icp_tolerance=1e-5,
    icp_max_correspondence_mm=10.0,
    pose_metrics=False,
)

#: The final ICP stage of the current scan presets: Gauss-Newton on the exact point-to-surface
#: distances with a line search, to convergence (``benchmark/synthetic-scan.md``, "Versions").
_FEATURE_ICP = dict(icp_final="feature")

SYNTHETIC_SCAN = dataclasses.replace(SYNTHETIC_SCAN_1_1, version="1.2", **_FEATURE_ICP)

#: ICP settings shared by the real-data presets (our choices; see the cards in ``benchmark/``):
#: point-to-plane similarity steps on exact closest points of the predicted triangles until a step
#: moves the scan points by < 1e-5 of their RMS radius (at most 50 steps; version 1.0: until the
#: scale changed by < 1e-5, then a rigid open3d ICP with relative fitness/RMSE change 1e-5), pairs
#: farther than 10 mm ignored (scan regions the prediction does not cover: hair, neck, ears), at
#: most 5,000 scan points.
_REAL_ICP = dict(topology="scan", alignment="similarity", icp="point_to_plane", icp_scale=True,
                 icp_max_iterations=50, icp_tolerance=1e-5, icp_max_correspondence_mm=10.0, icp_max_points=5000,
                 distance_direction="gt_to_pred", pose_metrics=False)

#: ``micc-ramon2019@1.1``: no crop (every scan vertex counts); scoreable, no longer the default.
MICC_RAMON2019_1_1 = Protocol(
    name="micc-ramon2019",
    version="1.1",
    description=(
        "MICC Florence, Indoor-Cooperative video, the most frontal frame listed by Ramon et al.; similarity "
        "(Umeyama, no reflection) from the 4 annotated scan vertices (right/left eye lacrimal, nose base, lips "
        "central), point-to-plane ICP with scale, then the mean distance from every scan vertex to the predicted "
        "surface, mean over subjects (benchmark/micc-ramon2019.md)."
    ),
    reimplements="Ramon et al. 2019, Table 3 (MICC), as described in the paper and data/micc/README.md",
    dataset_kind="micc",
    landmarks="micc4",
    **_REAL_ICP,
)

#: ``facewarehouse-ramon2019@1.1``: no crop (every template vertex counts); scoreable, no longer the default.
FACEWAREHOUSE_RAMON2019_1_1 = Protocol(
    name="facewarehouse-ramon2019",
    version="1.1",
    description=(
        "FaceWarehouse neutral expression (pose_0), similarity (Umeyama, no reflection) from the 6 template "
        "vertices of Ramon et al., point-to-plane ICP with scale, mean distance from every template vertex to the "
        "predicted surface. FaceWarehouse units are not metric: the prepared file is put in mm by one "
        "dataset-wide factor (attribute mm_per_unit, recorded in each summary); the similarity absorbs any "
        "residual scale (benchmark/facewarehouse-ramon2019.md)."
    ),
    reimplements="Ramon et al. 2019, Table 3 (FaceWarehouse), as described in the paper and data/facewarehouse/README.md",
    dataset_kind="facewarehouse",
    landmarks="facewarehouse6",
    **_REAL_ICP,
)

#: The face region of the Table 3 presets from version 1.2 (``benchmark/micc-ramon2019.md``, "Face
#: region"): the scan vertices within this radius (mm) of the nose tip found on the scan
#: (:func:`facebench.benchmark.crop.scan_nose_tip`), the crop of the MICC evaluations of Tran et al.
#: 2017, Genova et al. 2018 and Deng et al. 2019 (``micc-95mm``).
FACE_REGION_RADIUS_MM = 95.0
_FACE_REGION = dict(crop_center="scan_nose_tip", crop_radius_mm=FACE_REGION_RADIUS_MM, crop_search_mm=30.0)

#: ``micc-ramon2019@1.2``: the face region, the exact final stage's point-to-plane steps.
MICC_RAMON2019_1_2 = dataclasses.replace(
    MICC_RAMON2019_1_1,
    version="1.2",
    description=(
        "MICC Florence, Indoor-Cooperative video, the most frontal frame listed by Ramon et al.; the face region: "
        "the scan vertices within 95 mm of the scan's nose tip (the most frontal scan vertex near the annotated "
        "nose base); similarity (Umeyama, no reflection) from the 4 annotated scan vertices (right/left eye "
        "lacrimal, nose base, lips central), point-to-plane ICP with scale, then the mean distance from every kept "
        "scan vertex to the predicted surface, mean over subjects (benchmark/micc-ramon2019.md)."
    ),
    **_FACE_REGION,
)

#: ``facewarehouse-ramon2019@1.2``: the face region, the exact final stage's point-to-plane steps.
FACEWAREHOUSE_RAMON2019_1_2 = dataclasses.replace(
    FACEWAREHOUSE_RAMON2019_1_1,
    version="1.2",
    description=(
        "FaceWarehouse neutral expression (pose_0); the face region: the template vertices within 95 mm (after the "
        "dataset-wide mm factor, attribute mm_per_unit) of the template's nose tip (the most frontal vertex near "
        "the nose-base landmark); similarity (Umeyama, no reflection) from the 6 template vertices of Ramon et "
        "al., point-to-plane ICP with scale, mean distance from every kept template vertex to the predicted "
        "surface, mean over testers (benchmark/facewarehouse-ramon2019.md)."
    ),
    **_FACE_REGION,
)

MICC_RAMON2019 = dataclasses.replace(MICC_RAMON2019_1_2, version="1.3", **_FEATURE_ICP)
FACEWAREHOUSE_RAMON2019 = dataclasses.replace(FACEWAREHOUSE_RAMON2019_1_2, version="1.3", **_FEATURE_ICP)

#: ``micc-95mm@1.1``: the exact final stage's point-to-plane steps.
MICC_95MM_1_1 = Protocol(
    name="micc-95mm",
    version="1.1",
    description=(
        "MICC Florence, the common variant: crop the scan to a 95 mm sphere around its nose tip (the most frontal "
        "scan vertex near the annotated nose base), similarity from the 4 annotated vertices, point-to-plane ICP, "
        "per-subject RMSE of the scan-to-prediction distances, then mean ± std over subjects, as Deep3DFaceRecon's "
        "authors describe it (benchmark/micc-95mm.md)."
    ),
    reimplements="Deng et al. 2019 (Deep3DFaceRecon) evaluation on MICC, as described",
    dataset_kind="micc",
    landmarks="micc4",
    crop_center="scan_nose_tip",
    crop_radius_mm=95.0,
    crop_search_mm=30.0,
    aggregation="rmse_mean_std",
    **_REAL_ICP,
)
MICC_95MM = dataclasses.replace(MICC_95MM_1_1, version="1.2", **_FEATURE_ICP)

#: NoW's seven landmarks (``now7``), its crop, every cropped scan vertex in the ICP (no subset, no
#: correspondence cut-off), exact scan-vertex -> predicted-surface distances (benchmark/now.md).
_NOW = dict(dataset_kind="now", topology="scan", landmarks="now7", icp="point_to_plane", icp_max_iterations=50,
            icp_tolerance=1e-6, icp_max_correspondence_mm=None, icp_max_points=None, crop_rule="now",
            distance_direction="gt_to_pred", aggregation="now_pooled", pose_metrics=False)

#: ``now@1.0``: the exact final stage's point-to-plane steps.
NOW_1_0 = Protocol(
    name="now",
    version="1.0",
    description=(
        "NoW challenge (non-metrical): crop the scan to NoW's sphere (centre 0.3 of the way from the subnasale to the "
        "inner-eye-corner midpoint, radius 1.4 x the mean of the outer-eye-corner distance and the nose length), "
        "similarity from NoW's seven landmarks (never a reflection), point-to-plane similarity ICP on every cropped "
        "scan vertex, exact scan-vertex to predicted-surface distances; NoW's pooled median/mean/std of all distances "
        "beside per-sample statistics (benchmark/now.md)."
    ),
    reimplements="Sanyal et al. 2019 (RingNet), the NoW evaluation as in soubhiksanyal/now_evaluation",
    alignment="similarity",
    icp_scale=True,
    **_NOW,
)

#: ``now-metrical@1.0``: the exact final stage's point-to-plane steps.
NOW_METRICAL_1_0 = Protocol(
    name="now-metrical",
    version="1.0",
    description=(
        "NoW challenge, metrical variant: as 'now' but rigid (the prediction's millimetres are kept: landmark fit and "
        "ICP without scale), as NoW's metrical evaluation (benchmark/now.md)."
    ),
    reimplements="Sanyal et al. 2019 / MICA (Zielonka et al. 2022), NoW metrical evaluation as in "
                 "soubhiksanyal/now_evaluation",
    alignment="rigid",
    icp_scale=False,
    **_NOW,
)
NOW = dataclasses.replace(NOW_1_0, version="1.1", **_FEATURE_ICP)
NOW_METRICAL = dataclasses.replace(NOW_METRICAL_1_0, version="1.1", **_FEATURE_ICP)

#: The scan presets' version 1.1 (the base of their version 1.0).
_SCAN_1_1 = (SYNTHETIC_SCAN_1_1, MICC_RAMON2019_1_1, FACEWAREHOUSE_RAMON2019_1_1, MICC_95MM_1_1)

PRESETS: dict[str, Protocol] = {
    p.name: p for p in (SYNTHETIC, SYNTHETIC_SCAN, MICC_RAMON2019, FACEWAREHOUSE_RAMON2019, MICC_95MM, NOW,
                        NOW_METRICAL)
}
#: Every scoreable version, ``{"name@version": protocol}``: the current presets, the scan presets
#: of the exact final stage's point-to-plane steps (1.1, the Table 3 presets' 1.2, now 1.0), and the
#: scan presets' version 1.0 (1.1 with the final open3d ICP step on vertex normals and no early stop).
VERSIONS: dict[str, Protocol] = {
    **{p.id: p for p in PRESETS.values()},
    **{p.id: p for p in (*_SCAN_1_1, MICC_RAMON2019_1_2, FACEWAREHOUSE_RAMON2019_1_2, NOW_1_0, NOW_METRICAL_1_0)},
    **{f"{p.name}@1.0": dataclasses.replace(p, version="1.0", icp_final="open3d", stop_implausible=False)
       for p in _SCAN_1_1},
}


def get_protocol(name: str) -> Protocol:
    """The preset protocol called ``name`` (its current version, :data:`PRESETS`) or ``name@version``
    (any scoreable version, :data:`VERSIONS`)."""
    if "@" in name:
        try:
            return VERSIONS[name]
        except KeyError:
            raise FacebenchError(f"unknown protocol version {name!r}; known: {', '.join(VERSIONS)}") from None
    try:
        return PRESETS[name]
    except KeyError:
        raise FacebenchError(f"unknown protocol {name!r}; known: {', '.join(PRESETS)}") from None
