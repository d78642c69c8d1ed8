"""Predictions in NoW's layout -> a facebench folder submission (``facebench datasets now-submission``).

NoW's convention (``compute_error.py`` of ``soubhiksanyal/now_evaluation``): for each listed image
``<subject>/<challenge>/<image>.jpg`` the prediction is ``PRED/<subject>/<challenge>/<image stem>.obj``
(or ``.ply``) with its seven landmarks in ``<image stem>.npy`` (read without pickle here) or
``<image stem>.txt`` (7 rows ``x y z``), in NoW's order (``now7``). The meshes are rewritten as
``<id>.ply`` in mm (``unit``: mm, cm or m, as NoW's metrical evaluation accepts) and the landmarks
go into ``manifest.json``; ids are those of a dataset prepared by
:func:`facebench.datasets.now.prepare_now`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError, InputFileError

__all__ = ["UNITS", "read_predicted_landmarks", "now_submission"]

#: Prediction units -> mm.
UNITS = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


def read_predicted_landmarks(stem: Path) -> np.ndarray:
    """The seven predicted landmarks next to a NoW prediction: ``<stem>.npy`` (no pickle) or
    ``<stem>.txt`` (7 rows ``x y z``), ``(7, 3)`` float64, prediction units."""
    npy, txt = stem.with_suffix(".npy"), stem.with_suffix(".txt")
    if npy.is_file():
        try:
            lm = np.load(npy, allow_pickle=False)
        except ValueError as error:
            raise InputFileError(npy, f"is not a plain numeric .npy array ({error})") from None
        path = npy
    elif txt.is_file():
        try:
            lm = np.loadtxt(txt, dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise InputFileError(txt, f"is not 7 rows of 'x y z' ({error})") from None
        path = txt
    else:
        raise InputFileError(stem.with_suffix(".npy"), "missing (nor .txt): NoW predictions need their 7 landmarks")
    lm = np.asarray(lm, np.float64)
    if lm.shape != (7, 3) or not np.isfinite(lm).all():
        raise InputFileError(path, f"must hold 7 finite landmarks (7, 3), got shape {lm.shape}")
    return lm


def now_submission(predictions: str | Path, dataset: str | Path, out: str | Path, *, method: str = "unnamed",
                   unit: str = "mm") -> dict:
    """Convert NoW-layout predictions for the samples of a prepared NoW ``dataset`` into a facebench
    folder submission at ``out`` (``<id>.ply`` meshes in mm and ``manifest.json`` with each id's
    landmarks). Samples without a prediction are left out (they lower the completion rate).

    Returns:
        ``{"written": n, "missing": [ids]}``.
    """
    from facebench.atomic import write_json
    from facebench.benchmark.submission_format import FORMAT, MANIFEST_NAME, VERSION
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.meshio import read_mesh, write_mesh

    if unit not in UNITS:
        raise FacebenchError(f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")
    predictions, out = Path(predictions), Path(out)
    if not predictions.is_dir():
        raise InputFileError(predictions, "predictions folder not found")
    ds = FaceDataset(dataset)
    if ds.kind != "now":
        raise FacebenchError(f"{dataset} is a {ds.kind!r} dataset; NoW predictions need one from 'datasets prepare now'")
    factor = UNITS[unit]
    out.mkdir(parents=True, exist_ok=True)
    landmarks, missing = {}, []
    for sid in ds.ids:
        subject, challenge, stem = sid.split("__", 2)
        base = predictions / subject / challenge / stem
        mesh_path = next((base.with_suffix(s) for s in (".obj", ".ply") if base.with_suffix(s).is_file()), None)
        if mesh_path is None:
            missing.append(sid)
            continue
        mesh = read_mesh(mesh_path)
        landmarks[sid] = (read_predicted_landmarks(base) * factor).tolist()
        write_mesh(out / f"{sid}.ply", np.asarray(mesh.vertices, np.float64) * factor, mesh.faces)
    write_json({"format": FORMAT, "version": VERSION, "method": method, "landmarks": landmarks}, out / MANIFEST_NAME)
    return {"written": len(landmarks), "missing": missing}
