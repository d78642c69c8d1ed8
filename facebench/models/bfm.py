"""Loaders for the Basel Face Models the user obtains from the University of Basel.

* **BFM2009** (``01_MorphableModel.mat``, Paysan et al. 2009): MATLAB v5/v7 (read with
  :func:`scipy.io.loadmat`) or v7.3 (HDF5, read with h5py; MATLAB stores arrays transposed there).
  Fields ``shapeMU (3V,1)``, ``shapePC (3V,K)``, ``shapeEV (K,1)`` (standard deviations),
  ``texMU``, ``texPC``, ``texEV`` (per-vertex colours 0..255), ``tl (F,3)`` 1-based triangles.
  Coordinates are interleaved ``x0,y0,z0,x1,...`` in **micrometres** (face width ~1.5e5): divided
  by 1000. No expression space.
* **BFM2017** (statismo HDF5, ``model2017-1_*.h5``, Gerig et al. 2018): groups
  ``shape|color|expression/model/{mean (3V,), pcaBasis (3V,K), pcaVariance (K,), noiseVariance}``
  and ``.../representer/{points (3,V), cells (3,F)}``; ``metadata/landmarks/json``. Coordinates
  are in **millimetres** (its own landmarks: chin tip y = -73 mm, trichion y = +85 mm); colours in
  [0, 1]. statismo's ``pcaBasis`` columns are orthonormal and ``pcaVariance`` are variances.

Frame: both BFMs already use the facebench head frame (+x toward the subject's left, +y up,
+z out of the face, right-handed; BFM2017's landmark ``left.eye.bottom`` lies at x = +31 mm); the
origin is Basel's model origin, inside the head (for BFM2017 about 100 mm behind the nose tip,
level with the ears); each model's ``origin`` gives the measured nose-tip position. Triangles: BFM2009's ``tl`` is
wound clockwise seen from outside (eos' converter swaps two indices for the same reason); every
loader here re-orients triangles so normals point out of the surface (see
:func:`orient_faces_outward`) and records whether it flipped them.

Reflectance: Basel colours are per-vertex sRGB-encoded colours (display values, not albedo).
With ``color_space="srgb"`` (default) the mean is decoded to linear RGB exactly and the basis
is linearized at the mean (first-order: each column scaled by the sRGB decoding slope, then
re-normalized to unit norm with the norm moved into the std). ``color_space="linear"`` keeps the
numbers as they are (only 0..255 -> [0, 1]).

This module also holds the small helpers the other file loaders (:mod:`.sfm`, :mod:`.flame`)
share: file hashes, unit-column bases, face orientation, landmark resolution, origin wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facebench.errors import InputFileError, InvalidInputError, ModelFileError
from facebench.hashing import file_sha256
from facebench.models.landmark_mapping import read_landmark_mapping
from facebench.models.morphable_model import N_LANDMARKS, MorphableModel, empty_basis
from facebench.safe_hdf5 import open_hdf5, parse_json

#: Column norms farther than this from 1 count as "not orthonormal" (the basis is normalized).
UNIT_NORM_TOLERANCE = 1e-3

#: Colour encodings accepted by the loaders of per-vertex colour models.
COLOR_SPACES = ("srgb", "linear")

_BFM2009_FIELDS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")


# ================================================================== shared loader helpers
def require_file(path: str | Path) -> Path:
    """``path`` as a Path; ModelFileError if it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    return path


def file_sha256_prefix(path: Path, n_chars: int = 12) -> str:
    """First ``n_chars`` hex characters of the file's sha256 (the model ``version``)."""
    return file_sha256(path)[:n_chars]


