"""Run a trained multi-level model: its checkpoints and predictions.

- :func:`load_multilevel_checkpoint` / :func:`is_multilevel_checkpoint` /
  :func:`model_from_checkpoint`: read a run's ``model.pt`` (``torch.load(..., weights_only=True)``)
  and rebuild the :class:`~facebench.baselines.tewari2018.model.MultiLevelModel`;
- :func:`iterate_reconstructions`: batches of reconstructions over a dataset (eval mode, no
  gradients);
- :func:`predict_multilevel`: an HDF5 submission of a level's meshes (``facebench score`` takes it)
  and optionally the compact codes; on scan datasets (MICC, FaceWarehouse) the sRGB face crops are
  decoded to linear light first (:mod:`facebench.baselines.scan_images`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench.baselines.runs import check_prediction_outputs, checkpoint_format, dataset_model, read_checkpoint
from facebench.baselines.scan_images import scan_dataset_images
from facebench.baselines.tewari2018.data import TrainingImages, check_images
from facebench.device import resolve_device
from facebench.errors import FacebenchError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_multilevel_checkpoint", "is_multilevel_checkpoint",
           "model_from_checkpoint", "iterate_reconstructions", "predict_multilevel"]

CHECKPOINT_FORMAT = "facebench-multilevel-checkpoint"


CHECKPOINT_VERSION = 1


def load_multilevel_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a multi-level checkpoint with ``weights_only=True``; InputFileError (one line) when
    missing, unreadable, or not a facebench multi-level checkpoint of a known version."""

    return read_checkpoint(path, fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="multi-level",
                           keys=("config", "model"))


def is_multilevel_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a multi-level checkpoint (the ``predict`` / Table 3 dispatch); looks at
    the header only (tensors memory-mapped), so a 0.5 GB checkpoint is not read twice."""

    return checkpoint_format(path) == CHECKPOINT_FORMAT


def model_from_checkpoint(checkpoint: dict, morphable_model, *, path: str | Path | None = None):
    """The trained :class:`MultiLevelModel` of a checkpoint dict, for ``morphable_model``;
    FacebenchError (naming ``path``) for another face model or weights that do not fit."""
    from facebench.baselines.tewari2018.model import MultiLevelModel

    where = f"{path}: " if path is not None else ""
    digest = checkpoint["config"].get("model_digest")
    if digest is not None and digest != morphable_model.digest():
        raise FacebenchError(f"{where}trained with another face model (digest {str(digest)[:12]}, "
                             f"loaded {morphable_model.digest()[:12]})")
    try:
        return MultiLevelModel.from_checkpoint(checkpoint["model"], morphable_model)
    except (FacebenchError, KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FacebenchError(f"{where}cannot rebuild the multi-level model ({first[:200]})") from None


def iterate_reconstructions(model, dataset, *, device, batch_size: int = 16, limit: int | None = None,
                            with_images: bool = False) -> Iterator[tuple[np.ndarray, Any, dict[str, torch.Tensor]]]:
    """Yield ``(indices, MultiLevelOutput, batch)`` over the first ``limit`` samples of a
    :class:`FaceDataset` in order, in eval mode without gradients; ``batch`` holds ``images
    (b,3,H,W)`` [0,1], ``masks (b,H,W)``, ``landmarks_2d (b,68,2)`` on ``device``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    source = TrainingImages(dataset)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                indices = np.arange(start, min(n, start + batch_size))
                images, masks, landmarks = source.get(indices, device)
                output = model.reconstruct(images)
                yield indices, output, {"images": images, "masks": masks, "landmarks_2d": landmarks}
    finally:
        model.train(was_training)


