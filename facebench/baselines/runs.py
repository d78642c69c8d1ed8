"""Run plumbing shared by the learned baselines of both papers (Ramon et al. 2019's regressor and
Tewari et al. 2018's multi-level model): run folders, checkpoints, training sets and their face model,
training logs.

- :func:`open_run_folder`: refuse a non-empty run folder unless resuming or overwriting;
- :func:`read_checkpoint` / :func:`checkpoint_format` / :func:`save_checkpoint`: checkpoints read with
  ``torch.load(..., weights_only=True)`` (plain data and tensors only; nothing is unpickled) and
  written atomically;
- :func:`open_training_sets`, :func:`model_for_dataset`, :func:`check_model`: the training and
  validation sets and the face model they were made with (digest-checked);
- :func:`write_log`: the per-epoch / per-iteration CSV log; :func:`mean_translation`: the training
  set's mean camera translation (mm), the translation heads' initial bias.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebench.atomic import atomic_path
from facebench.errors import FacebenchError, InputFileError

__all__ = ["open_run_folder", "check_prediction_outputs", "dataset_model", "read_checkpoint", "checkpoint_format", "save_checkpoint", "open_training_sets",
           "model_for_dataset", "check_model", "write_log", "mean_translation"]


def read_checkpoint(path: str | Path, *, fmt: str, version: int, what: str, keys: tuple[str, ...] = (),
                    mmap: bool = False) -> dict[str, Any]:
    """Read a facebench checkpoint with ``weights_only=True`` and check its ``format``, ``version``
    and that ``keys`` hold dicts; InputFileError (one line) otherwise. ``mmap``: map the tensors
    instead of reading them (a cheap look at the header)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - truncated files, pickles of other classes...
        raise InputFileError(path, f"not a checkpoint readable with weights_only=True ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != fmt:
        raise InputFileError(path, f"not a facebench {what} checkpoint (no format {fmt!r})")
    if checkpoint.get("version") != version:
        raise InputFileError(path, f"unsupported checkpoint version {checkpoint.get('version')!r}")
    for key in keys:
        if not isinstance(checkpoint.get(key), dict):
            raise InputFileError(path, f"checkpoint lacks {key!r}")
    return checkpoint


def checkpoint_format(path: str | Path) -> str | None:
    """The ``format`` of a checkpoint file (tensors memory-mapped, not read), None when unreadable."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything unreadable is "no known format"
        return None
    return checkpoint.get("format") if isinstance(checkpoint, dict) else None


def model_for_dataset(dataset, model_path: str | Path | None = None):
    """The face model a dataset file was made with.

    ``dataset``: a :class:`~facebench.datasets.dataset_file.FaceDataset`. Loads
    ``facebench.models.load(attrs["model"], path)`` with ``path`` = ``model_path`` or the
    ``model_spec`` attribute's path; checks ``model_digest`` (when the file has one) and the vertex
    count. InputFileError when the file names no model or the model differs.
    """
    from facebench.models import load

    attrs = dataset.attrs
    name = attrs.get("model")
    if not isinstance(name, str) or not name:
        raise InputFileError(dataset.path, "the dataset names no face model (attribute 'model'); "
                                           "the regressor needs the model's identity space")
    spec = attrs.get("model_spec") if isinstance(attrs.get("model_spec"), dict) else {}
    path = model_path if model_path is not None else spec.get("path")
    model = load(name, path)
    check_model(dataset, model)
    return model


def check_model(dataset, model) -> None:
    if getattr(dataset, "is_scan_dataset", False):
        return  # scans have their own topologies: any model can be scored against them
    digest = dataset.attrs.get("model_digest")
    if isinstance(digest, str) and digest and digest != model.digest():
        raise InputFileError(dataset.path, f"made with another {model.name!r} model (digest {digest[:12]}, "
                                           f"loaded {model.digest()[:12]})")
    if dataset.n_vertices != model.n_vertices:
        raise InputFileError(dataset.path, f"vertices have {dataset.n_vertices} vertices but model "
                                           f"{model.name!r} has {model.n_vertices}")


def _nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def open_training_sets(dataset: str | Path, val: str | Path | None, model=None):
    """Open the training set (refused when empty) and the optional validation set, and resolve the
    face model (default: the training set's; both sets must have been made with it). Returns
    ``(model, train_set, val_set or None)``; InputFileError / FacebenchError (one line)."""
    from facebench.datasets.dataset_file import FaceDataset

    train_set = FaceDataset(dataset)
    if len(train_set) < 1:
        raise InputFileError(train_set.path, "dataset has no samples")
    val_set = FaceDataset(val) if val is not None else None
    model = dataset_model(train_set, model)
    if val_set is not None:
        check_model(val_set, model)
    return model, train_set, val_set


def open_run_folder(out: Path, *, resume: bool, overwrite: bool, load: Callable[[Path], dict],
                    checkpoint: str = "model.pt") -> dict | None:
    """Check a run folder before any work: ``resume`` returns ``load(out / checkpoint)`` (an
    :class:`InputFileError` when there is none); otherwise a non-empty folder is refused unless
    ``overwrite``. Returns None when starting afresh."""
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    if resume:
        if not (out / checkpoint).is_file():
            raise InputFileError(out, f"nothing to resume: no {checkpoint} in the run folder")
        return load(out / checkpoint)
    if _nonempty_dir(out) and not overwrite:
        raise InputFileError(out, "run folder exists and is not empty (use --resume to continue or "
                                  "--overwrite to start again)")
    return None


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a temporary file renamed over it). Saved through
    an open file, so the archive's inner folder is torch's fixed ``archive`` rather than the random
    temporary name: the same object gives the same bytes (bit-exact reruns)."""
    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def write_log(history: list[dict], path: Path, columns) -> None:
    """One CSV row per entry of ``history`` with ``columns`` (others ignored), floats to 6 significant
    digits, written atomically."""
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def mean_translation(train_set) -> np.ndarray:
    """Mean ``t (3,)`` mm of a training set: the translation head's initial bias."""
    total, n = np.zeros(3), len(train_set)
    for start in range(0, n, 4096):
        total += np.asarray(train_set.read("t", start, min(n, start + 4096)), np.float64).sum(axis=0)
    return total / n


def dataset_model(dataset, model=None):
    """``model`` checked against ``dataset`` (:func:`check_model`), or, when None, the face model
    the dataset was made with (:func:`model_for_dataset`)."""
    if model is None:
        return model_for_dataset(dataset)
    check_model(dataset, model)
    return model


def check_prediction_outputs(outputs, *, overwrite: bool, batch_size: int) -> None:
    """Before a prediction: each of ``outputs`` (paths, None skipped) may exist only with
    ``overwrite``, and ``batch_size`` must be >= 1. InputFileError / FacebenchError (one line)."""
    for path in outputs:
        if path is not None and Path(path).exists() and not overwrite:
            raise InputFileError(path, "exists already (use --overwrite to replace it)")
    if batch_size < 1:
        raise FacebenchError(f"--batch must be >= 1, got {batch_size}")
