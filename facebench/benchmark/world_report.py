"""What a synthetic dataset holds beyond a model's span: energies, camera ranges, reference errors.

:func:`measure_world` reads a dataset written by ``facebench synth generate`` and returns (all
lengths mm, reflectance linear RGB, angles degrees):

- ``energy``: per subject, the out-of-span displacement of :mod:`facebench.datasets.out_of_span`
  recomputed from the file's seed and settings; ``heldout_rms_mm``, ``detail_rms_mm`` and
  ``total_rms_mm`` are the root mean square over subjects and vertices of the 3D displacement
  length; ``reflectance_rms_rgb`` the RMS over subjects, vertices and channels of the reflectance
  offset before clipping, ``reflectance_applied_rms_rgb`` of what reached the render after the
  [0, 1] clip (``clip(a + d) − clip(a)`` with ``a`` the subject's in-span reflectance);
- ``camera``: the observed range of the camera distance ``t_z`` (mm, to the head origin) and of the
  horizontal field of view;
- ``reference``: for the mean face and the projection oracle of each span in ``spans``, the mean
  over samples of the per-vertex distance (``shape_mm``, the ``synthetic`` protocol's metric) and of
  the per-sample RMS (``rmse_mm``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["measure_world"]


def measure_world(path, spans: list[tuple[int, int]] | None = None, *, chunk_size: int = 64) -> dict:
    """See the module docstring. ``spans``: ``(identity_dims, expression_dims)`` pairs (default:
    the dataset's predictor span and its identity-only part)."""
    from facebench.benchmark.oracle import dataset_model, default_span, project_to_span, span_basis
    from facebench.datasets.dataset_file import FaceDataset

    dataset = path if isinstance(path, FaceDataset) else FaceDataset(path)
    model = dataset_model(dataset)
    settings = dataset.attrs.get("settings") or {}
    if spans is None:
        k_id, k_exp = default_span(dataset, model)
        spans = [(k_id, k_exp), (k_id, 0)] if k_exp else [(k_id, 0)]
    report: dict = {"path": str(dataset.path), "n": len(dataset), "world": settings.get("world", "in-span"),
                    "camera_kind": settings.get("camera", "fixed"), "preset": settings.get("preset", "")}
    report["energy"] = _energy(dataset, model, settings)
    t = np.asarray(dataset.array("t"), np.float64)
    focal = (np.full(len(dataset), dataset.shared_K[0, 0]) if dataset.shared_K is not None
             else np.asarray(dataset.read("K"), np.float64)[:, 0, 0])
    width = int(dataset.attrs["image_size"][1])
    fov = np.degrees(2 * np.arctan(width / (2 * focal)))
    report["camera"] = {"distance_mm": [float(t[:, 2].min()), float(t[:, 2].max())],
                        "fov_deg": [float(fov.min()), float(fov.max())],
                        "focal_px": [float(focal.min()), float(focal.max())]}
    mean = np.asarray(model.mean, np.float64)
    bases = {span: span_basis(model, *span) for span in spans}
    sums = {"mean": np.zeros(2), **{span: np.zeros(2) for span in spans}}
    for start in range(0, len(dataset), chunk_size):
        stop = min(start + chunk_size, len(dataset))
        truth = dataset.read("vertices", start, stop).astype(np.float64)
        predictions = {"mean": np.broadcast_to(mean, truth.shape)}
        predictions.update({span: project_to_span(truth, mean, bases[span]) for span in spans})
        for key, prediction in predictions.items():
            d = np.linalg.norm(prediction - truth, axis=2)
            sums[key] += [d.mean(axis=1).sum(), np.sqrt((d**2).mean(axis=1)).sum()]
    n = len(dataset)
    reference = {"mean-shape": {"shape_mm": sums["mean"][0] / n, "rmse_mm": sums["mean"][1] / n}}
    for span in spans:
        reference[f"projection-oracle id{span[0]}+exp{span[1]}"] = {
            "identity_dims": span[0], "expression_dims": span[1],
            "shape_mm": sums[span][0] / n, "rmse_mm": sums[span][1] / n}
    report["reference"] = {k: {m: float(v) for m, v in row.items()} for k, row in reference.items()}
    return report


def _energy(dataset, model, settings: dict) -> dict:
    oos = settings.get("out_of_span")
    zero = {"heldout_rms_mm": 0.0, "detail_rms_mm": 0.0, "total_rms_mm": 0.0, "reflectance_rms_rgb": 0.0,
            "reflectance_applied_rms_rgb": 0.0, "subjects": 0}
    if not isinstance(oos, dict):
        return zero
    from facebench.datasets.out_of_span import OutOfSpanSettings, OutOfSpanWorld

    world = OutOfSpanWorld(model, OutOfSpanSettings(**{**oos, "detail_wavelength_mm": tuple(oos["detail_wavelength_mm"])}))
    seed = int(dataset.attrs["seed"])
    subjects = np.asarray(dataset.read("subject"), np.int64) if "subject" in dataset.extra_fields else np.arange(len(dataset))
    coefficients = (np.asarray(dataset.read("reflectance"), np.float64)
                    if "reflectance" in dataset.coefficient_fields else None)
    first = {}
    for row, subject in enumerate(subjects):
        if subject not in first and (coefficients is None or np.isfinite(coefficients[row]).all()):
            first[int(subject)] = row
    sq = np.zeros(5)
    for subject, row in first.items():
        parts = world.shape_detail(seed, subject)
        refl = world.reflectance_detail(seed, subject)
        applied = np.zeros_like(refl)
        if coefficients is not None:
            albedo = np.asarray(model.reflectance(coefficients[row]), np.float64)
            applied = np.clip(albedo + refl, 0, 1) - np.clip(albedo, 0, 1)
        sq += [np.mean(np.sum(parts["heldout"] ** 2, axis=1)), np.mean(np.sum(parts["detail"] ** 2, axis=1)),
               np.mean(np.sum(parts["total"] ** 2, axis=1)), np.mean(refl**2), np.mean(applied**2)]
    rms = np.sqrt(sq / max(len(first), 1))
    return {"heldout_rms_mm": float(rms[0]), "detail_rms_mm": float(rms[1]), "total_rms_mm": float(rms[2]),
            "reflectance_rms_rgb": float(rms[3]), "reflectance_applied_rms_rgb": float(rms[4]),
            "subjects": len(first)}
