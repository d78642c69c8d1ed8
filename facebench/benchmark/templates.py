"""Example submissions written from a dataset: golden fixtures and sanity baselines.

Three kinds, all HDF5 submissions on the dataset's topology (no ``faces``; the dataset's
``landmark_indices``; poses ``q``, ``t`` always written):

==========  ================  =====================================================================
kind        ``method``        content
==========  ================  =====================================================================
``gt``      ``oracle-gt``     the ground truth itself (vertices, true q and t): scores 0 everywhere
``mean``    ``mean-shape``    one mean shape for every sample, at the true pose (see below)
``noisy``   ``noisy-oracle``  ground truth + i.i.d. Gaussian noise of std ``noise_mm`` per
                              coordinate; q rotated by exactly ``pose_noise_deg`` about a random
                              axis of the head frame (``q̂ = q ⊗ δ``, so every rotation error is
                              ``pose_noise_deg``); t + Gaussian noise of std
                              ``translation_noise_mm`` per coordinate (0 by default)
``oracle``  ``projection-     the least-squares fit of the ground truth in the model's span (the
            oracle``          first ``identity_dims`` identity and ``expression_dims`` expression
                              modes; default: the span the dataset's out-of-span detail avoids,
                              else all modes) at the true pose: :mod:`facebench.benchmark.oracle`
==========  ================  =====================================================================

``mean`` and ``oracle`` are the **reference rows** of every table: what predicting nothing beyond
the model's mean scores, and the floor no predictor of that model can beat.

**The mean shape** is the face model's mean when the dataset's ``model`` attribute names a model
that :func:`facebench.models.load` opens without a path (the built-in ``synthetic``, or a cached
``ict``) and that is the same model (``model_digest`` attribute equal to the model's digest, or
else the same ``model_version``) with the dataset's vertex count; otherwise (real scans, models read from
user files) it is the average of the dataset's ground-truth vertices. The file's ``mean_source``
attribute records which (``"model:<name>"`` or ``"dataset-average"``). The model's mean is the
honest baseline (it uses no test data); the dataset average is the fallback that works for any
dataset with a shared topology.

Noise is drawn from ``numpy.random.default_rng(seed)`` in sample order, so a template is a
deterministic function of (dataset, kind, parameters, seed).

**Scan datasets** (MICC, FaceWarehouse: per-sample scans of varying topology) get **folder**
submissions: ``<out>/<id>.ply`` meshes and a ``manifest.json`` with per-id ``landmarks`` (the scan
landmarks, protocol order) — ``gt`` writes each scan, placed by a random similarity (rotation,
translation up to 100 mm, scale 0.9–1.1; the scan protocols align with scale, so this still scores
≈ 0 and shows the alignment at work), ``noisy`` adds Gaussian noise of ``noise_mm`` per coordinate
to the placed scan. ``mean`` needs a shared topology and is refused, unless a face ``model`` is
given: then it is an HDF5 submission of that model's mean for every scan, with the model's faces and
the dataset's scan landmark set on the model (:func:`facebench.benchmark.landmark_sets.landmark_indices_for`),
the mean-face reference row of the scan tables. No poses: scan datasets have none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.benchmark.submission_writer import SubmissionWriter
from facebench.conventions import quat_canonical, quat_multiply
from facebench.errors import FacebenchError, InputFileError

__all__ = ["KINDS", "METHODS", "write_template", "mean_shape", "rotation_noise"]

KINDS = ("gt", "mean", "noisy", "oracle")
METHODS = {"gt": "oracle-gt", "mean": "mean-shape", "noisy": "noisy-oracle", "oracle": "projection-oracle"}


def rotation_noise(n: int, angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """``(n,4)`` unit quaternions rotating by exactly ``angle_deg`` about uniform random axes."""
    axes = rng.standard_normal((n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    half = np.deg2rad(angle_deg) / 2.0
    return np.concatenate([np.full((n, 1), np.cos(half)), np.sin(half) * axes], axis=1)


def _same_model(model, attrs: dict) -> bool:
    """Whether ``model`` is the one the dataset was generated with (digest, else version)."""
    if attrs.get("model_digest"):
        return str(attrs["model_digest"]) == model.digest()
    wanted = attrs.get("model_version")
    return wanted is None or str(wanted) == str(model.version)


def mean_shape(dataset, *, chunk_size: int = 256) -> tuple[np.ndarray, str]:
    """The mean shape of ``dataset`` (see the module doc) and its source.

    Args:
        dataset: a :class:`facebench.datasets.dataset_file.FaceDataset`.

    Returns:
        ``((V,3) float64 mm head frame, "model:<name>" | "dataset-average")``.
    """
    name = dataset.attrs.get("model")
    if isinstance(name, str) and name:
        from facebench.models import load

        try:
            model = load(name)
        except (FacebenchError, OSError, ValueError):
            model = None
        if model is not None and model.mean.shape == (dataset.n_vertices, 3) and _same_model(model, dataset.attrs):
            return np.asarray(model.mean, np.float64), f"model:{name}"
    return dataset.mean_vertices(chunk_size), "dataset-average"


def write_template(dataset_path, kind: str, out_path: str | Path, *, noise_mm: float = 1.0,
                   pose_noise_deg: float = 2.0, translation_noise_mm: float = 0.0, seed: int = 0,
                   chunk_size: int = 256, overwrite: bool = True, identity_dims: int | None = None,
                   expression_dims: int | None = None, model=None) -> Path:
    """Write an example submission of ``kind`` (``gt``, ``mean`` or ``noisy``) for a dataset.

    Args:
        dataset_path: the dataset file (or an open :class:`FaceDataset`).
        kind: see the module table.
        out_path: the ``.h5`` to write (atomically: it appears complete or not at all).
        noise_mm: ``noisy``: std of the vertex noise per coordinate, mm.
        pose_noise_deg: ``noisy``: rotation error of every sample, degrees.
        translation_noise_mm: ``noisy``: std of the translation noise per coordinate, mm.
        seed: ``noisy``: random seed.
        identity_dims, expression_dims: ``oracle``: the span (default
            :func:`facebench.benchmark.oracle.default_span`).
        chunk_size: samples read and written at a time.
        overwrite: False refuses an existing ``out_path``.
        model: scan datasets, ``mean``: the face model whose mean is written (module doc).

    Returns:
        ``out_path``.

    Raises:
        FacebenchError: unknown kind, negative noise; InputFileError: unreadable dataset, or an
            existing ``out_path`` with ``overwrite=False``.
    """
    from facebench.datasets.dataset_file import FaceDataset

    if kind not in KINDS:
        raise FacebenchError(f"unknown template kind {kind!r}; one of {', '.join(KINDS)}")
    if min(noise_mm, pose_noise_deg, translation_noise_mm) < 0:
        raise FacebenchError("noise levels must be >= 0")
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise InputFileError(out_path, "exists already")
    dataset = dataset_path if isinstance(dataset_path, FaceDataset) else FaceDataset(dataset_path)
    if dataset.is_scan_dataset:
        if kind == "mean" and model is not None:
            return _write_scan_model_mean(dataset, model, out_path)
        return _write_scan_template(dataset, kind, out_path, noise_mm=noise_mm, seed=seed)
    ids = dataset.ids
    q_all = np.asarray(dataset.array("q"), np.float64)
    t_all = np.asarray(dataset.array("t"), np.float64)
    attrs = {"template_kind": kind, "source_dataset": dataset.path.name}
    mean = None
    if kind == "mean":
        mean, attrs["mean_source"] = mean_shape(dataset, chunk_size=chunk_size)
    if kind == "noisy":
        attrs.update(noise_mm=noise_mm, pose_noise_deg=pose_noise_deg, translation_noise_mm=translation_noise_mm,
                     seed=seed)
    if kind == "oracle":
        from facebench.benchmark import oracle

        model = oracle.dataset_model(dataset)
        span = oracle.default_span(dataset, model)
        span = (span[0] if identity_dims is None else int(identity_dims),
                span[1] if expression_dims is None else int(expression_dims))
        basis = oracle.span_basis(model, *span)
        mean = np.asarray(model.mean, np.float64)
        attrs.update(identity_dims=span[0], expression_dims=span[1], model=model.name)
    elif identity_dims is not None or expression_dims is not None:
        raise FacebenchError("--identity-dims/--expression-dims apply to --kind oracle")
    rng = np.random.default_rng(seed)
    with SubmissionWriter(out_path, n=len(ids), n_vertices=dataset.n_vertices, method=METHODS[kind],
                          landmark_indices=dataset.landmark_indices, with_pose=True, attrs=attrs) as writer:
        for start in range(0, len(ids), chunk_size):
            stop = min(start + chunk_size, len(ids))
            q, t = q_all[start:stop], t_all[start:stop]
            if kind == "mean":
                vertices = np.broadcast_to(mean, (stop - start, *mean.shape))
            elif kind == "oracle":
                vertices = oracle.project_to_span(dataset.read("vertices", start, stop), mean, basis)
            else:
                vertices = dataset.read("vertices", start, stop).astype(np.float64)
            if kind == "noisy":
                vertices = vertices + rng.normal(0.0, noise_mm, vertices.shape)
                q = quat_canonical(quat_multiply(q, rotation_noise(stop - start, pose_noise_deg, rng)))
                t = t + rng.normal(0.0, translation_noise_mm, t.shape)
            writer.write(start, ids=ids[start:stop], vertices=vertices, q=q, t=t)
    return out_path


def _write_scan_model_mean(dataset, model, out_path: Path) -> Path:
    """The model's mean for every scan of ``dataset`` (module doc), an HDF5 submission."""
    from facebench.benchmark.landmark_sets import landmark_indices_for

    landmark_set = str(dataset.attrs.get("landmark_set", ""))
    try:
        landmark_indices = landmark_indices_for(model, landmark_set)
    except FacebenchError as error:
        raise FacebenchError(f"{dataset.path}: {error}") from None
    ids = list(dataset.ids)
    mean = np.asarray(model.mean, np.float64)
    with SubmissionWriter(out_path, n=len(ids), n_vertices=len(mean), method=METHODS["mean"],
                          faces=np.asarray(model.faces), landmark_indices=landmark_indices,
                          attrs={"template_kind": "mean", "source_dataset": dataset.path.name,
                                 "mean_source": f"model:{model.name}"}) as writer:
        writer.write(0, ids=ids, vertices=np.broadcast_to(mean, (len(ids), *mean.shape)))
    return out_path