def unit_column_basis(
    components: np.ndarray, std: np.ndarray, path: Path, field: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Split PCA components ``(3V, K)`` (x0,y0,z0,x1,...) into unit columns and their std.

    Where a column's norm ``n`` is not 1 (beyond :data:`UNIT_NORM_TOLERANCE`) it becomes
    ``column / n`` with std ``std * n``, which leaves ``basis @ (coef * std)`` unchanged.

    Returns:
        ``basis (V, 3, K)`` float32 (unit columns), ``std (K,)`` float32 in the components' units
        times ``std``'s units, and info ``{"column_norm_min", "column_norm_max", "normalized"}``.

    Raises:
        ModelFileError: a zero or non-finite column.
    """
    components = np.asarray(components, dtype=np.float32)
    norms = np.linalg.norm(components.astype(np.float64), axis=0)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ModelFileError(path, f"{field}: a basis column is zero or not finite")
    normalized = bool(np.any(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE))
    if normalized:
        components = components / norms.astype(np.float32)
        std = np.asarray(std, dtype=np.float64) * norms
    info = {"column_norm_min": float(norms.min()), "column_norm_max": float(norms.max()),
            "normalized": normalized}
    n_vertices = components.shape[0] // 3
    basis = components.reshape(n_vertices, 3, components.shape[1])
    return basis, np.asarray(std, dtype=np.float32), info


def orient_faces_outward(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, bool]:
    """Re-wind ``faces (F,3)`` so that triangle normals point away from the vertex centroid.

    Uses the signed volume of the cones from the centroid to each triangle (positive when
    counter-clockwise seen from outside); holds for closed heads and for face masks, whose
    centroid lies behind the surface. Returns the faces (int32) and whether they were flipped.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = (v[f[:, k]] - v.mean(axis=0) for k in range(3))
    volume = float(np.einsum("ij,ij->", a, np.cross(b, c)))
    if volume < 0:
        return f[:, [0, 2, 1]].astype(np.int32), True
    return f.astype(np.int32), False


def landmarks_from_mapping(landmark_mapping: str | Path | None, n_vertices: int) -> np.ndarray:
    """``(68,)`` int32 iBUG vertex indices from an eos ``ibug_to_*.txt`` file, or all -1."""
    if landmark_mapping is None:
        return np.full(N_LANDMARKS, -1, dtype=np.int32)
    return read_landmark_mapping(landmark_mapping, n_vertices)


def describe_origin(mean: np.ndarray, where: str) -> str:
    """``where`` plus the measured position of the most frontal vertex (the nose tip), in mm."""
    tip = np.asarray(mean, dtype=np.float64)[int(np.argmax(mean[:, 2]))]
    return f"{where}; the most frontal vertex (nose tip) is at ({tip[0]:.1f}, {tip[1]:.1f}, {tip[2]:.1f}) mm"


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (clipped first)."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def srgb_to_linear_slope(values: np.ndarray) -> np.ndarray:
    """Derivative of :func:`srgb_to_linear` at ``values`` (clipped to [0, 1])."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, 1.0 / 12.92, (2.4 / 1.055) * ((c + 0.055) / 1.055) ** 1.4)


def colour_model_to_reflectance(
    mean01: np.ndarray, basis: np.ndarray, std01: np.ndarray, color_space: str, what: str
) -> tuple[dict, str]:
    """Reflectance fields from a per-vertex colour PCA model given in [0, 1] units.

    Args:
        mean01: ``(V, 3)`` mean colour in [0, 1] (encoded as ``color_space`` says).
        basis: ``(V, 3, K)`` unit columns; std01: ``(K,)`` std in [0, 1] units.
        color_space: ``"srgb"`` (decode the mean, linearize the basis at the mean) or ``"linear"``.
        what: the model's words for ``reflectance_source``.

    Returns:
        ``({"reflectance_mean", "reflectance_basis", "reflectance_std"}, reflectance_source)``.
    """
    if color_space not in COLOR_SPACES:
        raise InvalidInputError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}")
    if color_space == "linear":
        fields = {"reflectance_mean": mean01, "reflectance_basis": basis, "reflectance_std": std01}
        return fields, f"model ({what}, values used as linear RGB without decoding)"
    slope = srgb_to_linear_slope(mean01)[:, :, None]
    scaled = basis.astype(np.float64) * slope
    norms = np.linalg.norm(scaled.reshape(-1, scaled.shape[2]), axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    fields = {
        "reflectance_mean": srgb_to_linear(mean01).astype(np.float32),
        "reflectance_basis": (scaled / norms).astype(np.float32),
        "reflectance_std": (np.asarray(std01, dtype=np.float64) * norms).astype(np.float32),
    }
    source = (f"model ({what}): sRGB mean decoded to linear RGB; basis linearized at the mean "
              "(first-order sRGB decoding slope, re-normalized)")
    return fields, source


def _check_finite(array: np.ndarray, path: Path, field: str) -> None:
    if not np.all(np.isfinite(array)):
        raise ModelFileError(path, f"{field} holds NaN or Inf values")


def _faces_from(cells: np.ndarray, n_vertices: int, path: Path, field: str, one_based: bool) -> np.ndarray:
    """``(F,3)`` int64 triangles from an integer-valued array, checked against ``n_vertices``."""
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 3 or len(cells) == 0:
        raise ModelFileError(path, f"{field} must be (F,3) triangles, got shape {cells.shape}")
    if cells.dtype.kind == "f":
        _check_finite(cells, path, field)
        if np.any(cells != np.round(cells)):
            raise ModelFileError(path, f"{field} holds non-integer vertex indices")
    elif cells.dtype.kind not in "iu":
        raise ModelFileError(path, f"{field} must hold integer vertex indices, got {cells.dtype}")
    faces = cells.astype(np.int64) - (1 if one_based else 0)
    low = 1 if one_based else 0
    if faces.min() < 0 or faces.max() >= n_vertices:
        raise ModelFileError(
            path, f"{field} indexes vertices outside [{low}, {n_vertices - 1 + low}] "
                  f"(found {faces.min() + low}..{faces.max() + low})")
    return faces


# ================================================================== BFM2009
def _read_mat_fields(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named arrays of a MATLAB file as MATLAB shapes (v7.3/HDF5 arrays transposed back)."""
    import h5py
    import scipy.io

    try:
        if h5py.is_hdf5(path):
            with open_hdf5(path) as handle:
                out = {}
                for name in names:
                    if name in handle and isinstance(handle[name], h5py.Dataset):
                        out[name] = np.asarray(handle[name][()]).T
                return out
        data = scipy.io.loadmat(str(path), variable_names=list(names))
    except InputFileError as error:  # a hostile HDF5 structure (safe_hdf5)
        raise ModelFileError(path, error.message) from None
    except Exception as error:  # scipy/h5py raise ValueError, OSError, TypeError... on junk
        raise ModelFileError(path, f"not a readable MATLAB .mat file ({type(error).__name__}: {error})") from None
    return {name: np.asarray(data[name]) for name in names if name in data}


def _column(fields: dict, name: str, rows: int | None, path: Path) -> np.ndarray:
    """A MATLAB column vector ``(rows, 1)`` as float64 ``(rows,)``."""
    value = fields[name]
    if value.ndim != 2 or value.shape[1] != 1 or (rows is not None and value.shape[0] != rows):
        want = f"({rows},1)" if rows is not None else "(n,1)"
        raise ModelFileError(path, f"{name} must be a column vector {want}, got shape {value.shape}")
    if value.dtype.kind not in "fiu":
        raise ModelFileError(path, f"{name} must be numeric, got {value.dtype}")
    value = value[:, 0].astype(np.float64)
    _check_finite(value, path, name)
    return value


def _matrix(fields: dict, name: str, rows: int, cols: int | None, path: Path) -> np.ndarray:
    value = fields[name]
    if value.ndim != 2 or value.shape[0] != rows or (cols is not None and value.shape[1] != cols):
        raise ModelFileError(path, f"{name} must be ({rows}, {cols or 'K'}), got shape {value.shape}")
    if value.dtype.kind not in "fiu" or value.shape[1] == 0:
        raise ModelFileError(path, f"{name} must be a non-empty numeric matrix")
    _check_finite(value, path, name)
    return value


def load_bfm2009(
    path: str | Path, *, landmark_mapping: str | Path | None = None, color_space: str = "srgb"
) -> MorphableModel:
    """Read BFM2009's ``01_MorphableModel.mat`` into a :class:`MorphableModel` (head frame, mm).

    Args:
        path: the ``.mat`` file (MATLAB v5/v7 or v7.3).
        landmark_mapping: an eos ``ibug_to_bfm2009.txt`` giving the iBUG-68 vertices (the file has
            none of its own); without it every landmark is -1.
        color_space: how to read the colours, see the module docstring.

    Returns:
        mean ``(53490, 3)`` mm, 199 identity modes (std in mm), no expression modes, 199
        reflectance modes; ``version`` is the file's sha256 prefix.

    Raises:
        ModelFileError: missing/unreadable file, missing field, wrong shape, NaN, negative std,
            triangle indices outside 1..V.
    """
    path = require_file(path)
    if color_space not in COLOR_SPACES:
        raise InvalidInputError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}")
    fields = _read_mat_fields(path, _BFM2009_FIELDS)
    missing = [name for name in _BFM2009_FIELDS if name not in fields]
    if missing:
        raise ModelFileError(path, f"not a BFM2009 model: missing field(s) {', '.join(missing)}")

    shape_mu = _column(fields, "shapeMU", None, path)
    if len(shape_mu) % 3 or len(shape_mu) < 9:
        raise ModelFileError(path, f"shapeMU length {len(shape_mu)} is not 3 x (number of vertices)")
    n = len(shape_mu)
    V = n // 3
    shape_pc = _matrix(fields, "shapePC", n, None, path)
    shape_ev = _column(fields, "shapeEV", shape_pc.shape[1], path)
    tex_mu = _column(fields, "texMU", n, path)
    tex_pc = _matrix(fields, "texPC", n, None, path)
    tex_ev = _column(fields, "texEV", tex_pc.shape[1], path)
    for name, ev in (("shapeEV", shape_ev), ("texEV", tex_ev)):
        if np.any(ev < 0):
            raise ModelFileError(path, f"{name} has negative standard deviations")
    faces = _faces_from(fields["tl"], V, path, "tl", one_based=True)

    mean = (shape_mu / 1000.0).reshape(V, 3)  # µm -> mm
    identity_basis, identity_std, shape_info = unit_column_basis(shape_pc, shape_ev / 1000.0, path, "shapePC")
    tex_basis, tex_std, tex_info = unit_column_basis(tex_pc, tex_ev / 255.0, path, "texPC")
    reflectance, reflectance_source = colour_model_to_reflectance(
        (tex_mu / 255.0).reshape(V, 3), tex_basis, tex_std, color_space, "BFM2009 texMU/texPC/texEV, 0..255 -> [0, 1]")
    faces, flipped = orient_faces_outward(mean, faces)
    expression_basis, expression_std = empty_basis(V)
    return MorphableModel(
        name="bfm2009",
        mean=mean,
        faces=faces,
        identity_basis=identity_basis,
        identity_std=identity_std,
        expression_basis=expression_basis,
        expression_std=expression_std,
        landmark_indices=landmarks_from_mapping(landmark_mapping, V),
        version=file_sha256_prefix(path),
        origin=describe_origin(mean, "BFM2009 model origin (Basel's, inside the head)"),
        reflectance_source=reflectance_source,
        source=str(path),
        metadata={
            "format": "BFM2009 01_MorphableModel.mat",
            "units_converted": "coordinates and shapeEV micrometres -> mm (/1000); colours 0..255 -> [0, 1] (/255)",
            "frame": "file frame kept: already +x subject's left, +y up, +z forward",
            "faces_flipped": flipped,
            "identity_basis": shape_info,
            "reflectance_basis": tex_info,
            "color_space": color_space,
            "landmark_mapping": None if landmark_mapping is None else str(landmark_mapping),
        },
        **reflectance,
    )


