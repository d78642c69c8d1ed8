"""Open HDF5 files made by strangers without ever reading outside them.

HDF5 can make a file read other files: **external links** (a member that lives in another file),
**virtual datasets** (a dataset stitched from other files' datasets), **external raw storage** (a
dataset whose bytes are any file on disk, ``/etc/passwd`` included), user-defined **filters** (a
plugin library loaded to decode a chunk), and **object/region references**. None of facebench's
formats (datasets, scan datasets, submissions, BFM 2017 models) uses any of them, so
:func:`open_hdf5` inspects the whole tree (metadata only, no array is read) before handing the file
out and refuses, with one :class:`~facebench.errors.InputFileError` line naming the file and the
member, any file that has:

- an external link, or a soft link whose target does not resolve inside the file through hard
  links (dangling, cyclic, or through an external link);
- a virtual dataset, a dataset with external raw storage, or a filter other than the ones HDF5
  and h5py ship (deflate/gzip, shuffle, fletcher32, szip, n-bit, scale-offset, lzf);
- a dataset or attribute whose type is compound, a reference, an opaque blob, or a variable-length
  sequence of anything but strings; a committed (named) datatype;
- more than :data:`MAX_OBJECTS` members (a bound on the work of the inspection itself).

:func:`checked_dataset` then checks one member's kind (integer, float, string, bool), rank, shape
and size before the caller reads it, and :func:`parse_json` parses a JSON attribute with bounded
length and nesting depth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facebench.errors import InputFileError

__all__ = ["MAX_OBJECTS", "MAX_JSON_CHARS", "MAX_JSON_DEPTH", "KNOWN_FILTERS", "open_hdf5", "check_structure",
           "checked_dataset", "check_json_bounds", "parse_json"]

#: Most members (groups, datasets, links) a file may hold.
MAX_OBJECTS = 2_000_000
#: Longest JSON text accepted in an attribute (characters).
MAX_JSON_CHARS = 16 * 2**20
#: Deepest nesting of JSON arrays/objects accepted in an attribute.
MAX_JSON_DEPTH = 64
#: Filter ids that HDF5 or h5py provide (no plugin is ever loaded for these).
KNOWN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                 32000: "lzf"}
_MAX_LINK_HOPS = 16

#: numpy dtype kinds accepted by :func:`checked_dataset` for each requested kind.
_KINDS = {"int": "iu", "float": "f", "number": "iuf", "bool": "b", "string": "OSU"}


def open_hdf5(path: str | Path) -> h5py.File:
    """Open ``path`` read-only after :func:`check_structure`; the caller closes it (``with``).

    InputFileError (one line): missing file, not HDF5 / unreadable metadata, or a structure that
    could make HDF5 read outside the file (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputFileError(path, f"not a readable HDF5 file ({first[:160]})") from None
    try:
        check_structure(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def _refuse(path: Path, member: str, why: str) -> InputFileError:
    return InputFileError(path, f"member {member!r}: {why}; refused (facebench never reads outside the file)")


def _check_type(path: Path, member: str, dtype: np.dtype, what: str) -> None:
    if dtype.names is not None:
        raise _refuse(path, member, f"{what} has a compound type")
    if h5py.check_dtype(ref=dtype) is not None:
        raise _refuse(path, member, f"{what} holds object or region references")
    if dtype.kind == "V":
        raise _refuse(path, member, f"{what} has an opaque type")
    if dtype.kind == "O":
        if h5py.check_string_dtype(dtype) is not None:
            return
        base = h5py.check_vlen_dtype(dtype)
        if base is not None and h5py.check_string_dtype(base) is not None:
            return
        raise _refuse(path, member, f"{what} has a variable-length type other than strings")
    if dtype.subdtype is not None:
        _check_type(path, member, dtype.subdtype[0], what)


def _check_attributes(obj, path: Path, member: str, check_types: bool) -> None:
    if not check_types:
        return
    for name in obj.attrs:
        try:
            dtype = obj.attrs.get_id(name).dtype
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
            raise InputFileError(path, f"member {member!r}: attribute {name!r} is unreadable "
                                       f"({type(error).__name__})") from None
        _check_type(path, f"{member}@{name}", dtype, "attribute")


def _check_dataset(dataset: h5py.Dataset, path: Path, member: str, check_types: bool) -> None:
    if dataset.is_virtual:
        raise _refuse(path, member, "virtual dataset (its data live in other files)")
    if dataset.external:
        raise _refuse(path, member, "dataset with external raw storage (its bytes live in another file)")
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = int(plist.get_filter(i)[0])
        if code not in KNOWN_FILTERS:
            raise _refuse(path, member, f"dataset needs the unknown filter {code} (a plugin library)")
    if check_types:
        _check_type(path, member, dataset.dtype, "dataset")


def _resolve_in_file(handle: h5py.File, target: str, path: Path, member: str, hops: int) -> None:
    """Walk ``target`` from the root through hard links only (soft links followed, bounded)."""
    if hops > _MAX_LINK_HOPS:
        raise _refuse(path, member, "soft links form a cycle or a chain too long")
    if not target.startswith("/"):
        parent = member.rsplit("/", 1)[0] if "/" in member else ""
        target = f"/{parent}/{target}" if parent else f"/{target}"
    group: Any = handle
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for k, part in enumerate(parts):
        if not isinstance(group, h5py.Group):
            raise _refuse(path, member, f"soft link to {target!r} passes through a dataset")
        link = group.get(part, getlink=True)
        if link is None:
            raise _refuse(path, member, f"soft link to {target!r}, which does not exist")
        if isinstance(link, h5py.ExternalLink):
            raise _refuse(path, member, f"soft link to {target!r} goes through an external link")
        if isinstance(link, h5py.SoftLink):
            rest = "/".join(parts[k + 1:])
            base = "/" + "/".join(parts[:k]) if k else ""
            followed = link.path if link.path.startswith("/") else f"{base}/{link.path}"
            _resolve_in_file(handle, f"{followed}/{rest}" if rest else followed, path, member, hops + 1)
            return
        group = group[part]


def check_structure(handle: h5py.File, path: str | Path, *, check_types: bool = True) -> None:
    """Inspect every link, group, dataset and attribute of an open file (module docstring); raise
    InputFileError naming the first offending member. Reads metadata only.

    ``check_types=False`` leaves the value types (compound, reference, opaque, variable-length) to
    the caller, who reports them among other problems (submission validation); links, storage and
    filters are always checked."""
    path = Path(path)
    _check_attributes(handle, path, "/", check_types)
    pending: list[tuple[h5py.Group, str]] = [(handle, "")]
    seen = 0
    while pending:
        group, prefix = pending.pop()
        try:
            names = list(group.keys())
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise InputFileError(path, f"member {prefix or '/'!r}: unreadable group ({type(error).__name__})") from None
        for name in names:
            seen += 1
            if seen > MAX_OBJECTS:
                raise InputFileError(path, f"more than {MAX_OBJECTS} members; refused")
            member = f"{prefix}/{name}" if prefix else name
            try:
                link = group.get(name, getlink=True)
            except (OSError, RuntimeError, KeyError, ValueError) as error:
                raise InputFileError(path, f"member {member!r}: unreadable link ({type(error).__name__})") from None
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(path, member, f"external link to {link.filename!r}")
            if isinstance(link, h5py.SoftLink):
                _resolve_in_file(handle, link.path, path, member, 0)
                continue  # its target is inspected where it lives
            if not isinstance(link, h5py.HardLink):
                raise _refuse(path, member, f"link of an unknown class {type(link).__name__}")
            try:
                obj = group[name]
            except (OSError, RuntimeError, KeyError, ValueError) as error:
                raise InputFileError(path, f"member {member!r}: unreadable ({type(error).__name__})") from None
            if isinstance(obj, h5py.Datatype):
                raise _refuse(path, member, "committed datatype")
            _check_attributes(obj, path, member, check_types)
            if isinstance(obj, h5py.Dataset):
                _check_dataset(obj, path, member, check_types)
            elif isinstance(obj, h5py.Group):
                pending.append((obj, member))


def checked_dataset(handle: h5py.File | h5py.Group, name: str, *, kind: str, path: str | Path,
                    shape: Sequence[int | None] | None = None, ndim: int | None = None,
                    max_elements: int | None = None) -> h5py.Dataset:
    """The dataset ``name`` of ``handle`` once its declared type and size fit the caller's needs.

    ``kind``: ``"int"``, ``"float"``, ``"number"``, ``"bool"`` or ``"string"``; ``shape``: the
    expected shape, ``None`` for a free dimension; ``ndim``: the expected rank when ``shape`` is not
    given; ``max_elements``: an upper bound on the element count. Nothing is read. InputFileError
    (one line, naming the member) when it is missing, not a dataset, or does not fit.
    """
    path = Path(path)
    prefix = handle.name.strip("/") if isinstance(handle.name, str) else ""
    member = f"{prefix}/{name}" if prefix else name
    obj = handle.get(name)
    if obj is None:
        raise InputFileError(path, f"member {member!r} is missing")
    if not isinstance(obj, h5py.Dataset):
        raise InputFileError(path, f"member {member!r} is not a dataset")
    dtype = obj.dtype
    if dtype.kind not in _KINDS[kind]:
        raise InputFileError(path, f"member {member!r} has type {dtype}, expected {kind} values")
    got = tuple(int(s) for s in obj.shape) if obj.shape is not None else ()
    if shape is not None:
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
            raise InputFileError(path, f"member {member!r} has shape {got}, expected {want}")
    elif ndim is not None and len(got) != ndim:
        raise InputFileError(path, f"member {member!r} has {len(got)} dimensions, expected {ndim}")
    if max_elements is not None and int(np.prod(got, dtype=object)) > max_elements:
        raise InputFileError(path, f"member {member!r} declares {int(np.prod(got, dtype=object))} elements, "
                                   f"more than the {max_elements} this file can need")
    return obj


def _depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def check_json_bounds(text: str, *, path: str | Path | None, member: str, max_chars: int = MAX_JSON_CHARS,
                      max_depth: int = MAX_JSON_DEPTH) -> None:
    """InputFileError (one line, naming ``member``) when a JSON text is longer than ``max_chars`` or
    nests arrays/objects deeper than ``max_depth`` (checked without parsing)."""
    if len(text) > max_chars:
        raise InputFileError(path, f"attribute {member!r} holds {len(text)} characters of JSON, "
                                   f"more than {max_chars}")
    if _depth(text) > max_depth:
        raise InputFileError(path, f"attribute {member!r} nests JSON deeper than {max_depth} levels")


def parse_json(text: Any, *, path: str | Path | None, member: str, max_chars: int = MAX_JSON_CHARS,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON attribute (``str`` or ``bytes``) with bounded length and nesting depth.

    InputFileError (one line, naming ``member``) when it is not text, too long, nested deeper than
    ``max_depth``, or not valid JSON.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InputFileError(path, f"attribute {member!r} is not UTF-8 text") from None
    if not isinstance(text, str):
        raise InputFileError(path, f"attribute {member!r} is not JSON text")
    check_json_bounds(text, path=path, member=member, max_chars=max_chars, max_depth=max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InputFileError(path, f"attribute {member!r} is not valid JSON ({str(error)[:80]})") from None
