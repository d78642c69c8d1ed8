"""Run a trained regressor on a dataset: checkpoints, the dataset's face model, submissions.

- :func:`load_checkpoint` reads a training checkpoint (``RUN/model.pt`` or ``RUN/best.pt``) with
  ``torch.load(..., weights_only=True)`` — it holds state dicts and plain config only.
- :func:`model_for_dataset` loads the face model a dataset file names (attrs ``model``,
  ``model_spec``) and checks its digest against the file's ``model_digest``.
- :func:`regressor_from_checkpoint` rebuilds the :class:`~facebench.baselines.ramon2019.regressor.Regressor`
  from the checkpoint's config and the dataset's model (FacebenchError on another architecture or
  another face model).
- :func:`iterate_predictions` yields predictions batch by batch; :func:`predict` writes them as an
  HDF5 submission (``vertices``, ``q``, ``t``, the dataset's ``landmark_indices``) that
  ``facebench score`` takes; :func:`evaluate` returns the mean validation metrics.

**Scan datasets** (MICC, FaceWarehouse files of ``facebench datasets prepare``): their images are
face crops stored **sRGB** as captured, at their own size S×S, while the regressors were trained
on facebench's **linear-RGB** synthetic renders of ``image_size``. :func:`scan_dataset_images`
decodes sRGB to linear light (IEC 61966-2-1, a 256-entry table) and then resizes to the
regressor's size (bilinear with antialiasing, in linear light, where averaging pixels is
physically right). The face model comes from the checkpoint (:func:`model_for_checkpoint`: the
regressor config's model name, the training set's model path), since a scan dataset names none;
the submission carries the model's faces and the scan landmark set's vertex indices
(:func:`facebench.benchmark.landmark_sets.landmark_indices_for`) and no pose (the scans have no
ground-truth camera).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench.baselines.runs import check_prediction_outputs, dataset_model, read_checkpoint
from facebench.baselines.scan_images import scan_dataset_images
from facebench.device import resolve_device
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "model_for_checkpoint",
    "iterate_scan_predictions",
    "regressor_from_checkpoint",
    "iterate_predictions",
    "evaluate",
    "predict",
]

CHECKPOINT_FORMAT = "facebench-regressor-checkpoint"
CHECKPOINT_VERSION = 1



def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a regressor checkpoint with ``weights_only=True``; InputFileError (one line) when the
    file is missing, unreadable, or not a facebench regressor checkpoint of a known version."""
    checkpoint = read_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="regressor",
                                 keys=("config", "regressor"))
    if not isinstance(checkpoint["config"].get("regressor"), dict):
        raise InputFileError(path, "checkpoint lacks the regressor configuration")
    return checkpoint



def model_for_checkpoint(checkpoint: dict[str, Any], model_path: str | Path | None = None, *,
                         path: str | Path | None = None):
    """The face model a checkpoint's regressor was trained with (for datasets that name none).

    Loads ``facebench.models.load(name, model_path)`` with the regressor config's model name; without
    ``model_path``, the path recorded in the training set's ``model_spec`` (when that file is still
    there) or none (the procedural model needs none). FacebenchError (one line) when it cannot be
    loaded or its digest differs from the checkpoint's.
    """
    from facebench.models import load

    where = f"{path}: " if path is not None else ""
    arch = checkpoint["config"]["regressor"]
    name = arch.get("model")
    if not isinstance(name, str) or not name:
        raise FacebenchError(f"{where}the checkpoint names no face model")
    if model_path is None:
        model_path = _training_model_path(checkpoint)
    try:
        model = load(name, model_path)
    except FacebenchError as error:
        raise FacebenchError(f"{where}cannot load the run's face model {name!r} ({error}); give its path") from None
    digest = arch.get("model_digest")
    if digest not in (None, model.digest()):
        raise FacebenchError(f"{where}trained with another {name!r} model (digest {str(digest)[:12]}, loaded "
                             f"{model.digest()[:12]}); give the right model path")
    return model


def _training_model_path(checkpoint: dict[str, Any]) -> str | None:
    from facebench.datasets.dataset_file import FaceDataset

    train = checkpoint["config"].get("train") or {}
    dataset = train.get("dataset") if isinstance(train, dict) else None
    if not isinstance(dataset, str) or not Path(dataset).is_file():
        return None
    try:
        spec = FaceDataset(dataset).attrs.get("model_spec")
    except (InputFileError, OSError):
        return None
    return spec.get("path") if isinstance(spec, dict) else None