# ================================================================== BFM2017
def _h5_dataset(handle, key: str, path: Path) -> np.ndarray:
    import h5py

    if key not in handle or not isinstance(handle[key], h5py.Dataset):
        raise ModelFileError(path, f"not a statismo model: missing dataset {key}")
    try:
        value = np.asarray(handle[key][()])
    except Exception as error:  # truncated chunks, unreadable filters
        raise ModelFileError(path, f"cannot read {key} ({type(error).__name__}: {error})") from None
    return value


def _statismo_pca(handle, group: str, path: Path, n_vertices: int | None) -> dict[str, Any]:
    """mean ``(3V,)``, pcaBasis ``(3V,K)``, pcaVariance ``(K,)``, points ``(3,V)``, cells ``(3,F)``."""
    out: dict[str, Any] = {}
    for key in ("model/mean", "model/pcaBasis", "model/pcaVariance", "representer/points"):
        value = _h5_dataset(handle, f"{group}/{key}", path)
        if value.dtype.kind not in "fiu":
            raise ModelFileError(path, f"{group}/{key} must be numeric, got {value.dtype}")
        _check_finite(value, path, f"{group}/{key}")
        out[key.split("/")[1]] = value.astype(np.float64)
    points = out["points"]
    if points.ndim != 2 or points.shape[0] != 3 or points.shape[1] < 3:
        raise ModelFileError(path, f"{group}/representer/points must be (3,V), got shape {points.shape}")
    V = points.shape[1]
    if n_vertices is not None and V != n_vertices:
        raise ModelFileError(path, f"{group}/representer has {V} points, the shape model {n_vertices}")
    mean, basis, variance = out["mean"], out["pcaBasis"], out["pcaVariance"]
    if mean.shape != (3 * V,):
        raise ModelFileError(path, f"{group}/model/mean must be ({3 * V},), got shape {mean.shape}")
    if basis.ndim != 2 or basis.shape[0] != 3 * V or basis.shape[1] == 0:
        raise ModelFileError(path, f"{group}/model/pcaBasis must be ({3 * V}, K), got shape {basis.shape}")
    if variance.shape != (basis.shape[1],):
        raise ModelFileError(path, f"{group}/model/pcaVariance must be ({basis.shape[1]},), got shape {variance.shape}")
    if np.any(variance < 0):
        raise ModelFileError(path, f"{group}/model/pcaVariance has negative variances")
    noise = None
    if f"{group}/model/noiseVariance" in handle:
        noise = float(np.asarray(handle[f"{group}/model/noiseVariance"][()]).reshape(-1)[0])
    cells = None
    if f"{group}/representer/cells" in handle:
        cells = _h5_dataset(handle, f"{group}/representer/cells", path)
        if cells.ndim != 2 or cells.shape[0] != 3:
            raise ModelFileError(path, f"{group}/representer/cells must be (3,F), got shape {cells.shape}")
    return {"V": V, "mean": mean, "basis": basis, "std": np.sqrt(variance), "noise": noise, "cells": cells}


