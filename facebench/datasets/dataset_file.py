"""The facebench dataset file (HDF5): writing it atomically, reading it lazily.

Layout (attr ``format = "facebench-dataset"``, ``version``), N samples of H×W images, V vertices,
L landmarks (docs/file-formats.md):

==========================================  ===========================================================
``ids (N,)`` str                             sample ids (unique)
``images (N,H,W,3)`` uint8                   rendered RGB: reflectance ⊙ SH irradiance, linear, ×255
``masks (N,H,W)`` bool                       pixels covered by the face mesh
``reflectance_images (N,H,W,3)`` uint8       reflectance rendered without shading, linear RGB ×255
``vertices (N,V,3)`` float32                 ground-truth shape, head frame, mm
``faces (F,3)`` int32                        triangles (shared topology)
``landmark_indices (L,)`` int32              iBUG-68 landmark vertices (−1 where undefined)
``landmarks_2d (N,L,2)`` float32             ``project(vertices[landmark_indices], q, t, K)``, pixels
``q (N,4)``, ``t (N,3)`` float64             head → camera pose (w ≥ 0), t in mm
``K (3,3)`` or ``(N,3,3)`` float64           intrinsics, pixels
``sh (N,9,3)`` float32                       SH lighting, 9 coefficients per RGB channel
``coefficients/{identity,expression,reflectance} (N,K)`` float32, std units
``yaw``, ``pitch``, ``roll (N,)`` float64    head angles, degrees
optional ``subject (N,)`` int64              identity (subject) index of each sample (synthetic)
optional ``mirror_of (N,)`` int64            row this row mirrors, −1 for an original (synthetic)
==========================================  ===========================================================

Root attrs: ``format``, ``version``, ``facebench_version``, ``image_size`` ([H, W]) and the
writer's own (the synthetic generator: ``model``, ``model_version``, ``model_digest``, ``seed``,
``settings`` JSON, ``split``, ``rows``, ``split_rows``, ``shard``, ``image_encoding``). Dict and
list attributes are stored as JSON strings and decoded by the reader.

**Image encoding**: ``images`` and ``reflectance_images`` hold linear RGB (no sRGB gamma),
``uint8 = rint(clip(x, 0, 1) * 255)``; decode with ``x = uint8 / 255``.

Writers write to a temporary name beside the target and rename at the end, so an interrupted run
never leaves a file that looks complete. Readers never load whole arrays: each sample is read on
demand, and the torch :class:`TorchFaceDataset` reopens the file in each DataLoader worker.

Scan datasets (``dataset_kind`` in :data:`SCAN_KINDS`: MICC, FaceWarehouse) are dataset files
too, with per-sample scans instead of shared-topology vertices; their layout and writer are in
:mod:`facebench.datasets.scan_dataset`, their reading (:func:`check_scan_file`, :func:`read_scan`,
``FaceDataset.scan``) here. :func:`dataset_summary` describes a synthetic file (counts, settings,
angle histograms).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facebench import __version__
from facebench.errors import InputFileError
from facebench.safe_hdf5 import check_json_bounds, checked_dataset, open_hdf5

FORMAT = "facebench-dataset"
VERSION = 1

#: Per-sample arrays: name -> (trailing shape builder, dtype). ``{H}``, ``{W}``, ``{V}``, ``{L}``... resolved at creation.
#: Most face-index entries (3 per triangle) a dataset's shared ``faces`` may declare.
MAX_FACE_INDICES = 3 * 20_000_000
#: Most vertices one scan may declare.
MAX_SCAN_VERTICES = 20_000_000
#: Most landmarks a dataset may declare.
MAX_LANDMARKS = 100_000
PER_SAMPLE_FIELDS = (
    "images", "masks", "reflectance_images", "vertices", "landmarks_2d", "q", "t", "sh",
    "yaw", "pitch", "roll",
)
#: Optional per-sample fields a reader picks up when present (name -> trailing shape, dtype).
OPTIONAL_FIELDS = {"subject": ((), np.int64), "mirror_of": ((), np.int64)}
COEFFICIENT_FIELDS = ("identity", "expression", "reflectance")
#: Dataset kinds whose samples are scans (``dataset_kind`` attribute).
SCAN_KINDS = ("micc", "facewarehouse", "now")
#: Fields every scan dataset has.
REQUIRED_SCAN_FIELDS = ("ids", "images", "face_boxes", "frame_sizes", "landmark_names", "scan_landmarks",
                        "scan_landmark_indices", "landmark_indices", "scans")


def _str_dtype():
    return h5py.string_dtype(encoding="utf-8")


class DatasetWriter:
    """Create a dataset file of ``n`` samples and fill it slice by slice.

    Usage::

        with DatasetWriter(path, n=..., height=..., width=..., faces=..., landmark_indices=...,
                           n_coefficients={"identity": 80, ...}, attrs={...}) as writer:
            writer.write(start, batch_dict)        # arrays for samples [start, start + b)

    The file appears at ``path`` only when the context exits without an exception and every
    sample was written; otherwise the temporary file is removed. ``overwrite=False`` refuses an
    existing ``path`` before any work. ``extra_fields`` adds per-sample arrays
    (name -> (trailing shape, dtype)), e.g. :data:`OPTIONAL_FIELDS`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n: int,
        height: int,
        width: int,
        faces: np.ndarray,
        landmark_indices: np.ndarray,
        n_vertices: int,
        n_coefficients: dict[str, int],
        K: np.ndarray | None = None,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        compression: str | None = "lzf",
        extra_fields: dict[str, tuple[tuple, Any]] | None = None,
    ):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise InputFileError(self.path, "exists already (use --overwrite to replace it)")
        if n < 1 or height < 1 or width < 1:
            raise ValueError(f"need n, height, width >= 1, got {n}, {height}, {width}")
        self.n = n
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._file = h5py.File(self.tmp, "w")
        self._written = np.zeros(n, bool)
        f, L = self._file, len(landmark_indices)
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["facebench_version"] = __version__
        f.attrs["image_size"] = [height, width]
        for key, value in (attrs or {}).items():
            if isinstance(value, (dict, list, tuple)):
                value = json.dumps(value, sort_keys=True)
            f.attrs[key] = value
        f.create_dataset("faces", data=np.asarray(faces, np.int32))
        f.create_dataset("landmark_indices", data=np.asarray(landmark_indices, np.int32))
        if K is not None:
            f.create_dataset("K", data=np.asarray(K, np.float64))
        chunk_images = (1, height, width)
        specs = {
            "ids": ((), _str_dtype(), None),
            "images": ((height, width, 3), np.uint8, (*chunk_images, 3)),
            "masks": ((height, width), bool, chunk_images),
            "reflectance_images": ((height, width, 3), np.uint8, (*chunk_images, 3)),
            "vertices": ((n_vertices, 3), np.float32, (1, n_vertices, 3)),
            "landmarks_2d": ((L, 2), np.float32, None),
            "q": ((4,), np.float64, None),
            "t": ((3,), np.float64, None),
            "sh": ((9, 3), np.float32, None),
            "yaw": ((), np.float64, None),
            "pitch": ((), np.float64, None),
            "roll": ((), np.float64, None),
        }
        if K is None:
            specs["K"] = ((3, 3), np.float64, None)
        for name, (shape, dtype) in (extra_fields or {}).items():
            specs[name] = (tuple(shape), dtype, None)
        for name, (shape, dtype, chunks) in specs.items():
            big = chunks is not None
            f.create_dataset(name, shape=(n, *shape), dtype=dtype, chunks=chunks,
                             compression=compression if big else None)
        group = f.create_group("coefficients")
        for name, k in n_coefficients.items():
            group.create_dataset(name, shape=(n, k), dtype=np.float32)

    def write(self, start: int, batch: dict[str, np.ndarray]) -> None:
        """Write samples ``[start, start + b)``; ``batch`` holds every per-sample field and
        ``coefficients`` (a dict) for them."""
        b = len(batch["ids"])
        stop = start + b
        if start < 0 or stop > self.n:
            raise IndexError(f"samples [{start}, {stop}) outside [0, {self.n})")
        for name, value in batch.items():
            if name == "coefficients":
                for key, coefficients in value.items():
                    self._file["coefficients"][key][start:stop] = coefficients
            elif name == "ids":
                self._file["ids"][start:stop] = np.asarray([str(i) for i in value], dtype=object)
            else:
                self._file[name][start:stop] = value
        self._written[start:stop] = True

    def close(self, success: bool) -> None:
        self._file.close()
        if success and self._written.all():
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if success:
                missing = int((~self._written).sum())
                raise RuntimeError(f"{self.path}: {missing} samples were never written")

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)


