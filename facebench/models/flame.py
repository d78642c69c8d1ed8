"""FLAME loader: ``generic_model.pkl`` read without chumpy through a restricted unpickler.

FLAME (Li et al. 2017) ships as a Python 2 pickle of a dict whose arrays are partly chumpy
``Ch`` objects. chumpy's ``Ch`` is a plain new-style class without ``__reduce__``: protocol 2
pickles it as ``NEWOBJ(chumpy.ch.Ch)`` + ``BUILD(state)`` where ``state`` is ``Ch.__getstate__()``,
a copy of its ``__dict__`` without ``_parents``/``_cache``; the array lives under ``'x'`` (next to
``_dirty_vars`` (a set), ``_itr``, ``_depends_on_deps``, ``_make_dense``, ``_make_sparse``).
``J_regressor`` is a ``scipy.sparse.csc_matrix`` pickled the same way (state: ``data``,
``indices``, ``indptr``, ``_shape`` (``shape`` in old scipy), ``maxprint``...).

:class:`RestrictedUnpickler` resolves only: chumpy's ``Ch`` and scipy's csc/csr matrices
(to inert stub classes that only record their state), numpy's array/dtype/scalar
reconstruction functions, ``set``/``frozenset``, ``copyreg._reconstructor`` (protocol 0/1; it
only builds the stubs) and ``_codecs.encode`` (bytes in protocol-2 pickles written by
Python 3). Every other global is refused with :class:`ModelFileError` *before* anything is
called, so a pickle that reduces to ``os.system`` is never executed.

Keys used: ``v_template (5023,3)`` m, ``f (9976,3)``, ``shapedirs (5023,3,400)`` m: the first
``n_shape`` (300) columns are identity, the rest (100) expression. FLAME's shapedirs columns are
already scaled by their std (betas ~ N(0, 1)), so ``basis = column/|column|`` and
``std = |column|`` in mm, kept in the file's order (``metadata`` records whether std decreases).
``J_regressor`` gives the joints, recorded in ``metadata["joints_mm"]``; ``posedirs``,
``weights`` and ``kintree_table`` are only checked and summarized (a linear model has no pose).

Frame: FLAME is +x toward the subject's left, +y up, +z forward, like facebench; only metres ->
mm. Its origin is FLAME's model origin, which FLAME does not document: ``origin`` states the
measured positions of the root joint (``J_regressor @ v_template``) and of the nose tip relative
to it, and ``metadata["joints_mm"]`` holds every joint. Reflectance is
transferred from the synthetic model. Landmarks come only from ``landmark_mapping``: FLAME's
own landmark embedding (``flame_static_embedding.pkl``) is barycentric and a separate file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from facebench.errors import ModelFileError
from facebench.models.bfm import (
    describe_origin,
    file_sha256_prefix,
    landmarks_from_mapping,
    orient_faces_outward,
    require_file,
    unit_column_basis,
)
from facebench.models.morphable_model import MorphableModel, empty_basis
from facebench.models.reflectance_transfer import constant_reflectance, with_synthetic_reflectance

#: Default number of identity columns in ``shapedirs`` (FLAME 2017/2020: 300 shape + 100 expression).
N_SHAPE = 300


class ChumpyArray:
    """Inert stand-in for ``chumpy.ch.Ch``: keeps the pickled state; ``.array`` is its ``'x'``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def array(self) -> np.ndarray:
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or "x" not in state:
            raise ValueError("chumpy object without an 'x' array")
        return np.asarray(state["x"])


class SparseMatrixState:
    """Inert stand-in for scipy's ``csc_matrix``/``csr_matrix``: keeps the pickled state."""

    format = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_scipy(self) -> scipy.sparse.spmatrix:
        """The real scipy matrix (``data``, ``indices``, ``indptr``, ``_shape``/``shape``)."""
        state = getattr(self, "state", None)
        if not isinstance(state, dict):
            raise ValueError("sparse matrix without state")
        shape = state.get("_shape", state.get("shape"))
        if shape is None:
            raise ValueError("sparse matrix state has no shape")
        cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
        arrays = (np.asarray(state["data"]), np.asarray(state["indices"]), np.asarray(state["indptr"]))
        return cls(arrays, shape=tuple(int(s) for s in shape))


