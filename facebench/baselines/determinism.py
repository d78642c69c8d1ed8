"""Bit-exact reruns: same seed, same thread count, same device -> byte-identical checkpoints.

What each training calls:

- :func:`deterministic_torch`: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an
  operation without a deterministic implementation warns, naming itself, rather than stopping a
  CUDA training), cuDNN deterministic with
  autotuning off, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS's requirement for reproducible
  reductions on CUDA; set before the first cuBLAS call). Reduction order is then fixed for a given
  device, thread count and batch size; a different thread count or device may still change the
  last bits (documented, not hidden).
- :func:`loader_kwargs`: a seeded ``generator`` and :func:`seed_worker` for a ``DataLoader`` so that
  worker processes' numpy/``random`` streams derive from the loader's seed, not from the clock.
- :func:`without_wall_clock`: the log rows stored **in checkpoints** without wall-clock fields
  (``seconds``, ``val_seconds``, ``images_per_second``); ``log.csv`` keeps them, and
  :func:`restore_wall_clock` puts them back from it on resume.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["WALL_CLOCK_KEYS", "deterministic_torch", "seed_worker", "loader_kwargs", "without_wall_clock",
           "restore_wall_clock"]

#: Log fields measured with a clock (never stored in a checkpoint).
WALL_CLOCK_KEYS = ("seconds", "val_seconds", "images_per_second")


def deterministic_torch() -> None:
    """Make torch's algorithms deterministic for this process (module docstring)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` of a DataLoader worker from its torch seed
    (itself derived from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_kwargs(seed: int) -> dict:
    """``generator`` and ``worker_init_fn`` arguments of a reproducible ``DataLoader``."""
    return {"generator": torch.Generator().manual_seed(int(seed)), "worker_init_fn": seed_worker}


def without_wall_clock(history: list[dict]) -> list[dict]:
    """``history`` rows without :data:`WALL_CLOCK_KEYS` (what a checkpoint stores)."""
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_KEYS} for row in history]


def restore_wall_clock(history: list[dict], log_path: str | Path) -> list[dict]:
    """``history`` with the wall-clock fields of the same epochs read back from ``log.csv`` (rows
    absent from the log stay without them)."""
    path = Path(log_path)
    if not path.is_file():
        return history
    with open(path, newline="") as handle:
        logged = {row.get("epoch"): row for row in csv.DictReader(handle)}
    out = []
    for row in history:
        extra = logged.get(str(row.get("epoch")), {})
        restored = dict(row)
        for key in WALL_CLOCK_KEYS:
            if key not in restored and extra.get(key):
                try:
                    restored[key] = float(extra[key])
                except ValueError:
                    pass
        out.append(restored)
    return out