class FaceDataset:
    """Lazy reader of a facebench dataset file: ``len(ds)``, ``ds[i] -> dict of arrays``.

    Shared arrays (``faces``, ``landmark_indices``, a shared ``K``) are read once; per-sample
    arrays are read on access. The h5py handle is opened per process (safe after ``fork``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(self.path, "dataset file not found")
        try:
            with open_hdf5(self.path) as f:
                fmt = f.attrs.get("format")
                if fmt != FORMAT:
                    raise InputFileError(self.path, f"not a facebench dataset (format attribute {fmt!r})")
                version = int(f.attrs.get("version", -1))
                if version != VERSION:
                    raise InputFileError(self.path, f"unsupported dataset version {version}")
                self.n = int(checked_dataset(f, "ids", kind="string", ndim=1, path=self.path).shape[0])
                self.n_vertices = (int(checked_dataset(f, "vertices", kind="float", ndim=3, path=self.path).shape[1])
                                   if "vertices" in f else 0)
                self.faces = checked_dataset(f, "faces", kind="int", shape=(None, 3), max_elements=MAX_FACE_INDICES,
                                             path=self.path)[()]
                self.landmark_indices = checked_dataset(f, "landmark_indices", kind="int", ndim=1,
                                                        max_elements=MAX_LANDMARKS, path=self.path)[()]
                self.attrs = {k: _decode_attr(v, self.path, k) for k, v in f.attrs.items()}
                self.kind = str(self.attrs.get("dataset_kind", "synthetic"))
                self.coefficient_fields = tuple(f["coefficients"].keys()) if "coefficients" in f else ()
                self.fields = tuple(k for k in PER_SAMPLE_FIELDS if k in f)
                self.extra_fields = tuple(k for k in OPTIONAL_FIELDS if k in f)
                if self.is_scan_dataset:
                    self._open_scan_dataset(f)
                    return
                K = checked_dataset(f, "K", kind="float", path=self.path)
                if K.shape not in ((3, 3), (self.n, 3, 3)):
                    raise InputFileError(self.path, f"member 'K' has shape {K.shape}, expected (3, 3) or ({self.n}, 3, 3)")
                self.shared_K = K[()] if K.ndim == 2 else None
                self.landmark_names = None
                missing = [k for k in ("ids", *PER_SAMPLE_FIELDS) if k not in f]
                if missing:
                    raise InputFileError(self.path, f"dataset lacks {', '.join(missing)}")
                self._check_sample_members(f)
        except InputFileError:
            raise
        except (OSError, KeyError, RuntimeError) as error:  # h5py on corrupted metadata
            raise InputFileError(self.path, f"unreadable dataset file: {error}") from None
        self._file = None
        self._pid = None

    def _check_sample_members(self, f: h5py.File) -> None:
        """Kinds and shapes of every per-sample member against the header (``n`` rows, ``V``
        vertices, ``L`` landmarks, the image size), before any of them is read."""
        n, V, L = self.n, self.n_vertices, len(self.landmark_indices)
        hw = self.attrs.get("image_size")
        H, W = (int(hw[0]), int(hw[1])) if isinstance(hw, list) and len(hw) == 2 else (None, None)
        expected = {
            "images": ("int", (n, H, W, 3)), "reflectance_images": ("int", (n, H, W, 3)),
            "masks": ("number" if f["masks"].dtype.kind != "b" else "bool", (n, H, W)),
            "vertices": ("float", (n, V, 3)), "landmarks_2d": ("float", (n, L, 2)), "q": ("float", (n, 4)),
            "t": ("float", (n, 3)), "sh": ("float", (n, 9, 3)), "yaw": ("float", (n,)), "pitch": ("float", (n,)),
            "roll": ("float", (n,)),
        }
        for name, (kind, shape) in expected.items():
            checked_dataset(f, name, kind=kind, shape=shape, path=self.path)
        for name in self.extra_fields:
            checked_dataset(f, name, kind="int", shape=(n,), path=self.path)
        for name in self.coefficient_fields:
            checked_dataset(f["coefficients"], name, kind="float", shape=(n, None), path=self.path)

    @property
    def is_scan_dataset(self) -> bool:
        """True for real-data files with per-sample scans (MICC, FaceWarehouse; see
        :mod:`facebench.datasets.scan_dataset`)."""
        return self.kind in SCAN_KINDS

    def _open_scan_dataset(self, f: h5py.File) -> None:
        check_scan_file(f, self.path)
        self.shared_K = None
        self.landmark_names = [_decode(v) for v in f["landmark_names"][()]]
        self._file = None
        self._pid = None

    def scan(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ground-truth surface of sample ``index``: ``vertices (V,3)`` float64 mm and
        ``faces (F,3)`` int64. Scan datasets: the sample's own scan; synthetic datasets: the
        sample's vertices with the shared faces."""
        if self.is_scan_dataset:  # scans shared by several samples (NoW) are named by scan_keys
            f = self._h5()
            return read_scan(f, _decode(f["scan_keys" if "scan_keys" in f else "ids"][index]))
        return self.read("vertices", index, index + 1)[0].astype(np.float64), np.asarray(self.faces, np.int64)

    def scan_landmarks(self, index: int) -> np.ndarray:
        """Ground-truth 3D landmarks of sample ``index`` in the protocol's order, ``(L,3)`` float64 mm,
        NaN where undefined (scan datasets: ``scan_landmarks``; synthetic: vertices at
        ``landmark_indices``)."""
        if self.is_scan_dataset:
            return self._h5()["scan_landmarks"][index].astype(np.float64)
        vertices, _ = self.scan(index)
        indices = self.landmark_indices
        return np.where((indices >= 0)[:, None], vertices[np.maximum(indices, 0)], np.nan)

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = open_hdf5(self.path)
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return self.n

    @property
    def ids(self) -> list[str]:
        return [_decode(v) for v in self._h5()["ids"][()]]

    def array(self, name: str) -> np.ndarray:
        """A whole per-sample array (e.g. ``"yaw"``) read at once; use for small fields only."""
        if name in COEFFICIENT_FIELDS and name not in self.fields:
            return self._h5()["coefficients"][name][()]
        return self._h5()[name][()]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of one per-sample field (e.g. ``"vertices"``, ``"t"``), or of a
        coefficient space (``"identity"``...), without touching the other fields."""
        f = self._h5()
        source = f["coefficients"][name] if name in self.coefficient_fields and name not in f else f[name]
        return source[start:stop]

    def mean_vertices(self, chunk_size: int = 512) -> np.ndarray:
        """Mean ground-truth shape over all samples, ``(V,3)`` float64 mm, head frame (chunked)."""
        total = np.zeros((self.n_vertices, 3))
        for start in range(0, self.n, chunk_size):
            total += self.read("vertices", start, start + chunk_size).astype(np.float64).sum(axis=0)
        return total / max(self.n, 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index = index % self.n
        f = self._h5()
        sample = {"id": _decode(f["ids"][index])}
        for name in (*self.fields, *self.extra_fields):
            sample[name] = f[name][index]
        sample["K"] = self.shared_K if self.shared_K is not None else f["K"][index]
        sample["coefficients"] = {k: f["coefficients"][k][index] for k in self.coefficient_fields}
        return sample

    def rows(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``[start, stop)`` as a batch dict in the layout :meth:`DatasetWriter.write` takes
        (``ids`` as str, every per-sample field, ``K`` when per-sample, ``coefficients``)."""
        f = self._h5()
        batch: dict[str, Any] = {"ids": [_decode(v) for v in f["ids"][start:stop]]}
        for name in (*self.fields, *self.extra_fields):
            batch[name] = f[name][start:stop]
        if self.shared_K is None:
            batch["K"] = f["K"][start:stop]
        batch["coefficients"] = {k: f["coefficients"][k][start:stop] for k in self.coefficient_fields}
        return batch

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):  # picklable for DataLoader workers: the handle is reopened
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state


