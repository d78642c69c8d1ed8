"""MICC Florence 2D/3D faces -> a facebench scan dataset (``facebench datasets prepare micc``).

Expected layout (the dataset as distributed; subject folders zero-padded or not)::

    ROOT/subject_01/Model/frontal1/obj/<name>.obj      (and/or .../frontal1/vrml/<name>.wrl,
    ROOT/subject_01/Model/frontal2/...                   or the .wrl/.obj directly in frontal1/)
    ROOT/subject_01/Video/Indoor-Cooperative.mjpg      (or .mjpeg, .mpg, ..., or a folder
                                                         Video/Indoor-Cooperative/ of frame%04d.jpg)

Per annotated subject (Ramon et al.'s annotations, :mod:`facebench.datasets.annotations`):
the scan (a ``.wrl`` is preferred over an ``.obj`` when both exist; exactly one file of the chosen
kind is expected), in mm as MICC gives it; the authors' frame (``frameK.jpg`` -> 0-based index
``K - 1``) of the video; a square crop of it resized to ``image_size`` (``face_boxes`` ``{id:
[x0, y0, x1, y1]}`` in frame pixels when given, else the central square of the frame: no face
detector is used); the 4 annotated scan vertices (``micc4``).

**Index base** (are the annotated indices 0- or 1-based?): with ``index_base="auto"`` each subject
gives evidence for both bases: (a) range: an index equal to the vertex count V proves 1-based, an
index 0 proves 0-based; (b) geometry: for a base to pass, the nose base must be the most frontal of
the four points (in front of the plane through the two lacrimal points and the lips point, the
plane's normal oriented away from the scan's centroid, by at least 1 mm) and the two lacrimal
points must be 20-45 mm apart. Range proofs decide when they agree; otherwise the base that passes
the geometry on more subjects wins; a tie falls back to 0 (the authors' code is Python). The
evidence and the decision are recorded in the report and the file's ``preparation`` attribute, and
weak or contradictory evidence gives a warning. A subject whose index is outside its scan under the
chosen base is skipped.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facebench.datasets.annotations import (
    ANNOTATIONS_BASE_URL,
    ANNOTATIONS_COMMIT,
    ANNOTATIONS_REPOSITORY,
    PrepareReport,
    load_micc_annotations,
)
from facebench.datasets.video import (
    FFMPEG_SUFFIXES,
    MJPEG_SUFFIXES,
    central_square_box,
    crop_and_resize,
    read_frame,
)
from facebench.errors import FacebenchError, InputFileError
from facebench.landmarks import SCAN_LANDMARK_SETS

__all__ = ["SCANS", "prepare_micc", "subject_folders", "find_scan", "find_video", "read_scan_mesh", "landmark_geometry",
           "index_evidence", "decide_index_base", "load_face_boxes"]

#: Scan folders of a MICC subject (``Model/<scan>``).
SCANS = ("frontal1", "frontal2", "sidel", "sider")
#: Geometry check thresholds (see the module doc).
LACRIMAL_RANGE_MM = (20.0, 45.0)
NOSE_AHEAD_MIN_MM = 1.0
_SUBJECT = re.compile(r"subject_0*(\d+)$", re.IGNORECASE)

Progress = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------ files
def subject_folders(root: Path) -> dict[int, Path]:
    """``{subject number: folder}`` of ``ROOT/subject_NN`` folders (matched by integer)."""
    found: dict[int, Path] = {}
    for path in sorted(root.iterdir()):
        m = _SUBJECT.match(path.name)
        if m and path.is_dir():
            found.setdefault(int(m.group(1)), path)
    return found


def find_scan(subject_dir: Path, scan: str = "frontal1") -> Path:
    """The scan file of ``subject_dir/Model/<scan>`` (``vrml/*.wrl``, ``obj/*.obj`` or directly inside)."""
    folder = subject_dir / "Model" / scan
    if not folder.is_dir():
        raise InputFileError(folder, "no scan folder")
    for suffix, sub in ((".wrl", "vrml"), (".obj", "obj")):
        files = sorted(p for p in [*(folder / sub).glob("*"), *folder.glob("*")]
                       if p.is_file() and p.suffix.lower() == suffix)
        if len(files) > 1:
            raise InputFileError(folder, f"several {suffix} scans ({', '.join(p.name for p in files)}): "
                                         "keep one")
        if files:
            return files[0]
    raise InputFileError(folder, "no scan (.wrl or .obj) found")


def find_video(subject_dir: Path, video: str = "Indoor-Cooperative") -> Path:
    """``subject_dir/Video/<video>.<mjpg|mjpeg|mpg|...>`` or the frame folder ``Video/<video>/``."""
    folder = subject_dir / "Video"
    for suffix in MJPEG_SUFFIXES + FFMPEG_SUFFIXES:
        for candidate in (folder / f"{video}{suffix}", folder / f"{video}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    if (folder / video).is_dir():
        return folder / video
    raise InputFileError(folder, f"no {video} video ({'/'.join(s[1:] for s in MJPEG_SUFFIXES + FFMPEG_SUFFIXES)}) "
                                 "or frame folder")


def read_scan_mesh(path: Path):
    """Read a ``.wrl`` (:func:`facebench.meshio_vrml.read_vrml`) or ``.obj``/``.ply`` scan."""
    from facebench.meshio import read_mesh

    return read_mesh(path)


def load_face_boxes(path: str | Path | None) -> dict[str, np.ndarray]:
    """``{key: box}`` from a JSON ``{id: [x0, y0, x1, y1]}`` file (keys as written)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "face-box file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(path, f"not valid JSON ({error})") from None
    if not isinstance(table, dict):
        raise InputFileError(path, "expected a JSON object {id: [x0, y0, x1, y1]}")
    boxes = {}
    for key, value in table.items():
        box = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.zeros(0)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise InputFileError(path, f"{key}: expected [x0, y0, x1, y1] with x1 > x0, y1 > y0, got {value!r}")
        boxes[str(key)] = box
    return boxes


def _box_for(boxes: dict[str, np.ndarray], subject: int) -> np.ndarray | None:
    for key, box in boxes.items():
        m = re.fullmatch(r"(?:subject_)?0*(\d+)", key)
        if m and int(m.group(1)) == subject:
            return box
    return None


# ------------------------------------------------------------------------------ index base
def landmark_geometry(vertices: np.ndarray, indices) -> dict:
    """Plausibility of 4+ landmarks ``(right lacrimal, left lacrimal, nose base, lips central, ...)``.

    Returns:
        ``{"lacrimal_mm", "nose_ahead_mm", "passes"}``: the lacrimal distance (mm), how far the nose
        base lies in front of the plane through the two lacrimal points and the lips point (its
        normal oriented away from the scan's centroid), and whether both are plausible.
    """
    p = np.asarray(vertices, np.float64)[np.asarray(indices[:4])]
    lacrimal = float(np.linalg.norm(p[1] - p[0]))
    normal = np.cross(p[1] - p[0], p[3] - p[0])
    norm = np.linalg.norm(normal)
    if norm < 1e-9:
        return {"lacrimal_mm": lacrimal, "nose_ahead_mm": float("nan"), "passes": False}
    normal /= norm
    centroid = np.asarray(vertices, np.float64).mean(axis=0)
    if normal @ (p[[0, 1, 3]].mean(axis=0) - centroid) < 0:
        normal = -normal
    ahead = float((p[2] - p[0]) @ normal)
    passes = LACRIMAL_RANGE_MM[0] <= lacrimal <= LACRIMAL_RANGE_MM[1] and ahead >= NOSE_AHEAD_MIN_MM
    return {"lacrimal_mm": round(lacrimal, 3), "nose_ahead_mm": round(ahead, 3), "passes": bool(passes)}


def index_evidence(vertices: np.ndarray, raw_indices) -> dict:
    """Evidence about the base of ``raw_indices`` on one scan (see the module doc).

    Returns:
        ``{"n_vertices", "range": "1-based"|"0-based"|None, "geometry": {"0": {...}|None, "1": ...}}``
        (geometry None when that base puts an index outside the scan).
    """
    raw = np.asarray(raw_indices, np.int64)
    n = len(vertices)
    proof = "1-based" if (raw == n).any() else "0-based" if (raw == 0).any() else None
    geometry = {}
    for base in (0, 1):
        idx = raw - base
        inside = (idx >= 0).all() and (idx < n).all()
        geometry[str(base)] = landmark_geometry(vertices, idx) if inside else None
    return {"n_vertices": int(n), "range": proof, "geometry": geometry}


def decide_index_base(evidence: dict[str, dict], prior: int = 0) -> tuple[int, dict, list[str]]:
    """Choose the base from per-subject :func:`index_evidence`; return ``(base, summary, warnings)``."""
    proofs = {b: sorted(s for s, e in evidence.items() if e["range"] == f"{b}-based") for b in (0, 1)}
    passes = {b: sorted(s for s, e in evidence.items() if (e["geometry"][str(b)] or {}).get("passes"))
              for b in (0, 1)}
    n = len(evidence)
    warnings: list[str] = []
    summary = {"subjects": n, "range_proofs": {str(b): proofs[b] for b in (0, 1)},
               "geometry_passes": {str(b): len(passes[b]) for b in (0, 1)}}
    if n == 0:
        return prior, {**summary, "rule": "no evidence: prior"}, []
    if proofs[0] and proofs[1]:
        warnings.append(f"index base: contradictory range evidence (index 0 on {', '.join(proofs[0])}; "
                        f"index = V on {', '.join(proofs[1])}): decided by geometry")
    if bool(proofs[0]) != bool(proofs[1]):
        base = 0 if proofs[0] else 1
        rule = "range proof"
        if len(passes[1 - base]) > len(passes[base]):
            warnings.append(f"index base: range proves {base}-based but the geometry check prefers "
                            f"{1 - base}-based ({len(passes[1 - base])} vs {len(passes[base])} of {n} subjects)")
    elif len(passes[0]) != len(passes[1]):
        base = 0 if len(passes[0]) > len(passes[1]) else 1
        rule = "geometry"
    else:
        base, rule = prior, "tie: prior (the authors' code is Python, 0-based)"
        warnings.append(f"index base: WEAK EVIDENCE: both bases pass the geometry check on {len(passes[0])} of "
                        f"{n} subjects; using the prior {prior}-based")
    margin = abs(len(passes[0]) - len(passes[1]))
    if rule == "geometry" and margin < max(2, 0.2 * n):
        warnings.append(f"index base: weak evidence: {base}-based passes the geometry check on {len(passes[base])} "
                        f"of {n} subjects, {1 - base}-based on {len(passes[1 - base])}")
    if len(passes[base]) < 0.5 * n:
        warnings.append(f"index base: the chosen {base}-based indices pass the geometry check on only "
                        f"{len(passes[base])} of {n} subjects: check that the scans are the annotated ones")
    return base, {**summary, "rule": rule}, warnings


# ------------------------------------------------------------------------------ prepare
def _parse_base(index_base) -> int | None:
    if index_base in ("auto", None):
        return None
    if str(index_base) in ("0", "1"):
        return int(index_base)
    raise FacebenchError(f"index_base must be 'auto', 0 or 1, got {index_base!r}")


def _load_subject(folder: Path, root: Path, case, scan: str, video: str, image_size: int, box) -> dict:
    """Read one subject's scan and frame; raises InputFileError for any unusable input."""
    scan_path = find_scan(folder, scan)
    mesh = read_scan_mesh(scan_path)
    frame = read_frame(find_video(folder, video), case.frame_index)
    h, w = frame.shape[:2]
    box = central_square_box(h, w) if box is None else box
    crop = crop_and_resize(frame, box, image_size)
    return {"vertices": mesh.vertices, "faces": mesh.faces, "image": crop, "box": box, "frame_size": (h, w),
            "source": str(scan_path.relative_to(root)), "raw": np.asarray(case.landmark_indices, np.int64),
            "frame_index": case.frame_index}


def prepare_micc(root: str | Path, out: str | Path, *, annotations: str | Path | None = None,
                 scan: str = "frontal1", video: str = "Indoor-Cooperative", image_size: int = 256,
                 face_boxes: str | Path | None = None, index_base="auto", subjects=None,
                 overwrite: bool = False, progress: Progress | None = None,
                 annotations_url: str = ANNOTATIONS_BASE_URL) -> PrepareReport:
    """Prepare MICC Florence as a scan dataset file ``out`` (see the module doc).

    Args:
        root: the MICC folder holding ``subject_NN/``.
        out: the ``.h5`` to write (atomically; nothing is written when no subject is usable).
        annotations: a local copy of the annotations (``data/`` or the repository root); None
            fetches the pinned files into the cache.
        scan: ``Model/<scan>`` folder (``frontal1`` as the authors).
        video: the video name (``Indoor-Cooperative`` as the authors).
        image_size: side of the stored crops, pixels.
        face_boxes: optional JSON ``{id: [x0, y0, x1, y1]}`` (frame pixels, pixel-centre edges).
        index_base: "auto", 0 or 1 (see the module doc).
        subjects: optional iterable of subject numbers to prepare.
        overwrite: replace an existing ``out``.
        progress: optional ``callback(done, total, subject_id)``.

    Returns:
        :class:`PrepareReport` (``written`` False when no subject was usable).

    Raises:
        FacebenchError / InputFileError: problems that stop everything (no root, unreadable
        annotations.json, bad face-box file, ``out`` exists without ``overwrite``).
    """
    start = time.perf_counter()
    root, out = Path(root), Path(out)
    if scan not in SCANS:
        raise FacebenchError(f"scan must be one of {', '.join(SCANS)}, got {scan!r}")
    fixed_base = _parse_base(index_base)
    if not root.is_dir():
        raise InputFileError(root, "MICC root folder not found")
    if out.exists() and not overwrite:
        raise InputFileError(out, "exists already (use --overwrite to replace it)")
    boxes = load_face_boxes(face_boxes)
    ann = load_micc_annotations(annotations, base_url=annotations_url)
    report = PrepareReport("micc", str(out), warnings=list(ann.warnings))
    report.annotations = {"repository": ANNOTATIONS_REPOSITORY, "commit": ANNOTATIONS_COMMIT,
                          "source": str(annotations) if annotations is not None else annotations_url,
                          "sha256": ann.files}
    folders = subject_folders(root)
    wanted = sorted(set(ann.cases) | set(ann.skipped))
    if subjects is not None:
        chosen = {int(s) for s in subjects}
        unknown = sorted(chosen - set(wanted))
        for s in unknown:
            report.skip(f"subject_{s:02d}", "no annotation for this subject")
        wanted = [s for s in wanted if s in chosen]
    loaded: dict[str, dict] = {}
    for done, number in enumerate(wanted):
        sid = f"subject_{number:02d}"
        if progress is not None:
            progress(done, len(wanted), sid)
        if number in ann.skipped:
            report.skip(sid, ann.skipped[number])
            continue
        if number not in folders:
            report.skip(sid, f"missing subject folder: no {root}/subject_{number:02d}")
            continue
        item = report.load(sid, _load_subject, folders[number], root, ann.cases[number], scan, video, image_size,
                           _box_for(boxes, number))
        if item is None:
            continue
        item["evidence"] = index_evidence(item["vertices"], item["raw"])
        loaded[sid] = item
    if progress is not None:
        progress(len(wanted), len(wanted), "")
    base = _choose_base(fixed_base, loaded, report)
    _write(out, loaded, base, image_size, report, overwrite, dict(scan=scan, video=video, image_size=image_size,
                                                                  face_boxes=str(face_boxes) if face_boxes else None))
    return report.finish(start)


def _choose_base(fixed_base: int | None, loaded: dict[str, dict], report: PrepareReport) -> int:
    evidence = {sid: item["evidence"] for sid, item in loaded.items()}
    base, summary, warnings = decide_index_base(evidence)
    if fixed_base is not None:
        if loaded and base != fixed_base and summary["rule"] != "tie: prior (the authors' code is Python, 0-based)":
            report.warnings.append(f"index base: {fixed_base} was given but the evidence prefers {base} "
                                   f"({summary['rule']})")
        base, summary = fixed_base, {**summary, "rule": "given"}
    else:
        report.warnings.extend(warnings)
    report.index_base = {"base": base, "mode": "auto" if fixed_base is None else "given", **summary,
                         "evidence": evidence}
    return base


def _write(out: Path, loaded: dict[str, dict], base: int, image_size: int, report: PrepareReport,
           overwrite: bool, settings: dict) -> None:
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample, write_samples

    usable = {}
    for sid, item in loaded.items():
        idx = item["raw"] - base
        n = len(item["vertices"])
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            report.skip(sid, f"annotation index {int(bad[0]) + base} is outside the scan {item['source']} "
                             f"({n} vertices, {base}-based)")
            continue
        geometry = item["evidence"]["geometry"][str(base)]
        if geometry is not None and not geometry["passes"]:
            report.warnings.append(f"{sid}: implausible landmarks on {item['source']} (lacrimal distance "
                                   f"{geometry['lacrimal_mm']} mm, nose base {geometry['nose_ahead_mm']} mm "
                                   "in front of the lacrimal-lips plane)")
        usable[sid] = (item, idx)
    if not usable:
        return
    writer = ScanDatasetWriter(out, kind="micc", landmark_names=list(SCAN_LANDMARK_SETS["micc4"]),
                               image_size=image_size, landmark_set="micc4", mm_per_unit=1.0,
                               attrs={"index_base": base}, overwrite=overwrite)
    samples = (ScanSample(id=sid, image=item["image"], face_box=item["box"], frame_size=item["frame_size"],
                          vertices=item["vertices"], faces=item["faces"], landmark_indices=idx,
                          source=item["source"], frame_index=item["frame_index"])
               for sid, (item, idx) in usable.items())
    write_samples(writer, samples, report, settings)
