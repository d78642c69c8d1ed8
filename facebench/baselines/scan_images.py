"""Network inputs from scan datasets: sRGB face crops → linear-RGB tensors at a network's size.

Scan datasets (MICC, FaceWarehouse files of ``facebench datasets prepare``) store their face crops
**sRGB** as captured, at their own size S×S, while the learned baselines are trained on facebench's
**linear-RGB** synthetic renders. :func:`scan_dataset_images` decodes sRGB to linear light
(IEC 61966-2-1, a 256-entry table) and then resizes (bilinear with antialiasing, in linear light,
where averaging pixels is physically right).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["scan_dataset_images"]


def _srgb_table() -> torch.Tensor:
    """Linear value of each 8-bit sRGB code (IEC 61966-2-1), ``(256,)`` float32."""
    c = np.arange(256, dtype=np.float64) / 255.0
    return torch.from_numpy(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32))


def scan_dataset_images(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """sRGB ``uint8 (B,S,S,3)`` crops → linear RGB ``float32 (B,3,H,W)`` in [0, 1] at ``size = (H, W)``.

    sRGB is decoded to linear light first, then the images are resized (bilinear, antialiased,
    ``align_corners=False``); an image already at ``size`` is only decoded.
    """
    import torch.nn.functional as F

    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (B,H,W,3), got {array.dtype} {array.shape}")
    linear = _srgb_table()[torch.from_numpy(array).long()].permute(0, 3, 1, 2).contiguous()
    if tuple(linear.shape[2:]) == tuple(size):
        return linear
    resized = F.interpolate(linear, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.clamp_(0.0, 1.0)