def regressor_from_checkpoint(checkpoint: dict[str, Any], model, *, path: str | Path | None = None):
    """The :class:`Regressor` of ``checkpoint`` with its trained weights, for ``model``.

    FacebenchError (one line, naming ``path``) when the checkpoint's face model differs from
    ``model`` or its weights do not fit the architecture its config describes.
    """
    from facebench.baselines.ramon2019.regressor import Regressor

    where = f"{path}: " if path is not None else ""
    try:
        regressor = Regressor.from_config(checkpoint["config"]["regressor"], model)
    except (FacebenchError, KeyError, TypeError, ValueError) as error:
        raise FacebenchError(f"{where}{error}") from None
    try:
        regressor.load_state_dict(checkpoint["regressor"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else "mismatch"
        raise FacebenchError(f"{where}weights do not match the {regressor.encoder_name} regressor "
                             f"architecture ({detail[:160]})") from None
    return regressor


def _check_image_size(dataset, regressor) -> None:
    if getattr(dataset, "is_scan_dataset", False):
        return  # crops are resized to the regressor's size (scan_dataset_images)
    size = dataset.attrs.get("image_size")
    if size is not None and tuple(int(s) for s in size) != tuple(regressor.image_size):
        raise InputFileError(dataset.path, f"images are {size[0]}x{size[1]} px but the regressor was built for "
                                           f"{regressor.image_size[0]}x{regressor.image_size[1]}")


def iterate_predictions(regressor, dataset_path: str | Path, *, device="cpu", batch_size: int = 32,
                        workers: int = 0) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]]:
    """Yield ``(batch, prediction)`` over a dataset file in order, in eval mode without gradients.

    ``batch``: the collated :class:`TorchFaceDataset` items (CPU tensors: ``index``, ``vertices``,
    ``q``, ``t``, ``K``...); ``prediction``: numpy float64 ``vertices (b, V, 3)`` mm,
    ``q (b, 4)`` unit, ``t (b, 3)`` mm, ``identity (b, k)``.
    """
    from torch.utils.data import DataLoader

    from facebench.datasets.dataset_file import TorchFaceDataset

    device = resolve_device(device)
    data = TorchFaceDataset(dataset_path)
    _check_image_size(data.reader, regressor)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    was_training = regressor.training
    regressor.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                out = regressor(batch["image"].to(device, non_blocking=True))
                yield batch, {k: v.detach().to("cpu", torch.float64).numpy() for k, v in out.items()}
    finally:
        regressor.train(was_training)