def _statismo_landmarks(handle, path: Path) -> list[dict]:
    """``metadata/landmarks/json`` as a list of ``{"id": str, "coordinates": [x, y, z]}`` (or [])."""
    key = "metadata/landmarks/json"
    if key not in handle:
        return []
    raw = np.asarray(handle[key][()])
    text = raw.reshape(-1)[0] if raw.ndim else raw[()]
    if isinstance(text, (bytes, np.bytes_)):
        text = bytes(text).decode("utf-8")
    entries = parse_json(str(text), path=path, member=key)
    try:
        parsed = [{"id": str(e["id"]), "coordinates": [float(c) for c in e["coordinates"]]} for e in entries]
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(path, f"{key} is not a JSON list of {{id, coordinates}} ({error})") from None
    if any(len(e["coordinates"]) != 3 for e in parsed):
        raise ModelFileError(path, f"{key}: every landmark needs 3 coordinates")
    return parsed


def _named_landmarks(entries: list[dict], reference: np.ndarray, max_distance_mm: float) -> tuple[dict, dict, list]:
    """Nearest vertex of each named landmark; those farther than ``max_distance_mm`` are rejected."""
    from scipy.spatial import cKDTree

    if not entries:
        return {}, {}, []
    coords = np.array([e["coordinates"] for e in entries], dtype=np.float64)
    distance, nearest = cKDTree(reference).query(coords)
    named, distances, rejected = {}, {}, []
    for entry, d, index in zip(entries, distance, nearest):
        if d > max_distance_mm:
            rejected.append(entry["id"])
            continue
        named[entry["id"]] = int(index)
        distances[entry["id"]] = round(float(d), 4)
    return named, distances, rejected


