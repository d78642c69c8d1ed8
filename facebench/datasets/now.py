"""The NoW benchmark's layout -> a facebench scan dataset, and NoW-style predictions -> a submission.

NoW (Sanyal et al. 2019, https://ringnet.is.tue.mpg.de) is licensed: facebench ships none of it and
reads it where the user keeps it. Expected layout (as NoW distributes it; ``ROOT`` is the folder
holding the image lists)::

    ROOT/imagepathsvalidation.txt          one image per line, ``.../<subject>/<challenge>/<image>.jpg``
    ROOT/imagepathstest.txt                (the last three path parts are used, as NoW's evaluator does)
    ROOT/scans/<subject>/<name>.obj        the subject's scan, mm (exactly one .obj per subject)
    ROOT/scans_lmks_onlypp/<subject>/<name>.pp   its seven landmarks (MeshLab PickedPoints XML)
    ROOT/iphone_pictures/<subject>/<challenge>/<image>.jpg   optional: the photographs

One sample per listed image, id ``<subject>__<challenge>__<image stem>``; the images of a subject
share its scan (``scan_key = <subject>``, written once). The ``.pp`` points are taken in file order
(NoW's ``load_pp`` reads the first seven ``point`` entries) in NoW's order: right eye outer corner,
right eye inner corner, left eye inner corner, left eye outer corner, subnasale, right mouth
corner, left mouth corner (``now7``). They are free points on the scan, not vertices. The stored
image is the central square of the photograph resized to ``image_size`` (no face detector), or
black with a warning when the photograph is absent (scoring never reads images). NoW withholds the
test scans: ``--split test`` works only where the user has them.

Predictions in NoW's layout become a facebench submission with
:func:`facebench.benchmark.now_submission.now_submission`.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facebench.datasets.annotations import PrepareReport
from facebench.errors import FacebenchError, InputFileError
from facebench.landmarks import SCAN_LANDMARK_SETS

__all__ = ["IMAGE_LISTS", "read_pp", "read_image_list", "sample_id", "prepare_now"]

#: Image list of each split, in ROOT.
IMAGE_LISTS = {"val": "imagepathsvalidation.txt", "test": "imagepathstest.txt"}
#: Largest ``.pp`` file read (a few hundred bytes in NoW).
MAX_PP_BYTES = 1 << 20
NOW7 = list(SCAN_LANDMARK_SETS["now7"])

Progress = Callable[[int, int, str], None]


def read_pp(path: str | Path) -> np.ndarray:
    """The first seven ``<point x= y= z=>`` entries of a MeshLab ``.pp`` file, ``(7, 3)`` float64 mm."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) > MAX_PP_BYTES:
        raise InputFileError(path, f"is {len(data)} bytes; a landmark file is at most {MAX_PP_BYTES}")
    if b"<!ENTITY" in data:  # MeshLab writes a bare <!DOCTYPE PickedPoints>; entities are never needed
        raise InputFileError(path, "declares XML entities; refused")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise InputFileError(path, f"is not a MeshLab PickedPoints XML file ({error})") from None
    points = []
    for point in root.iter("point"):
        try:
            points.append([float(point.attrib[k]) for k in ("x", "y", "z")])
        except (KeyError, ValueError):
            raise InputFileError(path, f"point {len(points) + 1} lacks a numeric x, y or z") from None
    if len(points) < 7:
        raise InputFileError(path, f"has {len(points)} points; NoW's landmark files have 7")
    lm = np.array(points[:7], np.float64)
    if not np.isfinite(lm).all():
        raise InputFileError(path, "has a NaN or infinite coordinate")
    return lm


