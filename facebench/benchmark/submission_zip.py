"""Safe unpacking of a zip submission: every member checked before anything is extracted.

A **zip** of either layout (the ``.h5`` file, or the folder's files at the archive root or in one
top-level folder) is unpacked into a temporary folder only if every member stays inside the root
(no absolute path, no ``..``, no link or special file, no duplicate name), there are at most
:data:`MAX_ZIP_MEMBERS` members and their total uncompressed size is at most
:data:`MAX_UNZIPPED_BYTES` (counted while extracting, so lying headers do not help a zip bomb).

:func:`zip_member_problems` lists every reason to refuse an archive; :func:`safe_extract_zip`
refuses it (:class:`UnsafeArchiveError`, all problems listed) or extracts it while counting bytes.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from facebench.errors import InputFileError

__all__ = ["MAX_UNZIPPED_BYTES", "MAX_ZIP_MEMBERS", "MAX_ZIP_DEPTH", "MAX_ZIP_NAME", "UnsafeArchiveError",
           "zip_member_problems", "safe_extract_zip"]

#: Largest total uncompressed size of a zip submission, bytes (2 GiB).
MAX_UNZIPPED_BYTES = 2 * 1024**3
#: Most members a zip submission may hold.
MAX_ZIP_MEMBERS = 100_000
#: Deepest folder nesting of a member name (a submission needs 2: ``folder/<id>.ply``).
MAX_ZIP_DEPTH = 8
#: Longest member name (characters).
MAX_ZIP_NAME = 1024
_COPY_BLOCK = 1 << 20


class UnsafeArchiveError(InputFileError):
    """A zip submission that could write outside its folder or expand without bound.

    ``problems`` lists every offending member (not only the first).
    """

    def __init__(self, path: str | Path, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f"; ... and {len(self.problems) - 5} more" if len(self.problems) > 5 else "")
        super().__init__(path, f"unsafe zip archive refused, nothing extracted: {shown}")


def _member_mode(info: zipfile.ZipInfo) -> int:
    """The Unix file mode stored in a member (0 when the archiver stored none)."""
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def zip_member_problems(archive: zipfile.ZipFile, *, max_bytes: int = MAX_UNZIPPED_BYTES,
                        max_members: int = MAX_ZIP_MEMBERS) -> list[str]:
    """Every reason not to extract ``archive`` (empty list: safe), one string per problem.

    Refused: absolute names (``/x``, ``C:x``), ``..`` components, backslashes (ambiguous
    separators), names nested deeper than :data:`MAX_ZIP_DEPTH` or longer than
    :data:`MAX_ZIP_NAME`, encrypted members (flag bit 0: they cannot be read without a password),
    symbolic links and other non-regular members, duplicate names, more than ``max_members``
    members, and a declared uncompressed total above ``max_bytes``.
    """
    problems: list[str] = []
    infos = archive.infolist()
    if len(infos) > max_members:
        problems.append(f"{len(infos)} members (at most {max_members})")
    seen: set[str] = set()
    total = 0
    for info in infos[:max_members + 1]:  # the count is already refused: bound the work too
        name = info.filename
        shown = repr(name if len(name) <= 80 else name[:80] + "…")
        if len(name) > MAX_ZIP_NAME:
            problems.append(f"{shown}: member name of {len(name)} characters (at most {MAX_ZIP_NAME})")
            continue
        parts = PurePosixPath(name).parts
        if len(parts) > MAX_ZIP_DEPTH:
            problems.append(f"{shown}: nested {len(parts)} folders deep (at most {MAX_ZIP_DEPTH})")
        if info.flag_bits & 0x1:
            problems.append(f"{shown}: encrypted member (submissions must not be encrypted)")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problems.append(f"{shown}: absolute path")
        elif "\\" in name:
            problems.append(f"{shown}: backslash in member name")
        elif ".." in parts:
            problems.append(f"{shown}: path leaves the archive root ('..')")
        kind = stat.S_IFMT(_member_mode(info))  # 0: no file type stored (a plain file)
        if kind == stat.S_IFLNK:
            problems.append(f"{shown}: symbolic link")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problems.append(f"{shown}: not a regular file or folder")
        key = name.rstrip("/")
        if key in seen:
            problems.append(f"{shown}: duplicate member name")
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error,
            UnicodeDecodeError) as error:  # RuntimeError: encrypted; zlib.error: corrupt deflate stream
        raise InputFileError(path, f"unreadable zip archive ({error})") from None
