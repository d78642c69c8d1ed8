"""Triangle-mesh files: Wavefront OBJ and PLY (read and write), and the reader of any mesh file.

Frames and units are the file's: these functions neither move nor scale vertices. Faces come
back as 0-based triangles ``(F,3)`` in the file's winding; polygons with more than three corners
are fan-triangulated ``(p0, p_i, p_i+1)``, which keeps their winding.

- :func:`read_obj` parses with numpy (a 25k-vertex, 2.5 MB OBJ reads in well under 0.1 s);
  ``v x y z [w]`` and ``v x y z r g b`` lines, ``f`` corners written ``a``, ``a/b``, ``a/b/c`` or
  ``a//c``, negative (relative) indices, polygons of any size, comments, blank lines, ``\\r\\n``.
- :func:`read_mesh` reads ``.obj``, ``.ply`` (ASCII, binary little or big endian) and VRML 2.0
  ``.wrl`` (``IndexedFaceSet`` geometry, :func:`facebench.meshio_vrml.read_vrml`).
- :func:`write_mesh` writes ``.obj`` (ASCII) or ``.ply`` (binary little endian, float32 vertices,
  uchar colours), atomically: a temporary file in the same folder, then ``os.replace``.

Every reader returns a :class:`facebench.mesh.ObjMesh` (also importable from here, with
:func:`facebench.mesh.fan_triangulate`).

Bad files raise :class:`facebench.errors.InputFileError` naming the file (and the line when the
format is line-based).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from facebench.atomic import atomic_path
from facebench.errors import InputFileError
from facebench.mesh import Mesh, ObjMesh, fan_triangulate, read_mesh_bytes
from facebench.meshio_vrml import read_vrml

__all__ = ["ObjMesh", "Mesh", "fan_triangulate", "read_obj", "read_ply", "read_mesh", "write_mesh",
           "MESH_SUFFIXES", "READ_SUFFIXES"]

#: File suffixes :func:`read_mesh` and :func:`write_mesh` understand.
MESH_SUFFIXES = (".obj", ".ply")
#: File suffixes :func:`read_mesh` reads (VRML is read only).
READ_SUFFIXES = (".obj", ".ply", ".wrl")


# ---------------------------------------------------------------------------------------- OBJ
_SLASH_TAIL = re.compile(r"/\S*")


def read_obj(path: str | Path, *, texcoords: bool = True) -> ObjMesh:
    """Read a Wavefront OBJ file into a triangle mesh (see :class:`ObjMesh`).

    Only ``v``, ``vt`` and ``f`` statements are used; others (``vn``, ``g``, ``usemtl``, ...)
    are skipped. Colours (``v x y z r g b``) above 1 are taken as 0..255 and divided by 255.
    ``texcoords=False`` skips the ``vt`` lines (faster when only geometry is needed).

    Raises:
        InputFileError: missing/unreadable file, no vertices, no faces, non-numeric values,
            a face with fewer than 3 corners, index 0 or out of range (with its line number).
    """
    path = Path(path)
    text = _read_text(path)
    v_body = _STATEMENT["v"].findall(text)
    if not v_body:
        raise InputFileError(path, "no vertices ('v' lines) in OBJ file")
    f_body = _STATEMENT["f"].findall(text)
    if not f_body:
        raise InputFileError(path, "no faces ('f' lines) in OBJ file")
    vertices, colors = _parse_vertices(path, text, v_body)
    vt_body = _STATEMENT["vt"].findall(text) if texcoords else []
    uv = _parse_texcoords(vt_body) if vt_body else None
    corners, sizes = _parse_faces(path, text, f_body, len(v_body))
    faces, face_polygon = fan_triangulate(corners, sizes)
    return ObjMesh(vertices, faces, sizes, face_polygon, colors, uv, path)


#: The arguments (comment removed) of each ``v``, ``vt`` and ``f`` statement, in file order.
_STATEMENT = {kind: re.compile(rf"^[ \t]*{kind}[ \t]+([^\n#]*)", re.M) for kind in ("v", "vt", "f")}


def _read_text(path: Path) -> str:
    text = read_mesh_bytes(path).decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _line_of(text: str, kind: str, index: int) -> tuple[int, str]:
    """1-based line number and text of the ``index``-th ``kind`` statement (for error messages)."""
    seen = -1
    for number, line in enumerate(text.split("\n"), start=1):
        words = line.split(None, 1)
        if words and words[0] == kind:
            seen += 1
            if seen == index:
                return number, line.strip()
    return 0, ""


def _fail(path: Path, text: str, kind: str, index: int, message: str) -> InputFileError:
    number, line = _line_of(text, kind, index)
    return InputFileError(path, f"line {number}: {message} in {line!r}")


def _parse_vertices(path: Path, text: str, body: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    counts = np.fromiter(map(len, map(str.split, body)), dtype=np.int64, count=len(body))
    if np.any(counts < 3):
        raise _fail(path, text, "v", int(np.flatnonzero(counts < 3)[0]), "a vertex needs x y z")
    width = 6 if np.all(counts >= 6) else 3
    try:
        if np.all(counts == counts[0]):
            values = np.array(" ".join(body).split(), dtype=np.float64).reshape(len(body), -1)[:, :width]
        else:
            values = np.array([line.split()[:width] for line in body], dtype=np.float64)
    except ValueError:
        for i, line in enumerate(body):
            try:
                [float(t) for t in line.split()]
            except ValueError:
                raise _fail(path, text, "v", i, "non-numeric value") from None
        raise InputFileError(path, "unreadable vertex values") from None
    finite = np.all(np.isfinite(values), axis=1)
    if not finite.all():
        raise _fail(path, text, "v", int(np.flatnonzero(~finite)[0]), "non-finite vertex value")
    colors = None
    if width == 6:
        colors = values[:, 3:6]
        if colors.max(initial=0.0) > 1.0:
            colors = colors / 255.0
    return np.ascontiguousarray(values[:, :3]), colors


def _parse_texcoords(body: list[str]) -> np.ndarray | None:
    try:
        flat = np.array(" ".join(body).split(), dtype=np.float64)
        if flat.size in (2 * len(body), 3 * len(body)):  # all "vt u v" or all "vt u v w"
            return flat.reshape(len(body), -1)[:, :2].copy()
        return np.array([line.split()[:2] for line in body], dtype=np.float64).reshape(len(body), 2)
    except ValueError:
        return None  # malformed texture coordinates are not needed for geometry


def _parse_faces(path: Path, text: str, body: list[str], n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat 0-based corner indices and polygon sizes of the ``f`` statements."""
    lines = _SLASH_TAIL.sub("", "\n".join(body)).split("\n")
    sizes = np.fromiter(map(len, map(str.split, lines)), dtype=np.int64, count=len(lines))
    if np.any(sizes < 3):
        raise _fail(path, text, "f", int(np.flatnonzero(sizes < 3)[0]), "a face needs at least 3 corners")
    try:
        raw = np.array(list(map(int, " ".join(lines).split())), dtype=np.int64)
    except (ValueError, OverflowError):
        for i, line in enumerate(lines):
            for token in line.split():
                if not re.fullmatch(r"[+-]?\d+", token):
                    raise _fail(path, text, "f", i, f"face index {token!r} is not an integer") from None
        raise InputFileError(path, "unreadable face indices") from None
    corners = raw - 1
    if np.any(raw < 0):  # relative indices count back from the vertices defined so far
        before = np.repeat(_vertices_before_faces(text), sizes)
        corners = np.where(raw < 0, before + raw, corners)
    bad = (raw == 0) | (corners < 0) | (corners >= n_vertices)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        polygon = int(np.searchsorted(np.cumsum(sizes), position, side="right"))
        raise _fail(path, text, "f", polygon,
                    f"face index {int(raw[position])} out of range (1..{n_vertices} or negative)")
    return corners, sizes


