"""Surrey Face Model (SFM) loader: eos' cereal binary ``MorphableModel`` files, parsed in Python.

Layout (eos ``MorphableModel`` class version 1, cereal ``BinaryArchive``, little-endian), as
written by eos for ``share/sfm_shape_3448.bin`` and checked byte-for-byte against that file:

``uint32 class_version (=1)`` then ``PcaModel shape_model``, ``PcaModel color_model``,
``vector<array<double,2>> texture_coordinates``. A ``PcaModel`` (no class version) is
``mean, orthonormal_pca_basis, eigenvalues`` (Eigen matrices) and ``vector<array<int,3>>
triangle_list``. An Eigen matrix is ``int32 rows, int32 cols`` then ``rows*cols`` float32 in
column-major order; a ``vector`` is a ``uint64`` count then its elements; an ``array`` has no
count; a ``string`` is a ``uint64`` length then its bytes.

Expression blendshapes (``expression_blendshapes_3448.bin``) are ``vector<Blendshape>`` with
``Blendshape = {string name, VectorXf deformation (3V)}`` (no class version).

The eigenvalues are PCA variances of the orthonormal basis: std = sqrt(eigenvalue). The SFM is in
mm and already in the facebench head frame (+x subject's left: iBUG 37, the subject's right eye
outer corner, is at x = -46 mm; +y up; the nose tip is the most frontal vertex), with the origin
a few mm behind the nose tip. The shape-only file has an empty colour model: its reflectance is
transferred from the synthetic model (:func:`with_synthetic_reflectance`), aligned on the
iBUG landmarks of ``landmark_mapping`` (eos' ``ibug_to_sfm.txt``); without a mapping it is a
constant albedo.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from facebench.errors import ModelFileError
from facebench.models.bfm import (
    colour_model_to_reflectance,
    describe_origin,
    file_sha256_prefix,
    landmarks_from_mapping,
    orient_faces_outward,
    require_file,
    unit_column_basis,
)
from facebench.models.morphable_model import MorphableModel, empty_basis
from facebench.models.reflectance_transfer import constant_reflectance, with_synthetic_reflectance

#: The eos MorphableModel class version this reader understands.
EOS_MODEL_VERSION = 1


class _Truncated(Exception):
    """Raised by :class:`CerealReader` when the bytes end early."""


class CerealReader:
    """Sequential reader of a cereal ``BinaryArchive`` held in memory (little-endian)."""

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise _Truncated(f"needs {n} bytes at offset {self.offset}, {self.remaining} left")
        view = memoryview(self.data)[self.offset:self.offset + n]
        self.offset += n
        return view

    def scalar(self, fmt: str):
        """One ``struct`` value (``"<I"``, ``"<i"``, ``"<Q"``...)."""
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def count(self, item_size: int) -> int:
        """A ``uint64`` element count, checked against the bytes left."""
        n = self.scalar("<Q")
        if n * item_size > self.remaining:
            raise _Truncated(f"count {n} at offset {self.offset - 8} exceeds the {self.remaining} bytes left")
        return n

    def string(self) -> str:
        n = self.count(1)
        return bytes(self._take(n)).decode("utf-8", errors="replace")

    def eigen_matrix(self) -> np.ndarray:
        """An Eigen float32 matrix ``(rows, cols)`` (stored column-major)."""
        rows, cols = self.scalar("<i"), self.scalar("<i")
        if rows < 0 or cols < 0:
            raise _Truncated(f"negative matrix size {rows}x{cols} at offset {self.offset - 8}")
        flat = np.frombuffer(self._take(4 * rows * cols), dtype="<f4")
        return flat.reshape(cols, rows).T.astype(np.float32)

    def int_triples(self) -> np.ndarray:
        n = self.count(12)
        return np.frombuffer(self._take(12 * n), dtype="<i4").reshape(n, 3).astype(np.int64)

    def double_pairs(self) -> np.ndarray:
        n = self.count(16)
        return np.frombuffer(self._take(16 * n), dtype="<f8").reshape(n, 2)


def _read_pca_model(reader: CerealReader) -> dict:
    return {
        "mean": reader.eigen_matrix(),
        "basis": reader.eigen_matrix(),
        "eigenvalues": reader.eigen_matrix(),
        "triangles": reader.int_triples(),
    }


def read_eos_model(path: str | Path) -> dict:
    """Parse an eos (version 1) cereal model file into raw arrays.

    Returns:
        ``{"shape": pca, "color": pca, "texture_coordinates": (N,2)}`` where each ``pca`` holds
        ``mean (3V,1)``, ``basis (3V,K)``, ``eigenvalues (K,1)`` float32 and ``triangles (F,3)``.

    Raises:
        ModelFileError: missing file, unknown class version, truncated or trailing bytes.
    """
    path = require_file(path)
    reader = CerealReader(path.read_bytes())
    try:
        version = reader.scalar("<I")
        if version != EOS_MODEL_VERSION:
            raise ModelFileError(
                path, f"unsupported eos MorphableModel class version {version} (this reader reads "
                      f"version {EOS_MODEL_VERSION}, the format of eos' sfm_shape_*.bin)")
        model = {"shape": _read_pca_model(reader), "color": _read_pca_model(reader),
                 "texture_coordinates": reader.double_pairs()}
    except _Truncated as error:
        raise ModelFileError(path, f"truncated or malformed eos model file: {error}") from None
    if reader.remaining:
        raise ModelFileError(path, f"{reader.remaining} unexpected trailing bytes after the eos model")
    return model


def read_eos_blendshapes(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Parse an eos cereal ``vector<Blendshape>`` file into ``[(name, deformation (3V,))]``.

    Raises:
        ModelFileError: missing, truncated or malformed file, a deformation that is not a vector.
    """
    path = require_file(path)
    reader = CerealReader(path.read_bytes())
    shapes = []
    try:
        n = reader.count(16)
        for _ in range(n):
            name = reader.string()
            deformation = reader.eigen_matrix()
            if deformation.ndim != 2 or deformation.shape[1] != 1:
                raise ModelFileError(path, f"blendshape {name!r}: deformation must be (3V,1), got {deformation.shape}")
            shapes.append((name, deformation[:, 0]))
    except _Truncated as error:
        raise ModelFileError(path, f"truncated or malformed eos blendshapes file: {error}") from None
    if reader.remaining:
        raise ModelFileError(path, f"{reader.remaining} unexpected trailing bytes after the blendshapes")
    if not shapes:
        raise ModelFileError(path, "the blendshapes file holds no blendshapes")
    return shapes