class CsrMatrixState(SparseMatrixState):
    format = "csr"


class _ObjectBase:
    """What ``__builtin__.object`` resolves to: a token for ``copyreg._reconstructor``, not callable."""


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` limited to the stub classes (protocol 0/1 pickles)."""
    if cls not in (ChumpyArray, SparseMatrixState, CsrMatrixState) or base is not _ObjectBase:
        raise pickle.UnpicklingError("copyreg._reconstructor called with a class other than the FLAME stubs")
    return cls.__new__(cls)


def _numpy_multiarray():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return multiarray


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {
        ("chumpy.ch", "Ch"): ChumpyArray,
        ("copy_reg", "_reconstructor"): _safe_reconstructor,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("__builtin__", "object"): _ObjectBase,
        ("builtins", "object"): _ObjectBase,
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("scipy.sparse.csc", "scipy.sparse._csc"):
        allowed[(module, "csc_matrix")] = SparseMatrixState
    for module in ("scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csr_matrix")] = CsrMatrixState
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("__builtin__", "builtins"):
        allowed[(module, "set")] = set
        allowed[(module, "frozenset")] = frozenset
    return allowed


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a FLAME model needs (see module docstring).

    Anything else raises ``_Refused`` from :meth:`find_class`, i.e. before it could be called.
    """

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def read_flame_pickle(path: str | Path) -> dict:
    """Unpickle a FLAME ``generic_model.pkl`` with :class:`RestrictedUnpickler` (``latin1``).

    Returns the top-level dict with chumpy objects replaced by numpy arrays and sparse stubs by
    scipy matrices.

    Raises:
        ModelFileError: refused globals (``"refusing to unpickle os.system: not a FLAME model
            class"``), truncated or malformed pickles, a top level that is not a dict.
    """
    path = require_file(path)
    try:
        with open(path, "rb") as handle:
            data = RestrictedUnpickler(handle, encoding="latin1").load()
    except _Refused as error:
        raise ModelFileError(path, f"refusing to unpickle {error}: not a FLAME model class") from None
    except Exception as error:  # EOFError, UnpicklingError, ValueError, TypeError on junk
        raise ModelFileError(path, f"not a readable FLAME pickle ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise ModelFileError(path, f"not a FLAME model: the pickle holds a {type(data).__name__}, not a dict")
    out = {}
    for key, value in data.items():
        try:
            if isinstance(value, ChumpyArray):
                value = value.array
            elif isinstance(value, SparseMatrixState):
                value = value.to_scipy()
        except Exception as error:
            raise ModelFileError(path, f"{key}: malformed pickled object ({error})") from None
        out[key] = value
    return out


def _array(data: dict, key: str, ndim: int, path: Path) -> np.ndarray:
    if key not in data:
        raise ModelFileError(path, f"not a FLAME model: missing key {key!r}")
    value = data[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu" or value.ndim != ndim:
        desc = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise ModelFileError(path, f"{key} must be a {ndim}-D numeric array, got {desc}")
    if not np.all(np.isfinite(value)):
        raise ModelFileError(path, f"{key} holds NaN or Inf values")
    return value


def _joints_mm(data: dict, template_mm: np.ndarray, path: Path) -> list[list[float]] | None:
    regressor = data.get("J_regressor")
    if regressor is None:
        return None
    if not scipy.sparse.issparse(regressor):
        regressor = np.asarray(regressor) if isinstance(regressor, np.ndarray) else None
    if regressor is None or regressor.ndim != 2 or regressor.shape[1] != len(template_mm):
        raise ModelFileError(path, f"J_regressor must be (J, {len(template_mm)})")
    joints = np.asarray(regressor @ template_mm.astype(np.float64))
    return [[round(float(c), 3) for c in joint] for joint in joints]


def load_flame(
    path: str | Path,
    *,
    landmark_mapping: str | Path | None = None,
    n_shape: int = N_SHAPE,
    n_expression: int | None = None,
) -> MorphableModel:
    """Read FLAME's ``generic_model.pkl`` (chumpy not needed) in mm, head frame.

    Args:
        path: the pickle (FLAME 2017/2019/2020 layout).
        landmark_mapping: an eos-format ``ibug_to_*.txt`` for FLAME's topology; otherwise no
            iBUG landmarks (and a constant albedo, since the reflectance transfer needs them).
        n_shape: identity columns at the start of ``shapedirs`` (300).
        n_expression: expression columns after them (default: all the rest, 100).

    Raises:
        ModelFileError: refused or malformed pickle, missing key, wrong shapes, zero columns.
    """
    path = require_file(path)
    data = read_flame_pickle(path)
    template = _array(data, "v_template", 2, path)
    if template.shape[1] != 3 or len(template) < 3:
        raise ModelFileError(path, f"v_template must be (V,3), got {template.shape}")
    V = len(template)
    shapedirs = _array(data, "shapedirs", 3, path)
    if shapedirs.shape[:2] != (V, 3):
        raise ModelFileError(path, f"shapedirs must be ({V}, 3, K), got {shapedirs.shape}")
    total = shapedirs.shape[2]
    if not 1 <= n_shape <= total:
        raise ModelFileError(path, f"shapedirs has {total} columns, fewer than n_shape={n_shape}")
    n_expression = total - n_shape if n_expression is None else n_expression
    if not 0 <= n_expression <= total - n_shape:
        raise ModelFileError(path, f"shapedirs has {total - n_shape} columns after the {n_shape} identity "
                                   f"columns, fewer than n_expression={n_expression}")
    faces = _array(data, "f", 2, path)
    if faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= V:
        raise ModelFileError(path, f"f must be (F,3) with vertex indices in [0, {V})")

    mean = template.astype(np.float64) * 1000.0  # m -> mm
    flat = shapedirs.astype(np.float64).reshape(3 * V, total) * 1000.0
    ident_basis, ident_std, ident_info = unit_column_basis(flat[:, :n_shape], np.ones(n_shape), path, "shapedirs")
    if n_expression:
        expr_basis, expr_std, expr_info = unit_column_basis(
            flat[:, n_shape:n_shape + n_expression], np.ones(n_expression), path, "shapedirs")
    else:
        (expr_basis, expr_std), expr_info = empty_basis(V), {}
    faces, flipped = orient_faces_outward(mean, faces)
    joints = _joints_mm(data, mean, path)
    where = "FLAME model origin (undocumented by FLAME)"
    if joints:
        where += f"; the root joint is at ({joints[0][0]:.1f}, {joints[0][1]:.1f}, {joints[0][2]:.1f}) mm"
    summary = {key: list(np.shape(data[key])) for key in ("posedirs", "weights", "kintree_table") if key in data}
    placeholder = constant_reflectance(V)  # replaced by the transferred reflectance below
    model = MorphableModel(
        name="flame",
        mean=mean,
        faces=faces,
        identity_basis=ident_basis,
        identity_std=ident_std,
        expression_basis=expr_basis,
        expression_std=expr_std,
        landmark_indices=landmarks_from_mapping(landmark_mapping, V),
        version=file_sha256_prefix(path),
        origin=describe_origin(mean, where),
        source=str(path),
        metadata={
            "format": "FLAME generic_model.pkl (chumpy-free restricted unpickler)",
            "units_converted": "v_template and shapedirs metres -> mm (x1000)",
            "frame": "file frame kept: already +x subject's left, +y up, +z forward",
            "faces_flipped": flipped,
            "shapedirs_columns": total,
            "n_shape": n_shape,
            "n_expression": n_expression,
            "std_from": "column norms of shapedirs (FLAME scales columns by their std; betas ~ N(0,1))",
            "identity_std_decreasing": bool(np.all(np.diff(ident_std) <= 1e-6)),
            "expression_std_decreasing": bool(np.all(np.diff(expr_std) <= 1e-6)),
            "identity_basis": ident_info,
            "expression_basis": expr_info,
            "joints_mm": joints,
            "unused_arrays": summary,
            "landmark_mapping": None if landmark_mapping is None else str(landmark_mapping),
        },
        **placeholder,
    )
    return with_synthetic_reflectance(model)

