"""FaceWarehouse -> a facebench scan dataset (``facebench datasets prepare facewarehouse``).

Expected layout (as distributed)::

    ROOT/Tester_1/TrainingPose/pose_0.png    the neutral photo (pose 0 is the neutral expression)
    ROOT/Tester_1/TrainingPose/pose_0.land   2D landmarks: a count line, then "x y" per line,
                                             normalised to [0, 1], origin at the bottom-left
    ROOT/Tester_1/TrainingPose/pose_0.obj    the registered template mesh (quads; same topology
                                             for every tester)

Per tester: the mesh (quads fan-triangulated, winding kept), scaled to mm by one dataset-wide
factor; the 6 template vertices of Ramon et al. (``vertex_identifiers.txt``, 0-based, checked
against each mesh); the photo cropped to a square around the 2D landmarks and resized to
``image_size``; the 2D landmarks in crop pixels (``landmarks_2d``).

Conventions decided here:

- ``.land`` -> pixels (pixel-centre convention): ``u = x * W - 0.5``, ``v = (1 - y) * H - 0.5``
  (normalised coordinates span the image's outer edges; y flipped because the origin is at the
  bottom-left).
- Face box: the landmarks' bounding box, made square around its centre with side
  :data:`FACE_BOX_SCALE` × its larger side (parts outside the photo are black).
- **Units**: FaceWarehouse meshes are not metric. ``mm_per_unit="auto"`` picks the factor that makes
  the mean right-left ear tragus distance (template vertices 4876, 7755) over the prepared testers
  equal :data:`TRAGION_WIDTH_MM` = 145 mm, an approximate adult tragion-tragion (bitragion) width;
  ``mm_per_unit=<float>`` overrides it. The factor is stored in the file (``mm_per_unit``). The
  Ramon protocol aligns with a similarity (scale included), so the factor only sets the unit of the
  reported errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facebench.datasets.annotations import (
    ANNOTATIONS_BASE_URL,
    ANNOTATIONS_COMMIT,
    ANNOTATIONS_REPOSITORY,
    PrepareReport,
    load_facewarehouse_annotations,
)
from facebench.datasets.micc import landmark_geometry
from facebench.datasets.video import crop_and_resize, read_image, to_crop_pixels
from facebench.errors import FacebenchError, InputFileError
from facebench.landmarks import SCAN_LANDMARK_SETS

__all__ = ["TRAGION_WIDTH_MM", "FACE_BOX_SCALE", "prepare_facewarehouse", "read_land", "land_to_pixels",
           "face_box_from_landmarks", "tester_folders"]

#: Approximate adult tragion-tragion width, mm (the reference of ``mm_per_unit="auto"``).
TRAGION_WIDTH_MM = 145.0
#: Side of the square face box relative to the landmarks' bounding box.
FACE_BOX_SCALE = 1.4
POSE = "pose_0"

Progress = Callable[[int, int, str], None]


def tester_folders(root: Path) -> dict[int, Path]:
    """``{k: ROOT/Tester_k}`` for every tester folder, by integer."""
    found = {}
    for path in root.iterdir():
        name = path.name
        if path.is_dir() and name.lower().startswith("tester_") and name[7:].isdigit():
            found.setdefault(int(name[7:]), path)
    return dict(sorted(found.items()))


def read_land(path: str | Path) -> np.ndarray:
    """Read a FaceWarehouse ``.land`` file: ``(n,2)`` normalised ``(x, y)``, origin bottom-left.

    Raises:
        InputFileError: missing file, a bad count line, a count that does not match the lines,
            non-numeric or non-finite values.
    """
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except FileNotFoundError:
        raise InputFileError(path, "no such landmark file") from None
    except OSError as error:
        raise InputFileError(path, f"cannot read ({error.strerror or error})") from None
    lines = [line for line in lines if line]
    if not lines or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise InputFileError(path, "first line must be the landmark count")
    count = int(lines[0][0])
    rows = lines[1:]
    if len(rows) != count:
        raise InputFileError(path, f"count line says {count} landmarks, the file has {len(rows)}")
    if any(len(row) != 2 for row in rows):
        raise InputFileError(path, "each landmark line must be 'x y'")
    try:
        xy = np.array(rows, dtype=np.float64)
    except ValueError:
        raise InputFileError(path, "non-numeric landmark coordinates") from None
    if not np.isfinite(xy).all() or count == 0:
        raise InputFileError(path, "landmark coordinates must be finite (and at least one)")
    return xy.reshape(count, 2)


def land_to_pixels(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised bottom-left ``(x, y)`` -> pixel-centre image coordinates ``(u, v)``, y down."""
    xy = np.asarray(xy, np.float64)
    return np.stack([xy[:, 0] * width - 0.5, (1.0 - xy[:, 1]) * height - 0.5], axis=1)