def load_bfm2017(
    path: str | Path,
    *,
    landmark_mapping: str | Path | None = None,
    color_space: str = "srgb",
    max_landmark_distance_mm: float = 5.0,
) -> MorphableModel:
    """Read a BFM2017 statismo HDF5 file (``model2017-1_bfm_nomouth.h5``...) in mm, head frame.

    The model mean is ``shape/model/mean + expression/model/mean`` (statismo's expression model
    is a PCA of expression deformations with a non-zero mean, which eos and scalismo add as
    well); std = sqrt(pcaVariance). The file's named landmarks (``metadata/landmarks/json``)
    become ``named_landmarks`` by nearest vertex of the neutral shape mean, rejecting those
    farther than ``max_landmark_distance_mm`` (distances kept in ``metadata``); the iBUG-68
    indices come from ``landmark_mapping`` (eos ``ibug_to_bfm2017-1_bfm_nomouth.txt``).

    Raises:
        ModelFileError: unreadable/truncated HDF5, missing group or dataset, wrong shape, NaN,
            negative variance, representers of different sizes, cells out of range.
    """

    path = require_file(path)
    if color_space not in COLOR_SPACES:
        raise InvalidInputError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}")
    try:
        handle = open_hdf5(path)
    except InputFileError as error:
        raise ModelFileError(path, error.message) from None
    with handle:
        shape = _statismo_pca(handle, "shape", path, None)
        V = shape["V"]
        if shape["cells"] is None:
            raise ModelFileError(path, "not a statismo model: missing dataset shape/representer/cells")
        color = _statismo_pca(handle, "color", path, V)
        expression = _statismo_pca(handle, "expression", path, V)
        if expression["cells"] is not None and expression["cells"].shape != shape["cells"].shape:
            raise ModelFileError(path, "expression/representer/cells differ in size from shape/representer/cells")
        entries = _statismo_landmarks(handle, path)
    faces = _faces_from(shape["cells"].T, V, path, "shape/representer/cells", one_based=False)

    neutral = shape["mean"].reshape(V, 3)
    mean = neutral + expression["mean"].reshape(V, 3)
    identity_basis, identity_std, shape_info = unit_column_basis(
        shape["basis"], shape["std"], path, "shape/model/pcaBasis")
    expression_basis, expression_std, expr_info = unit_column_basis(
        expression["basis"], expression["std"], path, "expression/model/pcaBasis")
    color_basis, color_std, color_info = unit_column_basis(color["basis"], color["std"], path, "color/model/pcaBasis")
    reflectance, reflectance_source = colour_model_to_reflectance(
        color["mean"].reshape(V, 3), color_basis, color_std, color_space, "BFM2017 color model, values in [0, 1]")
    faces, flipped = orient_faces_outward(mean, faces)
    named, distances, rejected = _named_landmarks(entries, neutral, max_landmark_distance_mm)
    return MorphableModel(
        name="bfm2017",
        mean=mean,
        faces=faces,
        identity_basis=identity_basis,
        identity_std=identity_std,
        expression_basis=expression_basis,
        expression_std=expression_std,
        landmark_indices=landmarks_from_mapping(landmark_mapping, V),
        version=file_sha256_prefix(path),
        origin=describe_origin(mean, "BFM2017 model origin (Basel's, inside the head, level with the ears)"),
        reflectance_source=reflectance_source,
        source=str(path),
        named_landmarks=named,
        metadata={
            "format": "BFM2017 statismo HDF5",
            "units_converted": "none: the file is in mm; colours already in [0, 1]",
            "frame": "file frame kept: already +x subject's left, +y up, +z forward",
            "faces_flipped": flipped,
            "mean": "shape/model/mean + expression/model/mean",
            "expression_mean_rms_mm": float(np.sqrt(np.mean(expression["mean"] ** 2))),
            "noise_variance": {"shape": shape["noise"], "expression": expression["noise"], "color": color["noise"]},
            "identity_basis": shape_info,
            "expression_basis": expr_info,
            "reflectance_basis": color_info,
            "color_space": color_space,
            "named_landmark_distance_mm": distances,
            "named_landmarks_rejected": rejected,
            "max_landmark_distance_mm": max_landmark_distance_mm,
            "landmark_mapping": None if landmark_mapping is None else str(landmark_mapping),
        },
        **reflectance,
    )
