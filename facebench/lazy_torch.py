"""torch, imported on first use.

Importing torch takes 1–2 s, more than scoring a few scans. Modules whose functions take numpy
arrays *or* tensors (:mod:`facebench.conventions`, :mod:`facebench.benchmark.metrics`) use
``from facebench.lazy_torch import torch, is_tensor``: ``torch.X`` imports torch the first time it
is looked up (and caches the attribute, so later look-ups cost a plain attribute access), and
:func:`is_tensor` answers without importing anything (no tensor can exist before torch is imported).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["torch", "is_tensor"]


def is_tensor(x: Any) -> bool:
    """True when ``x`` is a ``torch.Tensor``; never imports torch."""
    module = sys.modules.get("torch")
    return module is not None and isinstance(x, module.Tensor)


class _LazyTorch:
    """Stands for the torch module; the first attribute look-up imports it."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(importlib.import_module("torch"), name)
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return "<torch, imported on first use>"


torch: Any = _LazyTorch()