def predict_multilevel(checkpoint: str | Path, dataset: str | Path, out: str | Path, *, codes: str | Path | None = None,
                       device="cpu", batch_size: int = 32, method: str | None = None, model=None,
                       model_path: str | Path | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write the final-level predictions of a trained multi-level model on ``dataset``.

    ``out``: an HDF5 submission ``facebench score`` takes (``ids``, ``vertices (N,V,3)`` float32 mm
    head frame, ``q``, ``t`` mm, the dataset's ``landmark_indices``; attrs ``method``, ``model``,
    ``iteration``), written atomically. ``codes``: also the compact coefficient file of
    :func:`facebench.baselines.tewari2018.model.encode_reconstruction` (every regressed parameter,
    float32). Returns ``{"submission": out, "codes": codes}`` (codes only when asked).

    A **scan dataset** (MICC, FaceWarehouse) is predicted like the regressor does it
    (:func:`facebench.baselines.ramon2019.predict.predict`): its sRGB crops decoded to linear RGB and resized to
    the model's input, the final level's vertices with the face model's ``faces`` and the vertex
    indices of the dataset's scan landmark set, no pose (no codes); the face model is the one named
    by the checkpoint (``model_path`` for models read from a file).
    Raises InputFileError / FacebenchError (one line) on bad input.
    """
    from facebench.baselines.tewari2018.model import MultiLevelParams, encode_reconstruction
    from facebench.benchmark.submission_writer import SubmissionWriter
    from facebench.datasets.dataset_file import FaceDataset

    out = Path(out)
    check_prediction_outputs([out, codes], overwrite=overwrite, batch_size=batch_size)
    device = resolve_device(device)
    ckpt = load_multilevel_checkpoint(checkpoint)
    reader = FaceDataset(dataset)
    if reader.is_scan_dataset:
        return {"submission": _predict_scans(ckpt, checkpoint, reader, out, device=device, batch_size=batch_size,
                                             method=method, model=model, model_path=model_path)}
    model = dataset_model(reader, model)
    net = model_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    check_images(reader, net.config.image_size)
    ids = reader.ids
    run = ckpt["config"]
    attrs = {"iteration": int(ckpt.get("iteration", 0)), "model": model.name,
             "corrective_kind": str(run["model"].get("corrective_kind")),
             "n_correctives": int(run["model"].get("n_correctives", 0))}
    params: list = []
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices, method=method or run.get("method", "multilevel"),
                          landmark_indices=reader.landmark_indices, with_pose=True, attrs=attrs) as writer:
        for indices, output, _ in iterate_reconstructions(net, reader, device=device, batch_size=batch_size):
            p = output.params
            q = p.q / torch.linalg.norm(p.q, dim=-1, keepdim=True)
            writer.write(int(indices[0]), ids=[ids[i] for i in indices],
                         vertices=output.vertices_final.double().cpu().numpy(),
                         q=q.double().cpu().numpy(), t=p.t.double().cpu().numpy())
            if codes is not None:
                params.append(p.detach().to("cpu"))
    written = {"submission": out}
    if codes is not None:
        joined = {k: torch.cat([p.as_dict()[k] for p in params]) for k in params[0].as_dict()}
        written["codes"] = Path(encode_reconstruction(codes, MultiLevelParams(**joined), ids, config=net.config,
                                                      model_digest=model.digest()))
    return written


def _predict_scans(ckpt: dict, checkpoint, reader, out: Path, *, device, batch_size: int, method, model,
                   model_path) -> Path:
    """:func:`predict_multilevel` on a scan dataset (see there)."""
    from facebench.benchmark.landmark_sets import landmark_indices_for
    from facebench.benchmark.submission_writer import SubmissionWriter

    if model is None:
        from facebench.models import load

        name = str((ckpt.get("model") or {}).get("model") or "")
        try:
            model = load(name, model_path)
        except FacebenchError as error:
            raise FacebenchError(f"{checkpoint}: cannot load the run's face model {name!r} ({error}); give its path") \
                from None
    net = model_from_checkpoint(ckpt, model, path=checkpoint).to(device)
    landmark_set = str(reader.attrs.get("landmark_set", ""))
    try:
        landmark_indices = landmark_indices_for(model, landmark_set)
    except FacebenchError as error:
        raise FacebenchError(f"{reader.path}: {error}") from None
    ids, size = reader.ids, net.config.image_size
    crop = reader.attrs.get("image_size") or ["?", "?"]
    attrs = {"iteration": int(ckpt.get("iteration", 0)), "model": model.name, "landmark_set": landmark_set,
             "image_conversion": f"sRGB {crop[0]}x{crop[1]} -> linear RGB {size}x{size} "
                                 "(decode, then bilinear antialiased resize)"}
    net.eval()
    with SubmissionWriter(out, n=len(ids), n_vertices=model.n_vertices,
                          method=method or ckpt["config"].get("method", "multilevel"), faces=np.asarray(model.faces),
                          landmark_indices=landmark_indices, attrs=attrs) as writer, torch.no_grad():
        for start in range(0, len(ids), batch_size):
            stop = min(start + batch_size, len(ids))
            images = scan_dataset_images(reader.read("images", start, stop), (size, size)).to(device)
            output = net.reconstruct(images)
            writer.write(start, ids=ids[start:stop], vertices=output.vertices_final.double().cpu().numpy())
    return out