def _check_pca(pca: dict, path: Path, what: str, n_vertices: int | None) -> int:
    """Check shapes of a parsed PcaModel; return its vertex count."""
    mean, basis, eigenvalues = pca["mean"], pca["basis"], pca["eigenvalues"]
    if mean.shape[1:] != (1,) or mean.shape[0] % 3 or mean.shape[0] < 9:
        raise ModelFileError(path, f"{what} mean must be (3V,1), got {mean.shape}")
    V = mean.shape[0] // 3
    if n_vertices is not None and V != n_vertices:
        raise ModelFileError(path, f"{what} model has {V} vertices, the shape model {n_vertices}")
    if basis.shape[0] != 3 * V or basis.shape[1] == 0:
        raise ModelFileError(path, f"{what} basis must be ({3 * V}, K), got {basis.shape}")
    if eigenvalues.shape != (basis.shape[1], 1):
        raise ModelFileError(path, f"{what} eigenvalues must be ({basis.shape[1]},1), got {eigenvalues.shape}")
    for field in ("mean", "basis", "eigenvalues"):
        if not np.all(np.isfinite(pca[field])):
            raise ModelFileError(path, f"{what} {field} holds NaN or Inf values")
    if np.any(eigenvalues < 0):
        raise ModelFileError(path, f"{what} eigenvalues (variances) must be non-negative")
    return V


