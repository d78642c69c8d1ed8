"""Barycentric interpolation of per-vertex attributes over rasterized fragments."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facebench.render.rasterizer import Fragments

__all__ = ["interpolate"]


def interpolate(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Per-pixel values ``(B, H, W, C)`` of per-vertex ``attributes`` ``(V, C)`` or ``(B, V, C)``.

    At a covered pixel the value is ``sum_i bary_i * attributes[faces[face_id, i]]`` with the
    perspective-correct barycentrics of :class:`Fragments` (so attributes that are affine in
    camera-frame 3D space, e.g. the camera coordinates themselves, are reproduced exactly);
    background pixels are zero. Differentiable w.r.t. ``attributes`` and, through
    ``fragments.packed_bary``, w.r.t. the vertex positions given to :func:`rasterize`. Units and
    frames are the attributes' own. The result is contiguous (channel-last).
    """
    batch, height, width = fragments.shape
    if attributes.ndim not in (2, 3):
        raise ValueError(f"attributes must be (V,C) or (B,V,C), got {tuple(attributes.shape)}")
    if attributes.ndim == 3 and attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes batch {attributes.shape[0]} != fragments batch {batch}")
    channels = attributes.shape[-1]
    dtype = torch.promote_types(attributes.dtype, fragments.packed_bary.dtype)
    bary = fragments.packed_bary.T.to(dtype)  # (N, 3)
    out = bary.new_zeros(batch * height * width, channels)
    if channels == 0 or bary.shape[0] == 0:
        return out.view(batch, height, width, channels)
    ids = _vertex_ids(fragments, attributes)  # (N, 3)
    table = attributes.reshape(-1, channels).to(dtype)
    # Weighted sum of the three corner rows per pixel, in one fused gather.
    values = F.embedding_bag(ids, table, per_sample_weights=bary.contiguous(), mode="sum")
    out.index_copy_(0, fragments.pix_index, values)
    return out.view(batch, height, width, channels)


def _vertex_ids(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` rows of the flattened attribute table of each covered pixel's corners."""
    per_image = attributes.ndim == 3 and attributes.shape[0] > 1
    cached = fragments._flat_vertex_ids  # (V, ids into the flattened (B*V) vertices)
    single = fragments.shape[0] == 1  # then those are the vertex ids themselves
    if (per_image or single) and cached is not None and cached[0] == attributes.shape[-2]:
        return cached[1]
    ids = fragments.packed_vertex_ids.T
    if per_image:
        ids = ids + (fragments.packed_image * attributes.shape[1])[:, None]
    return ids.contiguous()