# ---------------------------------------------------------------------------------------- scan datasets
def check_scan_file(f: h5py.File, path: Path) -> None:
    """Raise :class:`InputFileError` unless the open file has every scan-dataset field."""
    missing = [k for k in REQUIRED_SCAN_FIELDS if k not in f]
    if missing:
        raise InputFileError(path, f"scan dataset lacks {', '.join(missing)}")
    n = checked_dataset(f, "ids", kind="string", ndim=1, path=path).shape[0]
    L = checked_dataset(f, "landmark_names", kind="string", ndim=1, max_elements=MAX_LANDMARKS, path=path).shape[0]
    checked_dataset(f, "images", kind="int", shape=(None, None, None, 3), path=path)
    checked_dataset(f, "scan_landmarks", kind="float", shape=(None, L, 3), path=path)
    checked_dataset(f, "scan_landmark_indices", kind="int", shape=(None, L), path=path)
    if not isinstance(f["scans"], h5py.Group):
        raise InputFileError(path, "member 'scans' is not a group")
    wrong = [k for k in ("images", "face_boxes", "frame_sizes", "scan_landmarks", "scan_landmark_indices")
             if f[k].shape[0] != n]
    if wrong:
        raise InputFileError(path, f"{', '.join(wrong)} do not have {n} rows like ids")