def _expression_space(expression_path, n_vertices: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Blendshapes -> unit columns ``(V,3,K)`` with std = deformation norm (mm), and names."""
    expression_path = Path(expression_path)
    shapes = read_eos_blendshapes(expression_path)
    names = [name for name, _ in shapes]
    for name, deformation in shapes:
        if deformation.shape[0] != 3 * n_vertices:
            raise ModelFileError(expression_path, f"blendshape {name!r} has {deformation.shape[0] // 3} "
                                                  f"vertices, the model {n_vertices}")
        if not np.all(np.isfinite(deformation)):
            raise ModelFileError(expression_path, f"blendshape {name!r} holds NaN or Inf values")
    columns = np.stack([d for _, d in shapes], axis=1)
    ones = np.ones(len(shapes))
    basis, std, _ = unit_column_basis(columns, ones, expression_path, "blendshapes")
    return basis, std, names


def load_sfm(
    path: str | Path,
    *,
    landmark_mapping: str | Path | None = None,
    expression_path: str | Path | None = None,
    color_space: str = "srgb",
) -> MorphableModel:
    """Read a Surrey Face Model eos ``.bin`` file (plus optional blendshapes) in mm, head frame.

    Args:
        path: e.g. ``sfm_shape_3448.bin`` (3448 vertices, 63 shape modes, 6736 triangles).
        landmark_mapping: eos ``ibug_to_sfm.txt``: the iBUG-68 vertices (the contour is unmapped).
        expression_path: eos ``expression_blendshapes_*.bin``: each blendshape ``d_k`` becomes a
            unit column ``d_k/|d_k|`` with std ``|d_k|`` mm, so an expression coefficient is the
            blendshape weight (eos' convention); names in ``metadata["expression_names"]``.
        color_space: encoding of a full SFM's colour model (``"srgb"`` or ``"linear"``).

    Raises:
        ModelFileError: unreadable, truncated or malformed files; blendshapes of another size.
    """
    path = require_file(path)
    raw = read_eos_model(path)
    shape, color = raw["shape"], raw["color"]
    V = _check_pca(shape, path, "shape", None)
    faces = shape["triangles"]
    if len(faces) == 0 or faces.min() < 0 or faces.max() >= V:
        raise ModelFileError(path, f"shape triangle list is empty or indexes vertices outside [0, {V})")

    mean = shape["mean"][:, 0].reshape(V, 3)
    identity_basis, identity_std, shape_info = unit_column_basis(
        shape["basis"], np.sqrt(shape["eigenvalues"][:, 0].astype(np.float64)), path, "shape basis")
    faces, flipped = orient_faces_outward(mean, faces)
    if expression_path is not None:
        expression_basis, expression_std, expression_names = _expression_space(expression_path, V)
    else:
        (expression_basis, expression_std), expression_names = empty_basis(V), []

    has_color = color["mean"].size > 0
    metadata = {
        "format": f"eos cereal MorphableModel v{EOS_MODEL_VERSION}",
        "units_converted": "none: the file is in mm",
        "frame": "file frame kept: already +x subject's left, +y up, +z forward",
        "faces_flipped": flipped,
        "identity_basis": shape_info,
        "eigenvalues": "variances of the orthonormal basis; std = sqrt",
        "texture_coordinates": int(len(raw["texture_coordinates"])),
        "expression_names": expression_names,
        "expression_source": None if expression_path is None else str(expression_path),
        "landmark_mapping": None if landmark_mapping is None else str(landmark_mapping),
    }
    fields = dict(
        name="sfm",
        mean=mean,
        faces=faces,
        identity_basis=identity_basis,
        identity_std=identity_std,
        expression_basis=expression_basis,
        expression_std=expression_std,
        landmark_indices=landmarks_from_mapping(landmark_mapping, V),
        version=file_sha256_prefix(path),
        origin=describe_origin(mean, "SFM model origin (a few mm behind the nose tip)"),
        source=str(path) if expression_path is None else f"{path}; {expression_path}",
        metadata=metadata,
    )
    if has_color:
        _check_pca(color, path, "color", V)
        color_basis, color_std, color_info = unit_column_basis(
            color["basis"], np.sqrt(color["eigenvalues"][:, 0].astype(np.float64)), path, "color basis")
        reflectance, source = colour_model_to_reflectance(
            color["mean"][:, 0].reshape(V, 3), color_basis, color_std, color_space, "SFM colour model, [0, 1]")
        metadata["reflectance_basis"] = color_info
        return MorphableModel(**fields, reflectance_source=source, **reflectance)
    placeholder = constant_reflectance(V)  # replaced by the transferred reflectance below
    return with_synthetic_reflectance(MorphableModel(**fields, **placeholder))
