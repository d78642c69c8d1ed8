"""The multi-level model's inputs from a facebench dataset file (self-supervised: images, masks,
2D landmarks and one intrinsics matrix; never the ground-truth shape).

- :func:`shared_K`: the dataset's one intrinsics matrix ``(3,3)`` (the model renders with one K);
- :func:`check_images`: square images of the model's size;
- :func:`batch_indices`: the sample indices of a training iteration, a function of ``(seed,
  iteration)`` only (so a resumed run equals an uninterrupted one);
- :class:`TrainingImages`: ``images (b,3,H,W)`` float [0,1], ``masks (b,H,W)``, ``landmarks_2d
  (b,68,2)`` px for a list of indices, held in memory when small.
"""

from __future__ import annotations

import numpy as np
import torch

from facebench.errors import InputFileError

__all__ = ["shared_K", "check_images", "batch_indices", "TrainingImages"]


def shared_K(dataset) -> np.ndarray:
    """The one intrinsics matrix ``(3,3)`` of a dataset; InputFileError when K varies per sample."""
    if dataset.shared_K is not None:
        return np.asarray(dataset.shared_K, np.float64)
    K = np.asarray(dataset.array("K"), np.float64)
    if not np.allclose(K, K[:1], rtol=0, atol=1e-9):
        raise InputFileError(dataset.path, "intrinsics K differ between samples; the multi-level model renders "
                                           "with one K (generate the set with one focal length)")
    return K[0]


def check_images(dataset, size: int) -> None:
    """InputFileError unless the dataset's images are square and ``size`` px (the model's input)."""
    hw = dataset.attrs.get("image_size")
    if hw is None:
        hw = list(dataset.read("images", 0, 1).shape[1:3])
    h, w = (int(v) for v in hw)
    if h != w:
        raise InputFileError(dataset.path, f"images are {h}x{w} px; the multi-level model takes square images")
    if h != size:
        raise InputFileError(dataset.path, f"images are {h} px but the model configuration says image_size={size} "
                                           "(set --image-size to the images' size)")


def batch_indices(n: int, batch: int, iteration: int, seed: int) -> np.ndarray:
    """Sample indices of iteration ``iteration`` (0-based): positions ``[iteration·batch,
    (iteration+1)·batch)`` of the concatenation of per-epoch permutations of ``range(n)``, epoch
    ``e`` permuted by ``numpy.random.default_rng((seed, e))``. Depends on nothing else (resume)."""
    positions = np.arange(iteration * batch, (iteration + 1) * batch)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(batch, np.int64)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng((int(seed), int(epoch))).permutation(n)
        where = epochs == epoch
        out[where] = permutation[offsets[where]]
    return out


class TrainingImages:
    """Training inputs of a dataset: ``images (b,3,H,W)`` float [0,1], ``masks (b,H,W)`` bool,
    ``landmarks_2d (b,68,2)`` px; held in memory when small (uint8), read lazily otherwise."""

    def __init__(self, dataset, max_bytes: int = 512 * 2**20):
        self.dataset = dataset
        h, w = (int(v) for v in dataset.read("images", 0, 1).shape[1:3])
        self.cached = len(dataset) * h * w * 4 <= max_bytes
        if self.cached:
            self.images = dataset.array("images")
            self.masks = dataset.array("masks")
            self.landmarks = dataset.array("landmarks_2d")

    def get(self, indices: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cached:
            images, masks, landmarks = self.images[indices], self.masks[indices], self.landmarks[indices]
        else:
            order = np.argsort(indices)
            rows = [self.dataset[int(i)] for i in indices[order]]
            back = np.argsort(order)
            images = np.stack([rows[j]["images"] for j in back])
            masks = np.stack([rows[j]["masks"] for j in back])
            landmarks = np.stack([rows[j]["landmarks_2d"] for j in back])
        images_t = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        return (images_t.contiguous(), torch.from_numpy(np.ascontiguousarray(masks)).to(device),
                torch.from_numpy(np.ascontiguousarray(landmarks)).to(device).float())