def read_scan(f: h5py.File, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The scan of ``sample_id``: ``vertices (V,3)`` float64 mm and ``faces (F,3)`` int64."""
    path = Path(f.filename)
    group = f["scans"].get(sample_id)
    if not isinstance(group, h5py.Group):
        raise InputFileError(path, f"member 'scans/{sample_id}' is missing")
    vertices = checked_dataset(group, "vertices", kind="float", shape=(None, 3), max_elements=3 * MAX_SCAN_VERTICES,
                               path=path)
    faces = checked_dataset(group, "faces", kind="int", shape=(None, 3), max_elements=MAX_FACE_INDICES, path=path)
    v, f_ = vertices[()].astype(np.float64), faces[()].astype(np.int64)
    if len(f_) and (f_.min() < 0 or f_.max() >= len(v)):
        raise InputFileError(path, f"member 'scans/{sample_id}/faces' indexes vertices outside [0, {len(v)})")
    if not np.all(np.isfinite(v)):
        raise InputFileError(path, f"member 'scans/{sample_id}/vertices' holds NaN or Inf")
    return v, f_


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_attr(value, path: Path, name: str):
    """An attribute as plain Python: JSON text (bounded: :func:`check_json_bounds`) parsed, arrays
    as lists; text that is not JSON stays text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value[:1] in "[{":
        check_json_bounds(value, path=path, member=name)
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class TorchFaceDataset:
    """A ``torch.utils.data.Dataset`` over a facebench dataset file, for training.

    Each item is a dict of tensors: ``image (3,H,W) float32`` in [0, 1], ``mask (H,W) bool``,
    ``vertices (V,3)`` mm head frame, ``landmarks_2d (L,2)`` pixels, ``q (4,)``, ``t (3,)`` mm,
    ``K (3,3)``, ``sh (9,3)``, ``identity``/``expression``/``reflectance`` coefficients (NaN for
    mirror rows of a symmetrized synthetic set), ``subject``/``mirror_of`` when the file has them,
    and ``index``. Reads lazily; safe with DataLoader workers (each reopens the file).
    """

    def __init__(self, path: str | Path, *, with_reflectance_image: bool = False):
        self.reader = FaceDataset(path)
        self.with_reflectance_image = with_reflectance_image

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict:
        return self._item(index, self.reader[index])

    def __getitems__(self, indices) -> list[dict]:
        """The items of a whole batch (torch's DataLoader fetches batches through this), with
        each HDF5 dataset looked up once per batch instead of once per sample; the same items,
        bit for bit, as ``[self[i] for i in indices]``."""
        reader = self.reader
        n = len(reader)
        for index in indices:
            if not -n <= index < n:
                raise IndexError(index)
        f = reader._h5()
        # Dataset objects looked up once per batch (the lookup cost as much as the read); one
        # row per read: h5py's list indexing is slower still.
        columns = {name: f[name] for name in (*reader.fields, *reader.extra_fields)}
        shared_K = reader.shared_K
        K = f["K"] if shared_K is None else None
        coefficients = {k: f["coefficients"][k] for k in reader.coefficient_fields}
        items = []
        for index in indices:
            row = int(index) % n
            sample = {name: column[row] for name, column in columns.items()}
            sample["K"] = shared_K if shared_K is not None else K[row]
            sample["coefficients"] = {name: column[row] for name, column in coefficients.items()}
            items.append(self._item(index, sample))
        return items

    def _item(self, index: int, sample: dict) -> dict:
        import torch

        item = {
            "index": torch.tensor(index),
            "image": torch.from_numpy(sample["images"]).permute(2, 0, 1).float().div_(255.0),
            "mask": torch.from_numpy(sample["masks"]),
            "vertices": torch.from_numpy(sample["vertices"]),
            "landmarks_2d": torch.from_numpy(sample["landmarks_2d"]),
            "q": torch.from_numpy(sample["q"]).float(),
            "t": torch.from_numpy(sample["t"]).float(),
            "K": torch.from_numpy(np.asarray(sample["K"])).float(),
            "sh": torch.from_numpy(sample["sh"]),
        }
        for key, value in sample["coefficients"].items():
            item[key] = torch.from_numpy(value)
        for key in self.reader.extra_fields:
            item[key] = torch.tensor(int(sample[key]))
        if self.with_reflectance_image:
            item["reflectance_image"] = (
                torch.from_numpy(sample["reflectance_images"]).permute(2, 0, 1).float().div_(255.0)
            )
        return item


#: Default |yaw| bins of docs/metrics.md (degrees) and the signed bins of the histograms.
YAW_BINS = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)


