"""Submissions: the files researchers hand in, opened safely and read sample by sample.

A submission holds, for the ids of one dataset, predicted meshes in the **head frame, mm**, and
optionally camera poses (q, t) mapping head → camera (``x_cam = R(q) x + t``, t in mm). Two
layouts (docs/file-formats.md), both versioned:

**HDF5** (``*.h5`` / ``*.hdf5``): root attrs ``format = "facebench-submission"``, ``version = 1``,
``method`` (a name), and the datasets

==============================  ===================================================================
``ids (N,)`` str                 sample ids of the dataset (any order; every dataset id once)
``vertices (N,V,3)`` float32     predicted shapes, head frame, mm (float64 accepted; float16 warned)
``faces (F,3)`` int              optional: the prediction's triangles; default the dataset's faces
                                 (required for scan datasets, whose scans share no topology)
``landmark_indices (L,)`` int    optional: the dataset's landmark set (iBUG-68 for synthetic files;
                                 ``micc4`` / ``facewarehouse6`` for MICC / FaceWarehouse files, see
                                 ``facebench.landmarks.SCAN_LANDMARK_SETS``; same order) as vertex
                                 indices of the predicted topology; −1 where undefined
``landmarks (N,L,3)`` float      optional: per-sample landmark coordinates, head frame, mm (NaN where
                                 undefined); used instead of ``landmark_indices`` when given, e.g.
                                 when each sample has its own topology
``q (N,4)`` float                optional: unit quaternions (w, x, y, z), head → camera
``t (N,3)`` float                optional: translations, mm (given together with ``q``)
==============================  ===================================================================

**Folder**: one mesh per id, ``<id>.obj`` or ``<id>.ply`` (read by :func:`facebench.meshio.read_mesh`;
meshes may have different topologies), and ``manifest.json``::

    {"format": "facebench-submission", "version": 1, "method": "my-method",
     "landmark_indices": [...],                 # optional, shared by every mesh
     "q": {"<id>": [w, x, y, z], ...},          # optional, per id
     "t": {"<id>": [x, y, z], ...},             # optional, per id (mm)
     "landmarks": {"<id>": [[x, y, z], ...]}}   # optional, per id (mm)

A **zip** of either layout (the ``.h5`` file, or the folder's files at the archive root or in one
top-level folder) is unpacked into a temporary folder only if every member stays inside the root
(no absolute path, no ``..``, no link or special file, no duplicate name), there are at most
:data:`MAX_ZIP_MEMBERS` members and their total uncompressed size is at most
:data:`MAX_UNZIPPED_BYTES` (counted while extracting, so lying headers do not help a zip bomb).

Nothing is ever unpickled: HDF5 is read with h5py, which never unpickles, and only numeric or
string datasets are read (object, variable-length non-string, opaque, compound and reference
dtypes are refused by validation, as are external/soft links and virtual or external storage,
which could make the reader open other files).

Landmarks of a sample, in order of precedence: the ``landmarks`` coordinates; the
``landmark_indices`` applied to the sample's vertices; the dataset's ``landmark_indices`` when the
prediction has the dataset's topology (no ``faces``, or the dataset's, and its vertex count).

Validation (:mod:`facebench.benchmark.validation`) comes first; :func:`load_submission` validates
and returns a :class:`Submission` that reads samples lazily, in dataset order, a chunk at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import stat
import tempfile
import weakref
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

import h5py
import numpy as np

from facebench.atomic import atomic_path
from facebench.errors import InputFileError
from facebench.hashing import file_sha256
from facebench.meshio import MESH_SUFFIXES, read_mesh

if TYPE_CHECKING:
    from facebench.benchmark.validation import ValidationReport
    from facebench.datasets.dataset_file import FaceDataset

__all__ = [
    "FORMAT", "VERSION", "MANIFEST_NAME", "H5_SUFFIXES", "FIELDS", "MAX_UNZIPPED_BYTES", "MAX_ZIP_MEMBERS",
    "UnsafeArchiveError", "SubmissionSource", "open_source", "safe_extract_zip", "zip_member_problems",
    "read_manifest", "FolderListing", "list_folder_meshes", "dataset_vertex_count", "submission_sha256", "SubmissionWriter", "write_submission",
    "SubmissionSample", "Submission", "load_submission",
]

FORMAT = "facebench-submission"
VERSION = 1
MANIFEST_NAME = "manifest.json"
H5_SUFFIXES = (".h5", ".hdf5")
#: The HDF5 datasets a submission may hold (anything else is ignored with a warning).
FIELDS = ("ids", "vertices", "faces", "landmark_indices", "landmarks", "q", "t")
#: Largest total uncompressed size of a zip submission, bytes (2 GiB).
MAX_UNZIPPED_BYTES = 2 * 1024**3
#: Most members a zip submission may hold.
MAX_ZIP_MEMBERS = 100_000
_COPY_BLOCK = 1 << 20


class UnsafeArchiveError(InputFileError):
    """A zip submission that could write outside its folder or expand without bound.

    ``problems`` lists every offending member (not only the first).
    """

    def __init__(self, path: str | Path, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f"; ... and {len(self.problems) - 5} more" if len(self.problems) > 5 else "")
        super().__init__(path, f"unsafe zip archive refused, nothing extracted: {shown}")


# ---------------------------------------------------------------------------------------- zip
def _member_mode(info: zipfile.ZipInfo) -> int:
    """The Unix file mode stored in a member (0 when the archiver stored none)."""
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def zip_member_problems(archive: zipfile.ZipFile, *, max_bytes: int = MAX_UNZIPPED_BYTES,
                        max_members: int = MAX_ZIP_MEMBERS) -> list[str]:
    """Every reason not to extract ``archive`` (empty list: safe), one string per problem.

    Refused: absolute names (``/x``, ``C:x``), ``..`` components, backslashes (ambiguous
    separators), symbolic links and other non-regular members, duplicate names, more than
    ``max_members`` members, and a declared uncompressed total above ``max_bytes``.
    """
    problems: list[str] = []
    infos = archive.infolist()
    if len(infos) > max_members:
        problems.append(f"{len(infos)} members (at most {max_members})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problems.append(f"{name!r}: absolute path")
        elif "\\" in name:
            problems.append(f"{name!r}: backslash in member name")
        elif ".." in parts:
            problems.append(f"{name!r}: path leaves the archive root ('..')")
        kind = stat.S_IFMT(_member_mode(info))  # 0: no file type stored (a plain file)
        if kind == stat.S_IFLNK:
            problems.append(f"{name!r}: symbolic link")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problems.append(f"{name!r}: not a regular file or folder")
        key = name.rstrip("/")
        if key in seen:
            problems.append(f"{name!r}: duplicate member name")
        seen.add(key)
        total += max(int(info.file_size), 0)
    if total > max_bytes:
        problems.append(f"uncompressed size {total} bytes exceeds the limit of {max_bytes} bytes")
    return problems


def safe_extract_zip(path: str | Path, destination: str | Path, *, max_bytes: int = MAX_UNZIPPED_BYTES,
                     max_members: int = MAX_ZIP_MEMBERS) -> None:
    """Extract the zip ``path`` into the existing folder ``destination`` after checking it.

    Members are copied block by block while counting the bytes actually produced, so a member
    that expands beyond its declared size, or a total beyond ``max_bytes``, stops the extraction.

    Raises:
        UnsafeArchiveError: any problem of :func:`zip_member_problems` (all of them listed), or
            the byte limit reached while extracting.
        InputFileError: not a zip file, or a corrupt member (bad CRC, truncated).
    """
    path, destination = Path(path), Path(destination).resolve()
    try:
        with zipfile.ZipFile(path) as archive:
            problems = zip_member_problems(archive, max_bytes=max_bytes, max_members=max_members)
            if problems:
                raise UnsafeArchiveError(path, problems)
            written = 0
            for info in archive.infolist():
                target = (destination / info.filename).resolve()
                if target != destination and destination not in target.parents:
                    raise UnsafeArchiveError(path, [f"{info.filename!r}: resolves outside the archive root"])
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as sink:
                    member_bytes = 0
                    while block := source.read(_COPY_BLOCK):
                        member_bytes += len(block)
                        written += len(block)
                        if member_bytes > info.file_size or written > max_bytes:
                            raise UnsafeArchiveError(path, [f"{info.filename!r}: expands beyond its declared "
                                                            f"size or the {max_bytes}-byte limit"])
                        sink.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as error:
        raise InputFileError(path, f"unreadable zip archive ({error})") from None


# ---------------------------------------------------------------------------------------- sources
@dataclasses.dataclass(frozen=True)
class SubmissionSource:
    """Where a submission's files are once opened.

    Attributes:
        path: what the user gave (file, folder or zip).
        kind: ``"hdf5"`` or ``"folder"``.
        root: the ``.h5`` file or the folder holding ``manifest.json`` (inside a temporary folder
            for a zip; valid only while :func:`open_source` is open).
        archive: True when ``path`` was a zip.
    """

    path: Path
    kind: str
    root: Path
    archive: bool = False


def _find_root(folder: Path, origin: Path) -> tuple[str, Path]:
    """The layout and root inside an unpacked zip (at its top level or in one top-level folder)."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not _hidden(p.name))
    for candidate in (folder, *subfolders):
        if (candidate / MANIFEST_NAME).is_file():
            return "folder", candidate
        h5 = [p for p in candidate.iterdir()
              if p.suffix.lower() in H5_SUFFIXES and p.is_file() and not p.is_symlink() and not _hidden(p.name)]
        if len(h5) == 1:
            return "hdf5", h5[0]
        if len(h5) > 1:
            raise InputFileError(origin, f"the zip holds {len(h5)} HDF5 files; expected one submission")
    raise InputFileError(origin, f"the zip holds neither a .h5 submission nor a {MANIFEST_NAME} (folder layout)")