def _vertices_before_faces(text: str) -> np.ndarray:
    """For each ``f`` statement, how many ``v`` statements precede it."""
    counts, seen = [], 0
    for match in re.finditer(r"^[ \t]*(v|f)[ \t]", text, re.M):
        if match.group(1) == "v":
            seen += 1
        else:
            counts.append(seen)
    return np.asarray(counts, dtype=np.int64)


# ---------------------------------------------------------------------------------------- PLY
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclasses.dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str, str | None]]  # (name, value type, list count type or None)


def read_ply(path: str | Path) -> ObjMesh:
    """Read a PLY mesh (ASCII or binary): ``vertex`` x, y, z [red, green, blue] and ``face``
    ``vertex_indices`` (or ``vertex_index``) lists, fan-triangulated.

    Vertices come back as float64 holding exactly the stored values (float32 files round-trip
    exactly). Colours are uchar/255 (or floats as stored).

    Raises:
        InputFileError: missing file, bad header, truncated data, indices out of range.
    """
    path = Path(path)
    data = read_mesh_bytes(path)
    fmt, elements, offset = _ply_header(path, data)
    parsed: dict[str, dict[str, np.ndarray]] = {}
    if fmt == "ascii":
        tokens = data[offset:].split()
        position = 0
        for element in elements:
            parsed[element.name], position = _ply_ascii_element(path, element, tokens, position)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        for element in elements:
            parsed[element.name], offset = _ply_binary_element(path, element, data, offset, order)
    return _ply_mesh(path, parsed)