def histogram(values: np.ndarray, edges) -> list[dict[str, float]]:
    """Counts of ``values`` in ``[edges[k], edges[k+1])`` (the last bin includes its top edge,
    as :func:`numpy.histogram`)."""
    edges = np.asarray(edges, np.float64)
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=edges)
    return [{"low": float(a), "high": float(b), "count": int(c)} for a, b, c in zip(edges[:-1], edges[1:], counts)]


def dataset_summary(path: str | Path) -> dict[str, Any]:
    """Counts, attributes, generator settings and angle histograms of a dataset file (data only).

    Histograms: ``|yaw|`` in the default bins (docs/metrics.md) (values above 90 go to the last bin), and signed
    yaw, pitch and roll in 15-degree bins over their range.
    """
    ds = FaceDataset(path)
    yaw, pitch, roll = ds.array("yaw"), ds.array("pitch"), ds.array("roll")
    with open_hdf5(ds.path) as f:
        n_vertices = int(f["vertices"].shape[1])
        mirror_of = f["mirror_of"][()] if "mirror_of" in f else None
        subjects = len(np.unique(f["subject"][()])) if "subject" in f else None
    summary: dict[str, Any] = {
        "path": str(ds.path),
        "samples": len(ds),
        "image_size": ds.attrs.get("image_size"),
        "vertices": n_vertices,
        "faces": int(len(ds.faces)),
        "landmarks": int((ds.landmark_indices >= 0).sum()),
    }
    if mirror_of is not None:
        summary["mirrors"] = int((mirror_of >= 0).sum())
        summary["originals"] = len(ds) - summary["mirrors"]
    if subjects is not None:
        summary["subjects"] = subjects
    for key in ("model", "model_version", "seed", "split", "rows", "shard"):
        if key in ds.attrs and ds.attrs[key] != "":
            summary[key] = ds.attrs[key]
    summary["settings"] = ds.attrs.get("settings") if isinstance(ds.attrs.get("settings"), dict) else {}

    def signed_edges(values: np.ndarray) -> np.ndarray:
        top = max(15.0, 15.0 * np.ceil(np.abs(values).max() / 15.0)) if len(values) else 15.0
        return np.arange(-top, top + 15.0, 15.0)

    summary["histograms"] = {
        "|yaw|": histogram(np.minimum(np.abs(yaw), 90.0), YAW_BINS),
        "yaw": histogram(yaw, signed_edges(yaw)),
        "pitch": histogram(pitch, signed_edges(pitch)),
        "roll": histogram(roll, signed_edges(roll)),
    }
    ds.close()
    return summary