def iterate_scan_predictions(regressor, dataset, *, device="cpu", batch_size: int = 32
                             ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(indices (b,), prediction)`` over a scan dataset's images (see
    :func:`scan_dataset_images`), in order, eval mode, no gradients; prediction as in
    :func:`iterate_predictions`. ``dataset``: a :class:`FaceDataset` or its path."""
    from facebench.datasets.dataset_file import FaceDataset

    device = resolve_device(device)
    reader = dataset if isinstance(dataset, FaceDataset) else FaceDataset(dataset)
    was_training = regressor.training
    regressor.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(reader), batch_size):
                stop = min(start + batch_size, len(reader))
                images = scan_dataset_images(reader.read("images", start, stop), regressor.image_size)
                out = regressor(images.to(device))
                yield np.arange(start, stop), {k: v.detach().to("cpu", torch.float64).numpy() for k, v in out.items()}
    finally:
        regressor.train(was_training)


def evaluate(regressor, dataset_path: str | Path, *, device="cpu", batch_size: int = 32,
             workers: int = 0) -> dict[str, float]:
    """Mean metrics of ``regressor`` on a dataset, by the functions of
    :mod:`facebench.benchmark.metrics` that ``facebench score`` uses: ``shape_mm`` (corresponding
    topology, head frame), ``translation_cm``, ``rotation_deg``, ``reprojection_px``; NaN where
    the prediction is not finite."""
    from facebench.benchmark import metrics

    values: dict[str, list[np.ndarray]] = {"shape_mm": [], "translation_cm": [], "rotation_deg": [],
                                           "reprojection_px": []}
    for batch, pred in iterate_predictions(regressor, dataset_path, device=device, batch_size=batch_size,
                                           workers=workers):
        x, q, t, K = (batch[k].double().numpy() for k in ("vertices", "q", "t", "K"))
        values["shape_mm"].append(metrics.shape_error_mm(x, pred["vertices"]))
        values["translation_cm"].append(metrics.translation_error_cm(t, pred["t"]))
        values["rotation_deg"].append(metrics.rotation_error_deg(q, pred["q"]))
        values["reprojection_px"].append(metrics.reprojection_error_px(x, q, t, pred["vertices"], pred["q"],
                                                                       pred["t"], K))
    return {k: float(np.mean(np.concatenate(v))) for k, v in values.items()}


def predict(checkpoint: str | Path, dataset: str | Path, out: str | Path, *, device="cpu", batch_size: int = 32,
            workers: int = 0, method: str | None = None, model=None, model_path: str | Path | None = None,
            overwrite: bool = False) -> Path:
    """Write the predictions of a trained regressor on ``dataset`` as an HDF5 submission.

    Args:
        checkpoint: ``RUN/model.pt`` or ``RUN/best.pt`` (read with ``weights_only=True``).
        dataset: a facebench dataset file made with the face model the regressor was trained on,
            or a scan dataset (MICC, FaceWarehouse; see the module docstring).
        out: the submission (``.h5``), written atomically: ``ids``, ``vertices (N,V,3)`` float32 mm
            head frame, ``q (N,4)`` unit, ``t (N,3)`` mm, the dataset's ``landmark_indices``;
            attrs ``method`` (default: the run's), ``checkpoint_epoch``, ``encoder``, ``loss``.
            For a scan dataset: ``faces`` (the model's), ``landmark_indices`` of the dataset's
            scan landmark set on the model, no ``q``/``t``, attr ``image_conversion``.
        model: the face model (default: loaded from the dataset's attributes; for a scan dataset,
            from the checkpoint, see :func:`model_for_checkpoint`).
        model_path: the face model's file for models read from a file.
        overwrite: replace an existing ``out``.

    Returns:
        ``out`` as a Path. Raises InputFileError / FacebenchError (one line) on bad input.
    """
    from facebench.benchmark.submission_writer import SubmissionWriter
    from facebench.datasets.dataset_file import FaceDataset

    out = Path(out)
    check_prediction_outputs([out], overwrite=overwrite, batch_size=batch_size)
    device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    reader = FaceDataset(dataset)
    if reader.is_scan_dataset:
        return _predict_scans(ckpt, checkpoint, reader, out, device=device, batch_size=batch_size, method=method,
                              model=model, model_path=model_path)
    model = dataset_model(reader, model)
    regressor = regressor_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    _check_image_size(reader, regressor)
    ids = reader.ids
    run = ckpt["config"]
    attrs = {"checkpoint_epoch": int(ckpt.get("epoch", 0)), "encoder": regressor.encoder_name,
             "loss": str(run.get("train", {}).get("loss", "")), "model": model.name}
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices, method=method or run.get("method", "regressor"),
                          landmark_indices=reader.landmark_indices, with_pose=True, attrs=attrs) as writer:
        for batch, pred in iterate_predictions(regressor, dataset, device=device, batch_size=batch_size,
                                               workers=workers):
            index = batch["index"].numpy()
            start = int(index[0])
            writer.write(start, ids=[ids[i] for i in index], vertices=pred["vertices"], q=pred["q"], t=pred["t"])
    return out


def _predict_scans(ckpt, checkpoint, reader, out: Path, *, device, batch_size: int, method, model, model_path) -> Path:
    """:func:`predict` on a scan dataset (module docstring): the run's model, its faces and the
    protocol landmark set's vertex indices, no pose."""
    from facebench.benchmark.landmark_sets import landmark_indices_for
    from facebench.benchmark.submission_writer import SubmissionWriter

    if model is None:
        model = model_for_checkpoint(ckpt, model_path, path=checkpoint)
    regressor = regressor_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    landmark_set = str(reader.attrs.get("landmark_set", ""))
    try:
        landmark_indices = landmark_indices_for(model, landmark_set)
    except FacebenchError as error:
        raise FacebenchError(f"{reader.path}: {error}") from None
    ids = reader.ids
    run = ckpt["config"]
    size = reader.attrs.get("image_size") or ["?", "?"]
    attrs = {"checkpoint_epoch": int(ckpt.get("epoch", 0)), "encoder": regressor.encoder_name,
             "loss": str(run.get("train", {}).get("loss", "")), "model": model.name, "landmark_set": landmark_set,
             "image_conversion": f"sRGB {size[0]}x{size[1]} -> linear RGB {regressor.image_size[0]}x"
                                 f"{regressor.image_size[1]} (decode, then bilinear antialiased resize)"}
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices, method=method or run.get("method", "regressor"),
                          faces=np.asarray(model.faces), landmark_indices=landmark_indices, attrs=attrs) as writer:
        for index, pred in iterate_scan_predictions(regressor, reader, device=device, batch_size=batch_size):
            writer.write(int(index[0]), ids=[ids[i] for i in index], vertices=pred["vertices"])
    return out
