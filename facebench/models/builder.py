"""Build a PCA shape model from registered meshes of one topology (as Ramon et al. 2019, §4.1).

Steps: generalized Procrustes alignment (GPA) of all meshes by similarity transforms (never a
reflection), then PCA of the aligned shapes. The result is a :class:`MorphableModel` with an
identity space only (0 expression modes); units and frame are those of the input meshes
(facebench expects mm in the head frame: the mean is kept at the inputs' average scale, and
its pose is that of the first mesh, so the frame of the inputs is preserved).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError, InputFileError, ModelFileError
from facebench.geometry import similarity_from_correspondences
from facebench.meshio import MESH_SUFFIXES, read_mesh
from facebench.models.morphable_model import N_LANDMARKS, MorphableModel, empty_basis
from facebench.models.reflectance_transfer import (
    constant_reflectance,
    with_synthetic_reflectance,
)

__all__ = ["GpaResult", "generalized_procrustes", "build_model", "build_model_from_dir"]


@dataclasses.dataclass
class GpaResult:
    """Result of :func:`generalized_procrustes`.

    Attributes:
        aligned: ``(N,V,3)`` float64, each mesh mapped onto the mean (``s R x + t``).
        mean: ``(V,3)`` float64 mean shape, at the inputs' average scale.
        scales: ``(N,)``, rotations ``(N,3,3)`` (det +1), translations ``(N,3)``: the similarity
            applied to each input mesh.
        iterations: iterations run; converged: whether the mean moved less than the tolerance.
    """

    aligned: np.ndarray
    mean: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    iterations: int
    converged: bool


def _size(shape: np.ndarray) -> float:
    """Centroid size: root of the summed squared distances to the centroid."""
    return float(np.linalg.norm(shape - shape.mean(axis=0)))


def generalized_procrustes(meshes: np.ndarray, *, tol: float = 1e-6, max_iterations: int = 100) -> GpaResult:
    """Generalized Procrustes alignment of ``meshes (N,V,3)`` by similarity transforms.

    Iterates: align every mesh to the current mean (Umeyama, no reflection), recompute the mean,
    rescale it (about its centroid) to the average centroid size of the inputs, until the mean
    changes by less than ``tol`` relative to its size or ``max_iterations``. The first mean is the
    first mesh, so the result stays in that mesh's pose.
    """
    shapes = np.asarray(meshes, dtype=np.float64)
    target_size = float(np.mean([_size(m) for m in shapes]))
    mean = shapes[0].copy()
    converged, iterations = False, 0
    while iterations < max_iterations:
        iterations += 1
        fits = [similarity_from_correspondences(m, mean) for m in shapes]
        aligned = np.stack([s * m @ R.T + t for m, (s, R, t) in zip(shapes, fits)])
        new = aligned.mean(axis=0)
        centroid = new.mean(axis=0)
        new = centroid + (new - centroid) * (target_size / _size(new))
        change = np.linalg.norm(new - mean) / max(_size(new), 1e-12)
        mean = new
        if change < tol:
            converged = True
            break
    fits = [similarity_from_correspondences(m, mean) for m in shapes]
    aligned = np.stack([s * m @ R.T + t for m, (s, R, t) in zip(shapes, fits)])
    return GpaResult(
        aligned=aligned,
        mean=mean,
        scales=np.array([f[0] for f in fits]),
        rotations=np.stack([f[1] for f in fits]),
        translations=np.stack([f[2] for f in fits]),
        iterations=iterations,
        converged=converged,
    )


def _n_keep(explained: np.ndarray, n_components: int | None, variance: float) -> int:
    if n_components is not None:
        if not 1 <= n_components <= explained.size:
            raise FacebenchError(f"n_components must be in 1..{explained.size}, got {n_components}")
        return int(n_components)
    if not 0 < variance <= 1:
        raise FacebenchError(f"variance must be in (0, 1], got {variance}")
    cumulative = np.cumsum(explained)
    return int(min(np.searchsorted(cumulative, variance - 1e-12) + 1, explained.size))


def build_model(
    meshes: Sequence[np.ndarray] | np.ndarray,
    *,
    n_components: int | None = None,
    variance: float = 0.98,
    landmark_indices: np.ndarray | Sequence[int] | None = None,
    name: str = "built",
    faces: np.ndarray | None = None,
) -> MorphableModel:
    """PCA shape model from registered meshes of one topology.

    Args:
        meshes: ``N >= 2`` vertex arrays ``(V,3)`` (mm, head frame), corresponding vertex by vertex.
        n_components: modes to keep; None keeps the fewest explaining ``variance`` of the total.
        variance: fraction of the total variance to explain when ``n_components`` is None.
        landmark_indices: optional ``(68,)`` iBUG vertex indices (``-1`` where missing); with them
            the synthetic model's reflectance is transferred, without them the albedo is constant.
        name: the model's name.
        faces: ``(F,3)`` triangles of the topology (required: a model without faces cannot be
            rendered; :func:`build_model_from_dir` passes the first mesh's).

    Returns:
        A model whose ``identity_basis`` holds orthonormal principal directions ``(V,3,K)`` and
        ``identity_std`` = singular value / sqrt(N - 1) in mm; 0 expression modes;
        ``metadata["explained_variance_ratio"]`` (K,) and GPA diagnostics.

    Raises:
        FacebenchError: fewer than 2 meshes, shapes that differ, bad options.
    """
    shapes = _as_stack(meshes)
    if faces is None:
        raise FacebenchError("build_model needs the faces (F,3) of the meshes' topology")
    n, v = shapes.shape[:2]
    faces = np.asarray(faces, dtype=np.int32)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= v:
        raise FacebenchError(f"faces must be (F,3) indices into {v} vertices")
    gpa = generalized_procrustes(shapes)
    data = gpa.aligned.reshape(n, -1)
    centred = data - data.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(singular**2))
    explained = singular**2 / total if total > 0 else np.zeros_like(singular)
    rank = max(1, int(np.sum(singular > singular[0] * 1e-10))) if singular.size else 0
    k = _n_keep(explained[:rank], n_components, variance)
    basis = vt[:k].T.reshape(v, 3, k)
    std = singular[:k] / np.sqrt(n - 1)
    landmarks = _landmarks(landmark_indices, v)
    expression_basis, expression_std = empty_basis(v)
    model = MorphableModel(
        name=name,
        mean=gpa.mean.astype(np.float32),
        faces=faces,
        identity_basis=basis.astype(np.float32),
        identity_std=std.astype(np.float32),
        expression_basis=expression_basis,
        expression_std=expression_std,
        landmark_indices=landmarks,
        version=f"pca of {n} meshes ({k} modes)",
        origin="that of the first input mesh's frame (the GPA mean is kept in its pose)",
        source="built",
        metadata={
            "n_meshes": n,
            "explained_variance_ratio": [float(x) for x in explained[:k]],
            "explained_variance_total": float(explained[:k].sum()),
            "gpa_iterations": gpa.iterations,
            "gpa_converged": gpa.converged,
            "method": "generalized Procrustes (similarity, no reflection) + PCA (SVD)",
        },
        **constant_reflectance(v),
        reflectance_source="constant albedo (no landmarks given)",
    )
    if np.any(landmarks >= 0):
        model = with_synthetic_reflectance(model)
    return model


def _as_stack(meshes) -> np.ndarray:
    try:
        shapes = np.stack([np.asarray(m, dtype=np.float64) for m in meshes])
    except ValueError:
        raise FacebenchError("meshes must all have the same (V,3) shape") from None
    if shapes.ndim != 3 or shapes.shape[2] != 3:
        raise FacebenchError(f"meshes must be (V,3) arrays, got {shapes.shape[1:]}")
    if shapes.shape[0] < 2:
        raise FacebenchError(f"a PCA model needs at least 2 meshes, got {shapes.shape[0]}")
    return shapes


def _landmarks(landmark_indices, n_vertices: int) -> np.ndarray:
    if landmark_indices is None:
        return np.full(N_LANDMARKS, -1, dtype=np.int32)
    landmarks = np.asarray(landmark_indices, dtype=np.int64)
    if landmarks.shape != (N_LANDMARKS,) or landmarks.max() >= n_vertices or landmarks.min() < -1:
        raise FacebenchError(f"landmark_indices must be ({N_LANDMARKS},) vertex indices or -1")
    return landmarks.astype(np.int32)


def build_model_from_dir(meshes_dir: str | Path, out_path: str | Path, **kw) -> MorphableModel:
    """Build a model (see :func:`build_model`) from every ``.obj``/``.ply`` in ``meshes_dir``.

    Meshes are read in name order; all must have the first mesh's vertex count and faces (the
    first mesh's faces are the model's). The model is saved to ``out_path`` (``.npz``, atomic).

    Raises:
        ModelFileError: unreadable mesh, or one whose vertex count or faces differ (names it).
        FacebenchError: fewer than 2 meshes, missing folder.
    """
    folder = Path(meshes_dir)
    if not folder.is_dir():
        raise FacebenchError(f"{folder}: not a folder of meshes")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if len(paths) < 2:
        raise FacebenchError(f"{folder}: a PCA model needs at least 2 meshes (.obj/.ply), found {len(paths)}")
    first = _read(paths[0])
    vertices = [first.vertices]
    for path in paths[1:]:
        mesh = _read(path)
        if mesh.n_vertices != first.n_vertices:
            raise ModelFileError(path, f"has {mesh.n_vertices} vertices, {paths[0].name} has {first.n_vertices}")
        if not np.array_equal(mesh.faces, first.faces):
            raise ModelFileError(path, f"its faces differ from {paths[0].name}'s (not one topology)")
        vertices.append(mesh.vertices)
    kw.setdefault("faces", first.faces)
    model = build_model(vertices, **kw)
    model = dataclasses.replace(model, source=str(folder),
                                metadata={**model.metadata, "files": [p.name for p in paths]})
    model.save(out_path)
    return model


def _read(path: Path):
    try:
        return read_mesh(path)
    except ModelFileError:
        raise
    except InputFileError as error:
        raise ModelFileError(error.path, error.message) from None