def _hidden(name: str) -> bool:
    """Names archivers and file managers add (``.DS_Store``, ``._x`` AppleDouble, ``__MACOSX``)."""
    return name.startswith(".") or name == "__MACOSX"


@contextlib.contextmanager
def open_source(path: str | Path, *, max_bytes: int = MAX_UNZIPPED_BYTES) -> Iterator[SubmissionSource]:
    """Resolve a submission path to its layout; a zip is unpacked into a temporary folder that
    is removed when the context exits.

    Raises:
        InputFileError: missing path, unknown suffix, unreadable or unsafe zip
            (:class:`UnsafeArchiveError`).
    """
    path = Path(path)
    if path.is_dir():
        yield SubmissionSource(path, "folder", path)
        return
    if not path.is_file():
        raise InputFileError(path, "submission not found")
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        yield SubmissionSource(path, "hdf5", path)
        return
    if suffix != ".zip":
        raise InputFileError(path, f"unknown submission type {suffix or '(no suffix)'!r}: expected a .h5 file, "
                                   "a folder with manifest.json, or a .zip of either")
    folder = Path(tempfile.mkdtemp(prefix="facebench-submission-"))
    try:
        safe_extract_zip(path, folder, max_bytes=max_bytes)
        kind, root = _find_root(folder, path)
        yield SubmissionSource(path, kind, root, archive=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a folder submission, as a dict.

    Raises:
        InputFileError: missing, unreadable, not JSON, or not a JSON object.
    """
    path = Path(folder) / MANIFEST_NAME
    if path.is_symlink():
        raise InputFileError(path, "is a symbolic link (refused)")
    if not path.is_file():
        raise InputFileError(path, "missing: a folder submission needs a manifest.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"unreadable ({error})") from None
    except json.JSONDecodeError as error:
        raise InputFileError(path, f"not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(data, dict):
        raise InputFileError(path, f"must hold a JSON object, not {type(data).__name__}")
    return data


@dataclasses.dataclass
class FolderListing:
    """The files of a folder submission: ``meshes`` id → mesh paths (more than one: duplicate
    id), ``stray`` other names (ignored), ``links`` symbolic links (refused)."""

    meshes: dict[str, list[Path]]
    stray: list[str]
    links: list[str]


def list_folder_meshes(folder: str | Path) -> FolderListing:
    """Sort a folder submission's entries into meshes (``<id>.obj|.ply``), stray names (hidden
    files such as ``.DS_Store`` or ``._x.obj`` included) and symbolic links."""
    folder = Path(folder)
    meshes: dict[str, list[Path]] = {}
    stray, links = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            links.append(entry.name)
        elif entry.is_file() and entry.suffix.lower() in MESH_SUFFIXES and not _hidden(entry.name):
            meshes.setdefault(entry.stem, []).append(entry)
        elif entry.name != MANIFEST_NAME:
            stray.append(entry.name + ("/" if entry.is_dir() else ""))
    return FolderListing(meshes, stray, links)


def submission_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a submission: of the file's bytes for ``.h5``/``.zip``; for a folder, of
    the sorted ``name NUL sha256(content) LF`` lines of its regular files (links and sub-folders
    are not followed)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise InputFileError(path, "submission not found")
    digest = hashlib.sha256()
    for entry in sorted(path.iterdir()):
        if entry.is_file() and not entry.is_symlink():
            digest.update(f"{entry.name}\0{file_sha256(entry)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- writing
class SubmissionWriter:
    """Write an HDF5 submission of ``n`` samples slice by slice, atomically.

    Usage::

        with SubmissionWriter(path, n=len(ids), n_vertices=V, method="my-method",
                              with_pose=True, landmark_indices=lm) as writer:
            writer.write(start, ids=batch_ids, vertices=batch_vertices, q=batch_q, t=batch_t)

    The file appears at ``path`` only when the context exits without an exception and every
    sample was written. Arrays: ``vertices (b,V,3)`` mm head frame (stored float32), ``q (b,4)``,
    ``t (b,3)`` mm (stored float64), ``landmarks (b,L,3)`` mm when ``n_landmarks`` is given.

    Args:
        faces: ``(F,3)`` triangles of the predicted topology; None: the dataset's.
        attrs: extra root attributes (str, numbers).
    """

    def __init__(self, path: str | Path, *, n: int, n_vertices: int, method: str,
                 faces: np.ndarray | None = None, landmark_indices: np.ndarray | None = None,
                 with_pose: bool = False, n_landmarks: int | None = None,
                 attrs: dict[str, Any] | None = None):
        if n < 1 or n_vertices < 1:
            raise ValueError(f"need n >= 1 and n_vertices >= 1, got {n}, {n_vertices}")
        self.path = Path(path)
        self.n = n
        self._context = atomic_path(self.path, suffix=self.path.suffix)
        self._tmp = self._context.__enter__()
        self._written = np.zeros(n, bool)
        self._file = h5py.File(self._tmp, "w")
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["method"] = str(method)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.create_dataset("ids", shape=(n,), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("vertices", shape=(n, n_vertices, 3), dtype=np.float32)
        if faces is not None:
            f.create_dataset("faces", data=np.asarray(faces, np.int32))
        if landmark_indices is not None:
            f.create_dataset("landmark_indices", data=np.asarray(landmark_indices, np.int32))
        if with_pose:
            f.create_dataset("q", shape=(n, 4), dtype=np.float64)
            f.create_dataset("t", shape=(n, 3), dtype=np.float64)
        if n_landmarks is not None:
            f.create_dataset("landmarks", shape=(n, n_landmarks, 3), dtype=np.float32)

    def write(self, start: int, *, ids: Sequence[str], vertices: np.ndarray, q: np.ndarray | None = None,
              t: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> None:
        """Write samples ``[start, start + len(ids))``."""
        stop = start + len(ids)
        if start < 0 or stop > self.n:
            raise IndexError(f"samples [{start}, {stop}) outside [0, {self.n})")
        f = self._file
        f["ids"][start:stop] = np.asarray([str(i) for i in ids], dtype=object)
        f["vertices"][start:stop] = np.asarray(vertices, np.float32)
        for name, value in (("q", q), ("t", t), ("landmarks", landmarks)):
            if (value is None) != (name not in f):
                raise ValueError(f"{name} {'missing' if value is None else 'not declared'} for this writer")
            if value is not None:
                f[name][start:stop] = value
        self._written[start:stop] = True

    def close(self, success: bool) -> None:
        """Close the file: rename it onto ``path`` on success, else remove it."""
        self._file.close()
        missing = int((~self._written).sum())
        if success and not missing:
            self._context.__exit__(None, None, None)
            return
        error = RuntimeError(f"{self.path}: {missing} samples were never written" if success else "aborted")
        self._context.__exit__(RuntimeError, error, None)  # removes the temporary file
        if success:
            raise error

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)


def write_submission(path: str | Path, ids: Sequence[str], vertices: np.ndarray, *, method: str,
                     faces: np.ndarray | None = None, landmark_indices: np.ndarray | None = None,
                     q: np.ndarray | None = None, t: np.ndarray | None = None,
                     landmarks: np.ndarray | None = None) -> Path:
    """Write an HDF5 submission from in-memory arrays (``vertices (N,V,3)`` mm); return ``path``.

    For large submissions use :class:`SubmissionWriter` chunk by chunk.
    """
    vertices = np.asarray(vertices)
    if (q is None) != (t is None):
        raise ValueError("give q and t together")
    with SubmissionWriter(path, n=len(ids), n_vertices=vertices.shape[1], method=method, faces=faces,
                          landmark_indices=landmark_indices, with_pose=q is not None,
                          n_landmarks=None if landmarks is None else np.shape(landmarks)[1]) as writer:
        writer.write(0, ids=ids, vertices=vertices, q=q, t=t, landmarks=landmarks)
    return Path(path)


# ---------------------------------------------------------------------------------------- reading
class SubmissionSample(NamedTuple):
    """One dataset id and its prediction; every field but ``id`` is None when it is missing.

    Attributes:
        id: the dataset id.
        vertices: ``(V,3)`` float64, head frame, mm.
        faces: ``(F,3)`` int64 triangles of the prediction (the dataset's when not given).
        landmarks: ``(L,3)`` float64 mm in the dataset's landmark order (NaN where undefined),
            or None when the submission gives no way to get them.
        q: ``(4,)`` float64 unit quaternion (w, x, y, z), head → camera, or None.
        t: ``(3,)`` float64 mm, or None.
    """

    id: str
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    q: np.ndarray | None = None
    t: np.ndarray | None = None


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _landmarks_from_indices(vertices: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``(L,3)`` vertices at ``indices``; NaN rows where the index is −1."""
    out = np.full((len(indices), 3), np.nan)
    defined = indices >= 0
    out[defined] = vertices[indices[defined]]
    return out


def _unit(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


class Submission:
    """A validated submission opened for reading, lazily, in the dataset's order.

    Iterate ``submission.samples(chunk_size)`` (or the object itself) to get one
    :class:`SubmissionSample` per dataset id, missing ids included (their fields are None).
    HDF5 vertices are read a chunk of rows at a time (never the whole ``(N,V,3)`` array); folder
    meshes one file at a time. Close it (or use ``with``) to release the file and, for a zip, the
    temporary folder.

    Attributes:
        path: the submission path given; ``kind``: ``"hdf5"`` or ``"folder"``; ``method``;
        ``version``; ``dataset_ids`` (expected, dataset order); ``submitted_ids`` (file order);
        ``missing_ids``; ``completion`` (scored / expected); ``has_pose``; ``faces`` (shared
        ``(F,3)`` topology, None for a folder); ``landmark_indices`` (or None); ``sha256``;
        ``report`` (the :class:`ValidationReport`, when validated).
    """

    def __init__(self, path: str | Path, dataset: FaceDataset, *, report: ValidationReport | None = None):
        self.path = Path(path)
        self.report = report
        self.dataset_ids = list(dataset.ids)
        self._dataset_faces = np.asarray(dataset.faces, np.int64)
        self._dataset_landmarks = np.asarray(dataset.landmark_indices, np.int64)
        self._dataset_n_vertices = dataset_vertex_count(dataset)
        self._stack = contextlib.ExitStack()
        self._finalizer = weakref.finalize(self, self._stack.close)
        try:
            source = self._stack.enter_context(open_source(self.path))
            self.kind = source.kind
            if self.kind == "hdf5":
                self._open_hdf5(source.root)
            else:
                self._open_folder(source.root)
            self.sha256 = submission_sha256(self.path)
        except BaseException:
            self.close()
            raise
        present = set(self._row_of)
        self.missing_ids = [i for i in self.dataset_ids if i not in present]
        self.n_scored = len(self.dataset_ids) - len(self.missing_ids)
        self.completion = self.n_scored / len(self.dataset_ids) if self.dataset_ids else 0.0

    # ---------------------------------------------------------------- opening
    def _open_hdf5(self, path: Path) -> None:
        try:
            f = self._stack.enter_context(h5py.File(path, "r"))
            self._h5 = f
            self.method = _decode(f.attrs.get("method", ""))
            self.version = int(f.attrs["version"])
            self.submitted_ids = [_decode(v) for v in f["ids"][()]]
            self.n_vertices = int(f["vertices"].shape[1])
            self.faces = np.asarray(f["faces"][()], np.int64) if "faces" in f else self._dataset_faces
            given = None if "landmark_indices" not in f else np.asarray(f["landmark_indices"][()], np.int64)
            self.has_pose = "q" in f and "t" in f
            self._q = _unit(np.asarray(f["q"][()], np.float64)) if self.has_pose else None
            self._t = np.asarray(f["t"][()], np.float64) if self.has_pose else None
            self._landmarks = np.asarray(f["landmarks"][()], np.float64) if "landmarks" in f else None
        except (OSError, KeyError, ValueError) as error:
            raise InputFileError(path, f"unreadable submission ({error}); run `facebench submission validate`") from None
        same_topology = ("faces" not in f or np.array_equal(self.faces, self._dataset_faces))
        if given is None and same_topology and self.n_vertices == self._dataset_vertex_count():
            given = self._dataset_landmarks
        self.landmark_indices = given
        self._row_of = {i: row for row, i in enumerate(self.submitted_ids)}

    def _open_folder(self, folder: Path) -> None:
        manifest = read_manifest(folder)
        self.method = str(manifest.get("method", ""))
        self.version = int(manifest.get("version", -1))
        listing = list_folder_meshes(folder)
        self._paths = {i: paths[0] for i, paths in listing.meshes.items()}
        self.submitted_ids = list(self._paths)
        self.faces = None
        self.n_vertices = None
        indices = manifest.get("landmark_indices")
        self.landmark_indices = None if indices is None else np.asarray(indices, np.int64)
        self._manifest_q = manifest.get("q") or {}
        self._manifest_t = manifest.get("t") or {}
        self._manifest_landmarks = manifest.get("landmarks") or {}
        self.has_pose = bool(self._manifest_q) and bool(self._manifest_t)
        self._row_of = dict.fromkeys(self._paths, 0)

    def _dataset_vertex_count(self) -> int:
        return self._dataset_n_vertices

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.dataset_ids)

    def __iter__(self) -> Iterator[SubmissionSample]:
        return self.samples()

    def samples(self, chunk_size: int = 64) -> Iterator[SubmissionSample]:
        """One :class:`SubmissionSample` per dataset id, in dataset order (missing ids included),
        reading at most ``chunk_size`` HDF5 rows at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        for start in range(0, len(self.dataset_ids), chunk_size):
            ids = self.dataset_ids[start:start + chunk_size]
            if self.kind == "hdf5":
                yield from self._hdf5_chunk(ids)
            else:
                yield from (self.get(i) for i in ids)

    def get(self, sample_id: str) -> SubmissionSample:
        """The prediction for one id (fields None when the submission has none)."""
        if sample_id not in self._row_of:
            return SubmissionSample(sample_id)
        if self.kind == "hdf5":
            return next(iter(self._hdf5_chunk([sample_id])))
        mesh = read_mesh(self._paths[sample_id])
        vertices, faces = mesh.vertices, mesh.faces
        q = t = None
        if self.has_pose:
            q = _unit(np.asarray(self._manifest_q[sample_id], np.float64))
            t = np.asarray(self._manifest_t[sample_id], np.float64)
        if sample_id in self._manifest_landmarks:
            landmarks = np.asarray(self._manifest_landmarks[sample_id], np.float64)
        elif self.landmark_indices is not None:
            landmarks = _landmarks_from_indices(vertices, self.landmark_indices)
        elif len(vertices) == self._dataset_vertex_count() and np.array_equal(faces, self._dataset_faces):
            landmarks = _landmarks_from_indices(vertices, self._dataset_landmarks)
        else:
            landmarks = None
        return SubmissionSample(sample_id, vertices, faces, landmarks, q, t)

    def _read_rows(self, rows: list[int]) -> dict[int, np.ndarray]:
        """Vertices of the given submission rows: one slice when they are close together, else
        row by row (h5py reads a slice far faster than scattered rows)."""
        if not rows:
            return {}
        ordered = sorted(set(rows))
        first, last = ordered[0], ordered[-1]
        dataset = self._h5["vertices"]
        if last - first + 1 <= 2 * len(ordered) + 8:
            block = dataset[first:last + 1]
            return {r: block[r - first] for r in ordered}
        return {r: dataset[r] for r in ordered}

    def _hdf5_chunk(self, ids: list[str]) -> Iterator[SubmissionSample]:
        rows = {i: self._row_of[i] for i in ids if i in self._row_of}
        block = self._read_rows(list(rows.values()))
        for sample_id in ids:
            if sample_id not in rows:
                yield SubmissionSample(sample_id)
                continue
            row = rows[sample_id]
            vertices = np.asarray(block[row], np.float64)
            if self._landmarks is not None:
                landmarks = self._landmarks[row]
            elif self.landmark_indices is not None:
                landmarks = _landmarks_from_indices(vertices, self.landmark_indices)
            else:
                landmarks = None
            q = None if self._q is None else self._q[row]
            t = None if self._t is None else self._t[row]
            yield SubmissionSample(sample_id, vertices, self.faces, landmarks, q, t)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the HDF5 file and remove a zip's temporary folder (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Submission:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def load_submission(path: str | Path, dataset: FaceDataset | str | Path, *, validate: bool = True,
                    require_pose: bool = False, topology: str = "dataset") -> Submission:
    """Validate a submission against ``dataset`` and open it for reading.

    Args:
        path: ``.h5`` file, folder with ``manifest.json``, or ``.zip`` of either.
        dataset: the :class:`FaceDataset` (or its path) the predictions are for.
        validate: run :func:`facebench.benchmark.validation.validate_submission` first and refuse
            an invalid submission (skip only for a submission validated just before).
        require_pose, topology: passed to the validation.

    Returns:
        A :class:`Submission` (close it, or use it as a context manager).

    Raises:
        InvalidSubmission: the validation found errors (``error.report`` lists them all).
        InputFileError: the dataset cannot be read.
    """
    from facebench.benchmark.validation import InvalidSubmission, validate_submission
    from facebench.datasets.dataset_file import FaceDataset

    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset(dataset)
    report = None
    if validate:
        report = validate_submission(path, dataset, require_pose=require_pose, topology=topology)
        if not report.ok:
            raise InvalidSubmission(report)
    return Submission(path, dataset, report=report)


def dataset_vertex_count(dataset: FaceDataset) -> int:
    """Vertices per sample ``V`` of a dataset's ground truth (from the ``vertices`` shape)."""
    return dataset.n_vertices