def read_image_list(path: str | Path) -> list[tuple[str, str, str]]:
    """``(subject, challenge, image file)`` of each non-empty line of a NoW image list."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "image list not found")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace("\\", "/").split("/")
        if len(parts) < 3 or not all(parts[-3:]) or any(p in (".", "..") for p in parts[-3:]):
            raise InputFileError(path, f"line {number}: expected .../<subject>/<challenge>/<image>, got {line!r}")
        entries.append((parts[-3], parts[-2], parts[-1]))
    if not entries:
        raise InputFileError(path, "lists no image")
    return entries


def sample_id(subject: str, challenge: str, image: str) -> str:
    """``<subject>__<challenge>__<image stem>``: a flat id (folder submissions name files ``<id>.obj``)."""
    return f"{subject}__{challenge}__{Path(image).stem}"


def _one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(found) != 1:
        raise FacebenchError(f"{folder}: expected exactly one {what} ({pattern}), found {len(found)}")
    return found[0]


def _image(root: Path, subject: str, challenge: str, image: str, size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    from facebench.datasets.video import central_square_box, crop_and_resize, read_image

    path = root / "iphone_pictures" / subject / challenge / image
    if not path.is_file():
        return np.zeros((size, size, 3), np.uint8), np.zeros(4), (0, 0)
    frame = read_image(path)
    box = central_square_box(*frame.shape[:2])
    return crop_and_resize(frame, box, size), box, frame.shape[:2]


def prepare_now(*, root: str | Path, out: str | Path, split: str = "val", image_size: int = 256,
                overwrite: bool = False, progress: Progress | None = None) -> PrepareReport:
    """Write the NoW images of ``split`` with their subjects' scans and landmarks to ``out`` (a
    facebench scan dataset, ``dataset_kind = "now"``, landmark set ``now7``). A subject whose scan
    or landmark file is missing or unreadable is skipped with its reason (every image of it)."""
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample, write_samples
    from facebench.meshio import read_mesh

    root, out = Path(root), Path(out)
    if split not in IMAGE_LISTS:
        raise FacebenchError(f"unknown NoW split {split!r}; expected one of {', '.join(IMAGE_LISTS)}")
    if not root.is_dir():
        raise InputFileError(root, "NoW folder not found")
    entries = read_image_list(root / IMAGE_LISTS[split])
    report = PrepareReport(dataset="now", out=str(out))
    start = time.perf_counter()
    scans: dict[str, tuple | str] = {}
    missing_images = []

    def samples():
        for number, (subject, challenge, image) in enumerate(entries, 1):
            sid = sample_id(subject, challenge, image)
            if progress is not None:
                progress(number, len(entries), sid)
            if subject not in scans:
                try:
                    scan_path = _one(root / "scans" / subject, "*.obj", "scan")
                    pp_path = _one(root / "scans_lmks_onlypp" / subject, "*.pp", "landmark file")
                    mesh = read_mesh(scan_path)
                    scans[subject] = (mesh.vertices, mesh.faces, read_pp(pp_path),
                                      scan_path.relative_to(root).as_posix())
                except FacebenchError as error:
                    scans[subject] = str(error)
            scan = scans[subject]
            if isinstance(scan, str):
                report.skip(sid, scan)
                continue
            crop, box, frame_size = _image(root, subject, challenge, image, image_size)
            if not box.any():
                missing_images.append(sid)
            yield ScanSample(id=sid, image=crop, face_box=box, frame_size=frame_size, vertices=scan[0],
                             faces=scan[1], landmark_indices=np.full(7, -1), source=scan[3], landmarks=scan[2],
                             scan_key=subject)

    writer = ScanDatasetWriter(out, kind="now", landmark_names=NOW7, image_size=image_size, landmark_set="now7",
                               overwrite=overwrite)
    settings = {"root": str(root), "split": split, "image_list": IMAGE_LISTS[split], "image_size": image_size}
    write_samples(writer, samples(), report, settings)
    if missing_images:
        report.warnings.append(f"{len(missing_images)} photograph(s) not found under iphone_pictures/ (stored "
                               f"black; scoring does not read images), e.g. {missing_images[0]}")
    total = time.perf_counter() - start
    report.timings = {"total": total, "per_subject": total / max(len(scans), 1)}
    return report
