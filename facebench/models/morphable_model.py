"""The one face-model type of facebench: a linear 3D morphable model in the head frame, in mm.

Every loader (procedural, ICT-FaceKit, BFM, SFM, FLAME, PCA-built) returns a
:class:`MorphableModel`. Frames and units follow :mod:`facebench.conventions`: head frame
(+x toward the subject's left, +y up, +z out of the face), millimetres; reflectance is linear RGB
in [0, 1].

Shapes (V vertices, F triangles, K* modes):

- ``mean (V,3)`` float32 mm; ``faces (F,3)`` int32, 0-based, counter-clockwise seen from outside
  (normals point out of the face);
- ``identity_basis (V,3,Ki)``, ``identity_std (Ki,)``; ``expression_basis (V,3,Ke)``,
  ``expression_std (Ke,)``: unit-free directions scaled so that
  ``shape(a, e) = mean + identity_basis @ (a * identity_std) + expression_basis @ (e * expression_std)``
  with ``a``, ``e`` in units of standard deviations (a ~ N(0, 1) draws a plausible face);
- ``reflectance_mean (V,3)``, ``reflectance_basis (V,3,Kr)``, ``reflectance_std (Kr,)`` likewise;
- ``landmark_indices (68,)`` int32: vertex index of each iBUG-68 landmark in iBUG order
  (landmark 1 first), ``-1`` where the model has no vertex for that landmark (e.g. SFM's contour).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from facebench.atomic import atomic_path
from facebench.errors import InputFileError, InvalidInputError, ModelFileError
from facebench.safe_hdf5 import parse_json

#: Number of iBUG-68 landmarks.
N_LANDMARKS = 68

#: Version of the ``.npz`` serialization written by :meth:`MorphableModel.save`.
NPZ_FORMAT = "facebench-model"
NPZ_VERSION = 1

_ARRAY_FIELDS = (
    "mean",
    "faces",
    "identity_basis",
    "identity_std",
    "expression_basis",
    "expression_std",
    "reflectance_mean",
    "reflectance_basis",
    "reflectance_std",
    "landmark_indices",
)


@dataclasses.dataclass(frozen=True, eq=False)
class MorphableModel:
    """A linear morphable face model (see the module docstring for shapes, units, frames).

    Attributes beyond the arrays:
        name: short model name (``"synthetic"``, ``"ict"``, ``"bfm2009"``...).
        version: version of the model data (the procedural generator's version, the upstream
            commit, the file's sha256 prefix...).
        origin: where the head-frame origin is, in words (e.g. "midpoint between the ears").
        reflectance_source: how the reflectance model was obtained ("model", "transferred from
            synthetic by nearest vertex after landmark alignment", "constant albedo").
        source: path of the file(s) it was read from, or ``"procedural"``.
        named_landmarks: other named landmark vertices the model defines (name -> vertex index).
        metadata: free-form JSON-serializable information (expression names, units converted...).
    """

    name: str
    mean: np.ndarray
    faces: np.ndarray
    identity_basis: np.ndarray
    identity_std: np.ndarray
    expression_basis: np.ndarray
    expression_std: np.ndarray
    reflectance_mean: np.ndarray
    reflectance_basis: np.ndarray
    reflectance_std: np.ndarray
    landmark_indices: np.ndarray
    version: str = "unknown"
    origin: str = "unspecified"
    reflectance_source: str = "model"
    source: str = ""
    named_landmarks: dict[str, int] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        cast = {
            "mean": np.float32,
            "identity_basis": np.float32,
            "identity_std": np.float32,
            "expression_basis": np.float32,
            "expression_std": np.float32,
            "reflectance_mean": np.float32,
            "reflectance_basis": np.float32,
            "reflectance_std": np.float32,
            "faces": np.int32,
            "landmark_indices": np.int32,
        }
        for field, dtype in cast.items():
            value = np.ascontiguousarray(np.asarray(getattr(self, field)), dtype=dtype)
            value.setflags(write=False)
            object.__setattr__(self, field, value)
        object.__setattr__(self, "_torch_cache", {})
        self.validate()

    def validate(self) -> None:
        """Check shapes, finiteness and index ranges; raise :class:`ModelFileError` if wrong."""
        where = self.source or self.name
        V = self.mean.shape[0] if self.mean.ndim == 2 else -1

        def fail(message: str) -> None:
            raise ModelFileError(where, f"invalid {self.name!r} model: {message}")

        if self.mean.ndim != 2 or self.mean.shape[1] != 3 or V < 3:
            fail(f"mean must be (V,3) with V >= 3, got {self.mean.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            fail(f"faces must be (F,3) with F >= 1, got {self.faces.shape}")
        if self.faces.min() < 0 or self.faces.max() >= V:
            fail(f"faces index vertices outside [0, {V})")
        for prefix in ("identity", "expression", "reflectance"):
            basis, std = getattr(self, f"{prefix}_basis"), getattr(self, f"{prefix}_std")
            if basis.ndim != 3 or basis.shape[:2] != (V, 3):
                fail(f"{prefix}_basis must be (V,3,K) with V={V}, got {basis.shape}")
            if std.shape != (basis.shape[2],):
                fail(f"{prefix}_std must be ({basis.shape[2]},), got {std.shape}")
            if not np.all(np.isfinite(basis)) or not np.all(np.isfinite(std)):
                fail(f"{prefix} basis or std holds NaN/Inf")
            if np.any(std < 0):
                fail(f"{prefix}_std has negative entries")
        if self.reflectance_mean.shape != (V, 3):
            fail(f"reflectance_mean must be ({V},3), got {self.reflectance_mean.shape}")
        if not np.all(np.isfinite(self.mean)) or not np.all(np.isfinite(self.reflectance_mean)):
            fail("mean or reflectance_mean holds NaN/Inf")
        if self.landmark_indices.shape != (N_LANDMARKS,):
            fail(f"landmark_indices must be ({N_LANDMARKS},), got {self.landmark_indices.shape}")
        lm = self.landmark_indices
        if np.any((lm < -1) | (lm >= V)):
            fail(f"landmark_indices outside [-1, {V})")
        for key, index in self.named_landmarks.items():
            if not 0 <= int(index) < V:
                fail(f"named landmark {key!r} index {index} outside [0, {V})")

    # ------------------------------------------------------------------ sizes
    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[2])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[2])

    @property
    def n_reflectance(self) -> int:
        return int(self.reflectance_basis.shape[2])

    @property
    def has_landmark(self) -> np.ndarray:
        """(68,) bool: which iBUG landmarks have a vertex on this model."""
        return self.landmark_indices >= 0

    # ------------------------------------------------------------------ evaluation
    def shape(self, identity=None, expression=None):
        """Vertices for identity/expression coefficients given in standard deviations.

        Args:
            identity: ``(..., k)`` with ``k <= n_identity`` (the first k modes; the rest are 0),
                or None for zeros. numpy array or torch tensor (any device; differentiable).
            expression: ``(..., k)`` with ``k <= n_expression``, or None.

        Returns:
            ``(..., V, 3)`` vertices in the head frame, mm; a torch tensor on the coefficients'
            device and dtype if either is a tensor, else a float32 numpy array. The batch shape
            is the broadcast of the two coefficient batch shapes.
        """
        return self._linear(self.mean, (("identity", identity), ("expression", expression)))

    def reflectance(self, coefficients=None):
        """Per-vertex linear-RGB reflectance ``(..., V, 3)`` for coefficients in std units.

        Not clipped: draws far from the mean can leave [0, 1]; clip where a renderer needs to.
        """
        return self._linear(self.reflectance_mean, (("reflectance", coefficients),))

    def landmarks(self, vertices):
        """Pick the 68 landmark positions ``(..., 68, 3)`` from ``vertices (..., V, 3)``.

        Landmarks the model lacks (index -1) come back as NaN.
        """
        index = np.where(self.has_landmark, self.landmark_indices, 0)
        if _is_torch(vertices):
            import torch

            idx = torch.as_tensor(index, device=vertices.device, dtype=torch.long)
            picked = vertices[..., idx, :]
            missing = torch.as_tensor(~self.has_landmark, device=vertices.device)
            return torch.where(missing[:, None], torch.full_like(picked, float("nan")), picked)
        picked = np.asarray(vertices)[..., index, :].astype(np.result_type(vertices, np.float32))
        picked[..., ~self.has_landmark, :] = np.nan
        return picked

    def _linear(self, base: np.ndarray, terms) -> Any:
        given = [(prefix, c) for prefix, c in terms if c is not None]
        if any(_is_torch(c) for _, c in given):
            return self._linear_torch(base, given)
        out = base.astype(np.float32)
        for prefix, coefficients in given:
            c = np.asarray(coefficients, dtype=np.float32)
            basis, std = self._check_coefficients(prefix, c.shape)
            k = c.shape[-1]
            flat = basis.reshape(-1, basis.shape[2])[:, :k]  # (3V, k)
            offset = (c * std[:k]) @ flat.T  # (..., 3V)
            out = out + offset.reshape(*offset.shape[:-1], *base.shape)
        return out

    def _linear_torch(self, base: np.ndarray, given) -> Any:
        import torch

        ref = next(c for _, c in given if _is_torch(c))
        device, dtype = ref.device, ref.dtype if ref.dtype.is_floating_point else torch.float32
        out = self._tensor(self._base_name(base), device, dtype)
        for prefix, coefficients in given:
            c = torch.as_tensor(coefficients, device=device, dtype=dtype)
            self._check_coefficients(prefix, tuple(c.shape))
            k = c.shape[-1]
            flat = self._tensor(f"{prefix}_flat", device, dtype)[:, :k]
            std = self._tensor(f"{prefix}_std", device, dtype)[:k]
            offset = (c * std) @ flat.T
            out = out + offset.reshape(*offset.shape[:-1], *base.shape)
        return out

    def _base_name(self, base: np.ndarray) -> str:
        return "mean" if base is self.mean else "reflectance_mean"

    def _check_coefficients(self, prefix: str, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
        basis, std = getattr(self, f"{prefix}_basis"), getattr(self, f"{prefix}_std")
        if len(shape) == 0 or shape[-1] > basis.shape[2]:
            raise ValueError(
                f"{self.name}: {prefix} coefficients must be (..., k) with k <= "
                f"{basis.shape[2]}, got shape {tuple(shape)}"
            )
        return basis, std

    def _tensor(self, key: str, device, dtype):
        """Model arrays as torch tensors, cached per (key, device, dtype)."""
        import torch

        cache = self._torch_cache
        slot = (key, str(device), dtype)
        if slot not in cache:
            if key.endswith("_flat"):
                basis = getattr(self, key[: -len("_flat")] + "_basis")
                array = basis.reshape(-1, basis.shape[2])
            else:
                array = getattr(self, key)
            cache[slot] = torch.as_tensor(np.array(array), device=device, dtype=dtype)
        return cache[slot]

    def tensors(self, device="cpu", dtype=None) -> dict:
        """All arrays as torch tensors on ``device`` (float arrays in ``dtype``, default float32)."""
        import torch

        dtype = dtype or torch.float32
        out = {}
        for field in _ARRAY_FIELDS:
            value = getattr(self, field)
            if value.dtype.kind == "f":
                out[field] = self._tensor(field, device, dtype)
            else:
                out[field] = torch.as_tensor(np.array(value, dtype=np.int64), device=device)
        return out

    # ------------------------------------------------------------------ derived models
    def truncated(self, identity=None, expression=None, reflectance=None) -> MorphableModel:
        """The same model keeping only the first modes of each space (None: keep all)."""
        changes = {}
        for prefix, k in (("identity", identity), ("expression", expression), ("reflectance", reflectance)):
            if k is not None:
                n = getattr(self, f"n_{prefix}")
                if not 0 <= k <= n:
                    raise InvalidInputError(f"{self.name}: cannot keep {k} {prefix} modes of {n}")
                changes[f"{prefix}_basis"] = getattr(self, f"{prefix}_basis")[:, :, :k]
                changes[f"{prefix}_std"] = getattr(self, f"{prefix}_std")[:k]
        return dataclasses.replace(self, **changes)

    def extent_mm(self) -> np.ndarray:
        """(3,) width, height, depth of the mean shape's bounding box, mm."""
        return (self.mean.max(axis=0) - self.mean.min(axis=0)).astype(np.float64)

    def digest(self) -> str:
        """sha256 of every array's bytes (in field order) and the name: equal models, equal digests."""
        h = hashlib.sha256(self.name.encode())
        for field in _ARRAY_FIELDS:
            value = getattr(self, field)
            h.update(field.encode())
            h.update(str(value.shape).encode())
            h.update(value.tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ serialization
    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (``.npz``, no pickled objects) atomically; return the path."""
        path = Path(path)
        header = {
            "format": NPZ_FORMAT,
            "version": NPZ_VERSION,
            "name": self.name,
            "model_version": self.version,
            "origin": self.origin,
            "reflectance_source": self.reflectance_source,
            "source": self.source,
            "named_landmarks": {k: int(v) for k, v in self.named_landmarks.items()},
            "metadata": self.metadata,
        }
        arrays = {field: getattr(self, field) for field in _ARRAY_FIELDS}
        arrays["header"] = np.array(json.dumps(header, sort_keys=True))
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> MorphableModel:
        """Read a model written by :meth:`save`. Never unpickles; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(path, "no such file")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [f for f in (*_ARRAY_FIELDS, "header") if f not in data.files]
                if missing:
                    raise ModelFileError(path, f"not a facebench model file: missing {', '.join(missing)}")
                arrays = {field: data[field] for field in _ARRAY_FIELDS}
                header = parse_json(str(data["header"]), path=path, member="header")
        except ModelFileError:
            raise
        except InputFileError as error:  # the header's JSON: too long, too deep or invalid
            raise ModelFileError(path, error.message) from None
        except ValueError as error:  # pickled object arrays, bad JSON
            raise ModelFileError(path, f"cannot read model arrays: {error}") from None
        except Exception as error:  # zipfile.BadZipFile, EOFError, OSError on truncated files
            raise ModelFileError(path, f"unreadable or truncated .npz ({type(error).__name__}: {error})") from None
        if not isinstance(header, dict) or header.get("format") != NPZ_FORMAT:
            found = header.get("format") if isinstance(header, dict) else None
            raise ModelFileError(path, f"not a facebench model file (format {found!r})")
        if header.get("version") != NPZ_VERSION:
            raise ModelFileError(path, f"unsupported model file version {header.get('version')!r}")
        return cls(
            name=header["name"],
            version=header.get("model_version", "unknown"),
            origin=header.get("origin", "unspecified"),
            reflectance_source=header.get("reflectance_source", "model"),
            source=str(path),
            named_landmarks=dict(header.get("named_landmarks", {})),
            metadata=dict(header.get("metadata", {})),
            **arrays,
        )

    def __repr__(self) -> str:
        return (
            f"MorphableModel(name={self.name!r}, version={self.version!r}, V={self.n_vertices}, "
            f"F={self.n_faces}, identity={self.n_identity}, expression={self.n_expression}, "
            f"reflectance={self.n_reflectance})"
        )


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def empty_basis(n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """A basis with zero modes ``(V,3,0)`` and its std ``(0,)``, for models lacking a space."""
    return np.zeros((n_vertices, 3, 0), np.float32), np.zeros((0,), np.float32)


def orthonormal_columns_to_basis(components: np.ndarray, n_vertices: int) -> np.ndarray:
    """Reshape PCA components ``(3V, K)`` stored as x0,y0,z0,x1,... into ``(V,3,K)``."""
    components = np.asarray(components)
    if components.ndim != 2 or components.shape[0] != 3 * n_vertices:
        raise ValueError(f"components must be (3V, K) with V={n_vertices}, got {components.shape}")
    return components.reshape(n_vertices, 3, components.shape[1])
