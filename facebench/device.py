"""Choosing the torch device: one check for every command that runs torch code."""

from __future__ import annotations

import torch

from facebench.errors import FacebenchError


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``; FacebenchError for an unknown name or CUDA when none is present."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FacebenchError(f"unknown device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FacebenchError(f"device {str(device)!r} requested but CUDA is not available (use --device cpu)")
    return resolved
