"""Opening a submission path: its layout (HDF5 or folder), a zip unpacked, its files listed, its hash.

:func:`open_source` resolves a ``.h5`` file, a folder with ``manifest.json`` or a ``.zip`` of
either (unpacked safely by :func:`facebench.benchmark.submission_zip.safe_extract_zip` into a
temporary folder removed on exit) to a :class:`SubmissionSource`. :func:`read_manifest` and
:func:`list_folder_meshes` read a folder submission's manifest and sort its entries;
:func:`submission_sha256` identifies a submission's content. The layouts are those of
:mod:`facebench.benchmark.submission_format`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facebench.benchmark.submission_format import H5_SUFFIXES, MANIFEST_NAME
from facebench.benchmark.submission_zip import MAX_UNZIPPED_BYTES, safe_extract_zip
from facebench.errors import InputFileError
from facebench.hashing import file_sha256
from facebench.meshio import MESH_SUFFIXES
from facebench.safe_hdf5 import check_json_bounds

__all__ = ["SubmissionSource", "open_source", "read_manifest", "FolderListing", "list_folder_meshes",
           "submission_sha256"]


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
            (:class:`~facebench.benchmark.submission_zip.UnsafeArchiveError`).
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


#: Largest manifest.json accepted (bytes); its nesting depth is bounded like JSON attributes
#: (:data:`facebench.safe_hdf5.MAX_JSON_DEPTH`).
MAX_MANIFEST_BYTES = 64 * 2**20


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
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise InputFileError(path, f"{size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may hold")
    try:
        text = path.read_text(encoding="utf-8")
        check_json_bounds(text, path=None, member=MANIFEST_NAME, max_chars=MAX_MANIFEST_BYTES)  # depth first
        data = json.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"unreadable ({error})") from None
    except json.JSONDecodeError as error:
        raise InputFileError(path, f"not valid JSON (line {error.lineno}: {error.msg})") from None
    except (RecursionError, ValueError) as error:  # bounds checked above; a float/int too large to parse
        raise InputFileError(path, f"not valid JSON ({type(error).__name__})") from None
    except InputFileError as error:
        raise InputFileError(path, error.message.replace(f"attribute {MANIFEST_NAME!r}", "it")) from None
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
