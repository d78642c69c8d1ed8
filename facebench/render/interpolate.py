"""Barycentric interpolation of per-vertex attributes over rasterized fragments."""

from __future__ import annotations

import torch

from facebench.render.rasterizer import Fragments

__all__ = ["interpolate"]


def interpolate(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Per-pixel values ``(B, H, W, C)`` of per-vertex ``attributes`` ``(V, C)`` or ``(B, V, C)``.

    At a covered pixel the value is ``sum_i bary_i * attributes[faces[face_id, i]]`` with the
    perspective-correct barycentrics of :class:`Fragments` (so attributes that are affine in
    camera-frame 3D space, e.g. the camera coordinates themselves, are reproduced exactly);
    background pixels are zero. Differentiable w.r.t. ``attributes`` and, through
    ``fragments.packed_bary``, w.r.t. the vertex positions given to :func:`rasterize`. Units and
    frames are the attributes' own. The result is a channel-last view of channel-major storage.
    """
    batch, height, width = fragments.shape
    if attributes.ndim not in (2, 3):
        raise ValueError(f"attributes must be (V,C) or (B,V,C), got {tuple(attributes.shape)}")
    if attributes.ndim == 3 and attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes batch {attributes.shape[0]} != fragments batch {batch}")
    channels = attributes.shape[-1]
    dtype = torch.promote_types(attributes.dtype, fragments.packed_bary.dtype)
    ids = fragments.packed_vertex_ids  # (3, N)
    n = ids.shape[1]
    if attributes.ndim == 3 and attributes.shape[0] > 1:
        ids = ids + fragments.packed_image * attributes.shape[1]
    flat_ids = ids.reshape(-1)
    table = attributes.reshape(-1, channels)
    bary = fragments.packed_bary.to(dtype)
    rows = []
    for c in range(channels):
        corner = table[:, c].to(dtype).index_select(0, flat_ids).view(3, n)
        rows.append(bary[0] * corner[0] + bary[1] * corner[1] + bary[2] * corner[2])
    values = torch.stack(rows) if rows else bary.new_zeros(0, n)
    out = bary.new_zeros(channels, batch * height * width)
    out = out.index_copy(1, fragments.pix_index, values)
    return out.view(channels, batch, height, width).permute(1, 2, 3, 0)
