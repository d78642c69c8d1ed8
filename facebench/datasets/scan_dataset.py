"""Scan datasets: real images with per-sample 3D scans of varying topology (MICC, FaceWarehouse).

A scan dataset is a facebench dataset file (attr ``format = "facebench-dataset"``, ``version 1``)
whose attr ``dataset_kind`` is ``"micc"``, ``"facewarehouse"`` or ``"now"``. It extends the dataset layout of docs/file-formats.md
for scans whose vertex count and triangles differ per sample. N samples, L scan landmarks,
S×S image crops:

================================================  =====================================================
``ids (N,)`` str                                   sample ids (e.g. ``subject_01``, ``Tester_1``)
``images (N,S,S,3)`` uint8                         face crop resized to S×S, **sRGB as captured**
                                                   (attr ``image_encoding = "srgb"``)
``face_boxes (N,4)`` float32                       crop box in the original frame, pixels
                                                   ``(x0, y0, x1, y1)``, pixel-centre convention
``frame_sizes (N,2)`` int32                        original frame ``(height, width)``
``frame_indices (N,)`` int64                       0-based frame index in the source video, −1 for a still
``landmarks_2d (N,L2,2)`` float32 (optional)       2D landmarks in the **crop** (pixels), NaN where unknown
``scans/<id>/vertices (V_i,3)`` float32            the scan, mm, the scan's own frame
``scans/<id>/faces (F_i,3)`` int32                 its triangles (polygons fanned)
``landmark_names (L,)`` str                        names of the scan landmarks, in protocol order
``scan_landmarks (N,L,3)`` float32                 landmark coordinates on each scan, mm (NaN: undefined)
``scan_landmark_indices (N,L)`` int32              their vertex index in each scan (−1: undefined)
``landmark_indices (L,)`` int32                    shared landmark vertices when every scan has the
                                                   same topology (FaceWarehouse), else all −1
``faces (0,3)`` int32                              empty: scans have their own faces
``sources (N,)`` str                               the source file of each scan, relative to the root
``scan_keys (N,)`` str (optional)                  the ``scans/`` group of each sample (several samples
                                                   may share one scan: NoW); absent: the sample's id
================================================  =====================================================

Root attrs: ``dataset_kind``, ``units = "mm"``, ``mm_per_unit`` (the factor applied to the source
coordinates), ``image_size`` ([S, S]), ``image_encoding``, ``landmark_set`` (e.g. ``micc4``),
``preparation`` (JSON: the command's settings, annotation source and sha256, and the report of
skipped subjects with reasons).

:class:`ScanDatasetWriter` appends samples one at a time (the number of usable subjects is only
known at the end) to a temporary file that is renamed at the end. Reading is
:class:`facebench.datasets.dataset_file.FaceDataset`'s (with the scan-file check and scan reader
beside it): it opens these files like any dataset file and exposes the scans through
``FaceDataset.scan`` and ``FaceDataset.scan_landmarks``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facebench import __version__
from facebench.datasets.dataset_file import FORMAT, SCAN_KINDS, VERSION
from facebench.errors import InputFileError


@dataclasses.dataclass
class ScanSample:
    """One prepared sample.

    Attributes:
        id: unique sample id.
        image: ``(S,S,3)`` uint8 face crop (sRGB).
        face_box: ``(4,)`` crop box ``(x0, y0, x1, y1)`` in the original frame, pixels.
        frame_size: ``(height, width)`` of the original frame.
        vertices: ``(V,3)`` scan vertices, mm.
        faces: ``(F,3)`` triangles (0-based).
        landmark_indices: ``(L,)`` scan vertex of each named landmark (−1: undefined).
        source: the scan's path relative to the dataset root.
        frame_index: 0-based frame index in the video (−1 for a still image).
        landmarks_2d: optional ``(L2,2)`` landmarks in the crop, pixels.
        landmarks: optional ``(L,3)`` landmark coordinates (mm) annotated on the scan but not at a
            vertex (NoW's ``.pp`` points); then ``landmark_indices`` are all −1.
        scan_key: the ``scans/`` group of this sample's scan when several samples share one scan
            (NoW: one scan per subject, many images); "" keeps one scan per sample (``scans/<id>``).
            The scan is written with the first sample naming it (``scan_keys (N,)`` records the keys).
    """

    id: str
    image: np.ndarray
    face_box: np.ndarray
    frame_size: tuple[int, int]
    vertices: np.ndarray
    faces: np.ndarray
    landmark_indices: np.ndarray
    source: str = ""
    frame_index: int = -1
    landmarks_2d: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    scan_key: str = ""


class ScanDatasetWriter:
    """Write a scan dataset sample by sample; the file appears only on success.

    Usage::

        with ScanDatasetWriter(path, kind="micc", landmark_names=[...], image_size=256,
                               landmark_set="micc4", attrs={...}) as writer:
            writer.add(sample)             # a ScanSample
        # or writer.close(success=True)

    ``shared_landmark_indices`` (``(L,)``) records landmark vertices common to every scan (a fixed
    template topology); otherwise ``landmark_indices`` is all −1. ``n_landmarks_2d`` reserves a
    ``landmarks_2d`` field. A writer that received no sample refuses to finish (an empty dataset is
    an error, never a file).
    """

    def __init__(self, path: str | Path, *, kind: str, landmark_names: list[str], image_size: int,
                 landmark_set: str, mm_per_unit: float = 1.0, shared_landmark_indices=None,
                 n_landmarks_2d: int | None = None, attrs: dict[str, Any] | None = None, overwrite: bool = False):
        if kind not in SCAN_KINDS:
            raise ValueError(f"scan dataset kind must be one of {SCAN_KINDS}, got {kind!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise InputFileError(self.path, "exists already (use --overwrite to replace it)")
        self.landmark_names = list(landmark_names)
        self.image_size = int(image_size)
        self.n = 0
        self._ids: set[str] = set()
        L, S = len(self.landmark_names), self.image_size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        f = self._file = h5py.File(self.tmp, "w")
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["facebench_version"] = __version__
        f.attrs["dataset_kind"] = kind
        f.attrs["units"] = "mm"
        f.attrs["mm_per_unit"] = float(mm_per_unit)
        f.attrs["image_size"] = [S, S]
        f.attrs["image_encoding"] = "srgb"
        f.attrs["landmark_set"] = landmark_set
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value
        text = h5py.string_dtype(encoding="utf-8")
        f.create_dataset("landmark_names", data=np.array(self.landmark_names, dtype=object), dtype=text)
        shared = np.full(L, -1) if shared_landmark_indices is None else np.asarray(shared_landmark_indices)
        if shared.shape != (L,):
            raise ValueError(f"shared_landmark_indices must have shape ({L},), got {shared.shape}")
        f.create_dataset("landmark_indices", data=shared.astype(np.int32))
        f.create_dataset("faces", data=np.zeros((0, 3), np.int32))
        growing = {
            "ids": ((), text),
            "scan_keys": ((), text),
            "sources": ((), text),
            "images": ((S, S, 3), np.uint8),
            "face_boxes": ((4,), np.float32),
            "frame_sizes": ((2,), np.int32),
            "frame_indices": ((), np.int64),
            "scan_landmarks": ((L, 3), np.float32),
            "scan_landmark_indices": ((L,), np.int32),
        }
        if n_landmarks_2d:
            growing["landmarks_2d"] = ((int(n_landmarks_2d), 2), np.float32)
        for name, (shape, dtype) in growing.items():
            chunks = (1, *shape) if name == "images" else None
            f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=chunks or True, compression="lzf" if name == "images" else None)
        f.create_group("scans")

    def add(self, sample: ScanSample) -> None:
        """Append one sample (checked: unique id, shapes, finite vertices, valid faces and indices)."""
        f, S, L = self._file, self.image_size, len(self.landmark_names)
        if sample.id in self._ids:
            raise ValueError(f"duplicate sample id {sample.id!r}")
        vertices = np.asarray(sample.vertices, np.float32)
        faces = np.asarray(sample.faces, np.int64)
        indices = np.asarray(sample.landmark_indices, np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise ValueError(f"{sample.id}: scan vertices must be a finite (V,3) array")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise ValueError(f"{sample.id}: scan faces must be a non-empty (F,3) array")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError(f"{sample.id}: scan faces index outside 0..{len(vertices) - 1}")
        if indices.shape != (L,) or (indices >= len(vertices)).any() or (indices < -1).any():
            raise ValueError(f"{sample.id}: landmark indices must be {L} values in −1..{len(vertices) - 1}")
        image = np.asarray(sample.image)
        if image.shape != (S, S, 3) or image.dtype != np.uint8:
            raise ValueError(f"{sample.id}: image must be ({S},{S},3) uint8, got {image.shape} {image.dtype}")
        landmarks = np.where((indices >= 0)[:, None], vertices[np.maximum(indices, 0)], np.nan)
        if sample.landmarks is not None:
            landmarks = np.asarray(sample.landmarks, np.float64)
            if landmarks.shape != (L, 3) or np.isinf(landmarks).any():
                raise ValueError(f"{sample.id}: landmarks must be a ({L},3) array of finite values or NaN")
        key = sample.scan_key or sample.id
        if "/" in key or key in (".", ".."):
            raise ValueError(f"{sample.id}: scan key {key!r} is not a plain group name")
        row = self.n
        values = {
            "ids": sample.id,
            "scan_keys": key,
            "sources": sample.source,
            "images": image,
            "face_boxes": np.asarray(sample.face_box, np.float32),
            "frame_sizes": np.asarray(sample.frame_size, np.int32),
            "frame_indices": int(sample.frame_index),
            "scan_landmarks": landmarks,
            "scan_landmark_indices": indices.astype(np.int32),
        }
        if "landmarks_2d" in f:
            lm = f["landmarks_2d"]
            values["landmarks_2d"] = (np.full(lm.shape[1:], np.nan, np.float32) if sample.landmarks_2d is None
                                      else np.asarray(sample.landmarks_2d, np.float32))
        for name, value in values.items():
            f[name].resize(row + 1, axis=0)
            f[name][row] = value
        if key not in f["scans"]:  # a shared scan is written once, with its first sample
            group = f["scans"].create_group(key)
            group.create_dataset("vertices", data=vertices, compression="lzf")
            group.create_dataset("faces", data=faces.astype(np.int32), compression="lzf")
        self._ids.add(sample.id)
        self.n += 1

    def set_attr(self, key: str, value: Any) -> None:
        """Set a root attribute (dicts and lists stored as JSON), e.g. the final preparation report."""
        self._file.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value

    def close(self, success: bool) -> None:
        self._file.close()
        if success and self.n > 0:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if success:
                raise InputFileError(self.path, "no usable sample: nothing written")

    def __enter__(self) -> ScanDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)


def write_samples(writer: ScanDatasetWriter, samples, report, settings: dict) -> None:
    """Add each ``ScanSample`` of ``samples`` to ``writer``, skipping (into ``report``) those the
    writer refuses; record ``{"settings", "report"}`` as the ``preparation`` attr; close the writer
    (the file appears only when at least one sample was written).

    Args:
        writer: an open :class:`ScanDatasetWriter`.
        samples: iterable of :class:`ScanSample`.
        report: a :class:`facebench.datasets.annotations.PrepareReport` (``skip``, ``prepared``,
            ``written``, ``to_dict``).
        settings: the preparation settings (JSON-serializable).
    """
    ok = False
    try:
        for sample in samples:
            try:
                writer.add(sample)
            except ValueError as error:  # checked before anything is written: the file stays consistent
                report.skip(sample.id, f"{sample.source}: {error}")
                continue
            report.prepared.append(sample.id)
        report.written = bool(report.prepared)
        writer.set_attr("preparation", {"settings": settings, "report": report.to_dict()})
        ok = report.written
    finally:
        if not ok:
            report.written = False
        writer.close(success=ok)