def _random_similarity(rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    """``(scale, R (3,3), t (3,) mm)``: a uniform random rotation, scale in [0.9, 1.1], |t| <= 100 mm."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=rng).as_matrix()
    return float(rng.uniform(0.9, 1.1)), rotation, rng.uniform(-100.0, 100.0, 3) / np.sqrt(3.0)


def _write_scan_template(dataset, kind: str, out_path: Path, *, noise_mm: float, seed: int) -> Path:
    """Folder submission of a scan dataset (see the module doc), written to a temporary folder that
    is renamed at the end."""
    import json
    import os
    import shutil

    from facebench.benchmark.submission_format import FORMAT, MANIFEST_NAME, VERSION
    from facebench.meshio import write_mesh

    if kind == "mean":
        raise FacebenchError(f"{dataset.path}: a 'mean' template needs a shared topology; scan datasets "
                             "support 'gt' and 'noisy'")
    if out_path.suffix.lower() in (".h5", ".hdf5"):
        raise FacebenchError(f"{dataset.path} holds scans of varying topology: give a folder for --out, not "
                             f"{out_path.name}")
    rng = np.random.default_rng(seed)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        landmarks = {}
        for i, sample_id in enumerate(dataset.ids):
            vertices, faces = dataset.scan(i)
            scale, rotation, translation = _random_similarity(rng)
            placed = scale * vertices @ rotation.T + translation
            if kind == "noisy":
                placed = placed + rng.normal(0.0, noise_mm, placed.shape)
            write_mesh(tmp / f"{sample_id}.ply", placed, faces)
            points = scale * dataset.scan_landmarks(i) @ rotation.T + translation
            landmarks[sample_id] = [[None if not np.isfinite(v) else float(v) for v in row] for row in points]
        manifest = {"format": FORMAT, "version": VERSION, "method": METHODS[kind],
                    "landmarks": landmarks}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest) + "\n")
        if out_path.exists():
            shutil.rmtree(out_path) if out_path.is_dir() else out_path.unlink()
        os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_path