def face_box_from_landmarks(points: np.ndarray, scale: float = FACE_BOX_SCALE) -> np.ndarray:
    """Square box ``(x0, y0, x1, y1)`` centred on the points' bounding box, side ``scale`` × its larger side."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = (lo + hi) / 2.0
    half = max(float((hi - lo).max()), 1.0) * scale / 2.0
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def _load_tester(folder: Path, root: Path, indices: np.ndarray, image_size: int) -> dict:
    from facebench.meshio import read_obj

    pose = folder / "TrainingPose"
    if not pose.is_dir():
        raise InputFileError(pose, "no TrainingPose folder")
    mesh = read_obj(pose / f"{POSE}.obj", texcoords=False)
    bad = indices[indices >= mesh.n_vertices]
    if bad.size:
        raise InputFileError(pose / f"{POSE}.obj", f"annotation vertex id {int(bad[0])} is outside the mesh "
                                                  f"({mesh.n_vertices} vertices)")
    photo = read_image(pose / f"{POSE}.png")
    h, w = photo.shape[:2]
    points = land_to_pixels(read_land(pose / f"{POSE}.land"), h, w)
    box = face_box_from_landmarks(points)
    return {"vertices": mesh.vertices, "faces": mesh.faces, "image": crop_and_resize(photo, box, image_size),
            "box": box, "frame_size": (h, w), "landmarks_2d": to_crop_pixels(points, box, image_size),
            "source": str((pose / f"{POSE}.obj").relative_to(root))}


def _mm_per_unit(mm_per_unit, loaded: dict[str, dict], indices: np.ndarray, report: PrepareReport) -> float:
    widths = [float(np.linalg.norm(item["vertices"][indices[5]] - item["vertices"][indices[4]]))
              for item in loaded.values()]
    widths = [w for w in widths if np.isfinite(w) and w > 0]
    if mm_per_unit not in ("auto", None):
        factor = float(mm_per_unit)
        if not np.isfinite(factor) or factor <= 0:
            raise FacebenchError(f"mm_per_unit must be a positive number, got {mm_per_unit!r}")
        report.mm_per_unit = factor
        return factor
    mean_width = float(np.mean(widths)) if widths else float("nan")
    if not np.isfinite(mean_width) or mean_width <= 0:
        raise FacebenchError("mm_per_unit='auto': the ear tragus vertices coincide: give --mm-per-unit")
    factor = TRAGION_WIDTH_MM / mean_width
    report.mm_per_unit = factor
    report.warnings.append(f"units: mm_per_unit = {factor:.6g} (auto: mean tragus distance {mean_width:.6g} "
                           f"units over {len(widths)} testers set to {TRAGION_WIDTH_MM:g} mm)")
    return factor


def prepare_facewarehouse(root: str | Path, out: str | Path, *, annotations: str | Path | None = None,
                          image_size: int = 256, mm_per_unit="auto", testers=None, overwrite: bool = False,
                          progress: Progress | None = None,
                          annotations_url: str = ANNOTATIONS_BASE_URL) -> PrepareReport:
    """Prepare FaceWarehouse's neutral poses as a scan dataset file ``out`` (see the module doc).

    Args:
        root: the folder holding ``Tester_k/``.
        out: the ``.h5`` to write (atomically; nothing is written when no tester is usable).
        annotations: a local copy of the annotations (``data/`` or the repository root); None
            fetches the pinned files into the cache.
        image_size: side of the stored crops, pixels.
        mm_per_unit: "auto" or a positive factor (see the module doc).
        testers: optional iterable of tester numbers to prepare.
        overwrite: replace an existing ``out``.
        progress: optional ``callback(done, total, tester_id)``.

    Returns:
        :class:`facebench.datasets.annotations.PrepareReport` (``written`` False when none was usable).
    """
    start = time.perf_counter()
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise InputFileError(root, "FaceWarehouse root folder not found")
    if out.exists() and not overwrite:
        raise InputFileError(out, "exists already (use --overwrite to replace it)")
    if mm_per_unit not in ("auto", None):
        try:
            mm_per_unit = float(mm_per_unit)
        except (TypeError, ValueError):
            raise FacebenchError(f"mm_per_unit must be 'auto' or a number, got {mm_per_unit!r}") from None
    ann = load_facewarehouse_annotations(annotations, base_url=annotations_url)
    indices = np.asarray(ann.indices, np.int64)
    report = PrepareReport("facewarehouse", str(out), warnings=list(ann.warnings))
    report.annotations = {"repository": ANNOTATIONS_REPOSITORY, "commit": ANNOTATIONS_COMMIT,
                          "source": str(annotations) if annotations is not None else annotations_url,
                          "sha256": ann.files, "vertex_ids": dict(zip(ann.names, ann.indices))}
    folders = tester_folders(root)
    wanted = sorted(folders)
    if testers is not None:
        chosen = sorted({int(t) for t in testers})
        for t in chosen:
            if t not in folders:
                report.skip(f"Tester_{t}", f"missing tester folder: no {root}/Tester_{t}")
        wanted = [t for t in chosen if t in folders]
    if not folders:
        report.problems.append(f"{root}: no Tester_k folder")
    loaded: dict[str, dict] = {}
    for done, number in enumerate(wanted):
        tid = folders[number].name
        if progress is not None:
            progress(done, len(wanted), tid)
        item = report.load(tid, _load_tester, folders[number], root, indices, image_size)
        if item is not None:
            loaded[tid] = item
    if progress is not None:
        progress(len(wanted), len(wanted), "")
    _drop_odd_landmark_counts(loaded, report)
    if loaded:
        factor = _mm_per_unit(mm_per_unit, loaded, indices, report)
        _check_geometry(loaded, indices, factor, report)
        _write(out, loaded, indices, factor, image_size, report, overwrite,
               {"image_size": image_size, "mm_per_unit": mm_per_unit if mm_per_unit is not None else "auto"})
    return report.finish(start)


def _drop_odd_landmark_counts(loaded: dict[str, dict], report: PrepareReport) -> None:
    """All samples share one 2D landmark count (the most common one); others are skipped."""
    counts = [len(item["landmarks_2d"]) for item in loaded.values()]
    if not counts:
        return
    values, freq = np.unique(counts, return_counts=True)
    common = int(values[np.argmax(freq)])
    for tid in [t for t, item in loaded.items() if len(item["landmarks_2d"]) != common]:
        report.skip(tid, f"{loaded[tid]['source'][:-4]}.land has {len(loaded[tid]['landmarks_2d'])} landmarks, "
                         f"the other testers {common}")
        del loaded[tid]


def _check_geometry(loaded: dict[str, dict], indices: np.ndarray, factor: float, report: PrepareReport) -> None:
    """Record how plausible the 6 template vertices are (0-based and, for comparison, 1-based)."""
    passes = {0: 0, 1: 0}
    for item in loaded.values():
        vertices = item["vertices"] * factor
        for base in (0, 1):
            idx = indices - base
            if (idx >= 0).all() and landmark_geometry(vertices, idx)["passes"]:
                passes[base] += 1
    report.index_base = {"base": 0, "mode": "given (template ids are 0-based)",
                         "geometry_passes": {str(b): passes[b] for b in (0, 1)}, "subjects": len(loaded)}
    if passes[1] > passes[0]:
        report.warnings.append(f"index base: the template ids look 1-based ({passes[1]} vs {passes[0]} testers pass "
                               "the geometry check): check vertex_identifiers.txt")


def _write(out: Path, loaded: dict[str, dict], indices: np.ndarray, factor: float, image_size: int,
           report: PrepareReport, overwrite: bool, settings: dict) -> None:
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample, write_samples

    n2d = len(next(iter(loaded.values()))["landmarks_2d"])
    writer = ScanDatasetWriter(out, kind="facewarehouse", landmark_names=list(SCAN_LANDMARK_SETS["facewarehouse6"]),
                               image_size=image_size, landmark_set="facewarehouse6", mm_per_unit=factor,
                               shared_landmark_indices=indices, n_landmarks_2d=n2d,
                               attrs={"mm_per_unit_reference": f"mean tragion-tragion width {TRAGION_WIDTH_MM:g} mm"
                                      if settings["mm_per_unit"] == "auto" else "given"},
                               overwrite=overwrite)
    samples = (ScanSample(id=tid, image=item["image"], face_box=item["box"], frame_size=item["frame_size"],
                          vertices=item["vertices"] * factor, faces=item["faces"], landmark_indices=indices,
                          source=item["source"], frame_index=-1, landmarks_2d=item["landmarks_2d"])
               for tid, item in loaded.items())
    write_samples(writer, samples, report, settings)