def _ply_header(path: Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputFileError(path, "not a PLY file (no 'ply' magic or no 'end_header')")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise InputFileError(path, "truncated PLY header")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = None, []
    for number, line in enumerate(header[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                count = int(words[2])
                if not 0 <= count <= len(data):  # every row takes at least one byte
                    raise InputFileError(path, f"PLY element '{words[1]}' declares {count} rows in a "
                                               f"{len(data)}-byte file")
                elements.append(_PlyElement(words[1], count, []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].properties.append((words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            elif words[0] == "property":
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]], None))
        except (IndexError, KeyError, ValueError):
            raise InputFileError(path, f"header line {number}: cannot parse {line!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputFileError(path, f"unsupported PLY format {fmt!r}")
    return fmt, elements, newline + 1


def _ply_binary_element(path: Path, element: _PlyElement, data: bytes, offset: int, order: str):
    """Arrays of one binary element (fast path for scalar rows and equal-length lists)."""
    props = element.properties
    if not any(kind for _, _, kind in props):
        dtype = np.dtype([(name, order + t) for name, t, _ in props])
        need = dtype.itemsize * element.count
        if offset + need > len(data):
            raise InputFileError(path, f"truncated PLY data in element '{element.name}'")
        table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
        return {name: table[name] for name, _, _ in props}, offset + need
    if len(props) == 1 and element.count > 0:
        name, value_t, count_t = props[0]
        if offset + np.dtype(count_t).itemsize > len(data):
            raise InputFileError(path, f"truncated PLY data in element '{element.name}'")
        n = int(np.frombuffer(data, dtype=order + count_t, count=1, offset=offset)[0])
        dtype = np.dtype([("n", order + count_t), ("v", order + value_t, (n,))])
        need = dtype.itemsize * element.count
        if offset + need <= len(data):
            table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
            if np.all(table["n"] == n):
                return {name: (_ply_indices(path, element, table["v"].reshape(-1)), np.full(element.count, n))}, \
                    offset + need
    return _ply_binary_general(path, element, data, offset, order)


def _ply_binary_general(path: Path, element: _PlyElement, data: bytes, offset: int, order: str):
    columns: dict[str, list] = {name: [] for name, _, _ in element.properties}
    sizes: dict[str, list] = {name: [] for name, _, kind in element.properties if kind}
    try:
        for _ in range(element.count):
            for name, value_t, count_t in element.properties:
                if count_t is None:
                    columns[name].append(np.frombuffer(data, order + value_t, 1, offset)[0])
                    offset += np.dtype(value_t).itemsize
                else:
                    n = int(np.frombuffer(data, order + count_t, 1, offset)[0])
                    offset += np.dtype(count_t).itemsize
                    columns[name].append(np.frombuffer(data, order + value_t, n, offset))
                    sizes[name].append(n)
                    offset += n * np.dtype(value_t).itemsize
    except ValueError:
        raise InputFileError(path, f"truncated PLY data in element '{element.name}'") from None
    out = {}
    for name, _, kind in element.properties:
        if kind:
            flat = np.concatenate(columns[name]) if columns[name] else np.zeros(0)
            out[name] = (_ply_indices(path, element, flat), np.asarray(sizes[name], np.int64))
        else:
            out[name] = np.asarray(columns[name])
    return out, offset


#: Largest magnitude accepted for a PLY list value (an index): beyond it, refused, never wrapped.
_MAX_PLY_INDEX = 2**62


def _ply_index(path: Path, element: _PlyElement, token: bytes) -> int:
    """One ASCII list value as an integer; InputFileError for NaN, ±Inf, fractions or huge values."""
    value = float(token)
    if not (math.isfinite(value) and value == int(value) and abs(value) < _MAX_PLY_INDEX):
        raise InputFileError(path, f"PLY element '{element.name}' holds the index {token[:40]!r}: not an integer "
                                   "in range")
    return int(value)


def _ply_indices(path: Path, element: _PlyElement, values: np.ndarray) -> np.ndarray:
    """Binary list values as int64; InputFileError for non-finite, fractional or huge floats."""
    if values.dtype.kind == "f" and values.size:
        bad = ~np.isfinite(values) | (np.abs(values) >= _MAX_PLY_INDEX)
        bad[~bad] |= values[~bad] != np.round(values[~bad])
        if bad.any():
            raise InputFileError(path, f"PLY element '{element.name}' holds the index {values[bad][0]!r}: not an "
                                       "integer in range")
    return values.astype(np.int64)


def _ply_ascii_element(path: Path, element: _PlyElement, tokens: list[bytes], position: int):
    columns: dict[str, list] = {name: [] for name, _, _ in element.properties}
    sizes: dict[str, list] = {name: [] for name, _, kind in element.properties if kind}
    try:
        for _ in range(element.count):
            for name, _value_t, count_t in element.properties:
                if count_t is None:
                    columns[name].append(float(tokens[position]))
                    position += 1
                else:
                    n = int(tokens[position])
                    columns[name].extend(_ply_index(path, element, t) for t in tokens[position + 1: position + 1 + n])
                    if position + 1 + n > len(tokens):
                        raise IndexError
                    sizes[name].append(n)
                    position += 1 + n
    except IndexError:
        raise InputFileError(path, f"truncated PLY data in element '{element.name}'") from None
    except ValueError:
        raise InputFileError(path, f"non-numeric PLY value in element '{element.name}'") from None
    out = {}
    for name, value_t, kind in element.properties:
        if kind:
            out[name] = (np.asarray(columns[name], np.int64), np.asarray(sizes[name], np.int64))
        else:
            out[name] = np.asarray(columns[name], dtype=value_t)
    return out, position


def _ply_mesh(path: Path, parsed: dict[str, dict]) -> ObjMesh:
    vertex = parsed.get("vertex")
    if not vertex or not all(k in vertex for k in "xyz") or len(vertex["x"]) == 0:
        raise InputFileError(path, "no vertices (element 'vertex' with x, y, z)")
    vertices = np.stack([np.asarray(vertex[k], np.float64) for k in "xyz"], axis=1)
    colors = None
    if all(k in vertex for k in ("red", "green", "blue")):
        rgb = np.stack([np.asarray(vertex[k]) for k in ("red", "green", "blue")], axis=1)
        colors = rgb.astype(np.float64) / (255.0 if rgb.dtype.kind in "iu" else 1.0)
    face = parsed.get("face", {})
    key = "vertex_indices" if "vertex_indices" in face else "vertex_index"
    if key not in face or not isinstance(face[key], tuple):
        raise InputFileError(path, "no faces (element 'face' with a 'vertex_indices' list)")
    corners, sizes = face[key]
    if np.any(sizes < 3):
        raise InputFileError(path, f"face {int(np.flatnonzero(sizes < 3)[0])} has fewer than 3 corners")
    if corners.size and (corners.min() < 0 or corners.max() >= len(vertices)):
        raise InputFileError(path, f"face index out of range (0..{len(vertices) - 1})")
    faces, face_polygon = fan_triangulate(corners, sizes)
    return ObjMesh(vertices, faces, sizes, face_polygon, colors, None, path)


# ---------------------------------------------------------------------------------------- any
def read_mesh(path: str | Path) -> ObjMesh:
    """Read an ``.obj``, ``.ply`` or ``.wrl`` mesh (by suffix); see :func:`read_obj`, :func:`read_ply`
    and :func:`facebench.meshio_vrml.read_vrml`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        return read_obj(path)
    if suffix == ".ply":
        return read_ply(path)
    if suffix == ".wrl":
        return read_vrml(path)
    raise InputFileError(path, f"unsupported mesh format {suffix!r} (expected .obj, .ply or .wrl)")


def write_mesh(path: str | Path, vertices, faces, colors=None) -> Path:
    """Write a triangle mesh to ``.obj`` or ``.ply`` atomically; return the path.

    Args:
        path: destination; the suffix picks the format (``.ply``: binary little endian).
        vertices: ``(V,3)`` coordinates (PLY stores float32; OBJ writes 9 significant digits,
            exact for float32 values).
        faces: ``(F,3)`` 0-based triangle indices.
        colors: optional ``(V,3)`` floats in [0, 1] (PLY: uchar, OBJ: ``v x y z r g b``).

    Raises:
        ValueError: bad shapes or indices; InputFileError: unsupported suffix.
    """
    path = Path(path)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V,3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F,3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face indices must lie in 0..{len(v) - 1}")
    c = None
    if colors is not None:
        c = np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0)
        if c.shape != v.shape:
            raise ValueError(f"colors must be (V,3) like vertices {v.shape}, got {c.shape}")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        payload = _obj_bytes(v, f, c)
    elif suffix == ".ply":
        payload = _ply_bytes(v, f, c)
    else:
        raise InputFileError(path, f"unsupported mesh format {suffix!r} (expected .obj or .ply)")
    _atomic_write(path, payload)
    return path


def _obj_bytes(v: np.ndarray, f: np.ndarray, c: np.ndarray | None) -> bytes:
    rows = v if c is None else np.concatenate([v, c], axis=1)
    fmt = " ".join(["%.9g"] * rows.shape[1])
    lines = ["# written by facebench"]
    lines += [("v " + fmt) % tuple(r) for r in rows.tolist()]
    lines += [f"f {a} {b} {d}" for a, b, d in (f + 1).tolist()]
    return ("\n".join(lines) + "\n").encode("ascii")


def _ply_bytes(v: np.ndarray, f: np.ndarray, c: np.ndarray | None) -> bytes:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if c is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    table = np.empty(len(v), dtype=fields)
    for i, k in enumerate("xyz"):
        table[k] = v[:, i]
    if c is not None:
        rgb = np.round(c * 255.0).astype(np.uint8)
        for i, k in enumerate(("red", "green", "blue")):
            table[k] = rgb[:, i]
    face_table = np.empty(len(f), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_table["n"] = 3
    face_table["v"] = f
    header = ["ply", "format binary_little_endian 1.0", "comment written by facebench",
              f"element vertex {len(v)}", "property float x", "property float y", "property float z"]
    if c is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + table.tobytes() + face_table.tobytes()


def _atomic_write(path: Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
