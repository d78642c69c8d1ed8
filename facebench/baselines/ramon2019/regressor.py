"""The regressor of Ramon et al. 2019: image encoder, three MLP heads, a frozen linear 3DMM layer.

``Regressor(model)(images (B, 3, H, W))`` returns a dict of

- ``identity (B, k)``: identity coefficients in standard-deviation units (the first ``k`` modes),
- ``q (B, 4)``: a unit quaternion (w, x, y, z) of the head → camera rotation (a layer divides the
  head's output by its norm),
- ``t (B, 3)``: the head → camera translation, mm (``x_cam = R(q) x + t``),
- ``vertices (B, V, 3)``: ``x̂ = mean + Σ_k basis_k σ_k α_k``, head frame, mm (frozen 3DMM layer;
  expressions are not regressed, as in the paper).

Images are linear RGB in [0, 1] (:class:`facebench.datasets.dataset_file.TorchFaceDataset`); the
encoder first normalizes them with the ImageNet mean/std (what torchvision VGG weights expect).

**Heads**: ``Linear(features, 256) → ReLU → Linear(256, out)``. **Initialization** (the paper's, in
facebench's frame): the last layer of every head has zero weights, and its bias is 0 for the
identity (α = 0: the mean shape), :data:`facebench.conventions.Q_FRONT` for the quaternion (the
frontal camera ``R_FRONT = diag(1, −1, −1)``) and ``init_translation`` for the translation — by
default ``(0, 0, init_distance_mm)``; :func:`facebench.baselines.ramon2019.training.train` passes the
**training set's mean t** (the camera of the synthetic sets looks at the face's centre, not at the
head origin, so the mean t has small x, y components besides the mean distance).

**Encoders**:

- ``vgg16``: the VGG-16 convolution stack (13 conv3x3 + ReLU, 5 max-pools; 64-128-256-512-512
  channels) with torchvision's module indices (``features.N.weight``), followed by global average
  pooling to 512 features (instead of VGG's 7×7×512 flatten and 4096-wide FC layers, so any image
  size ≥ 32 px works and the heads stay small). Trained from scratch by default; a local
  torchvision-format state dict (``vgg16-*.pth``) can be loaded with ``vgg16_weights=PATH``
  (only the ``features.*`` keys are used; :func:`load_vgg16_features`). 14.7 M parameters.
- ``small``: five stride-2 conv3x3 blocks (32-64-128-256-256 channels, GroupNorm(8) + ReLU) and
  global average pooling: 1.2 M parameters, a few ms per 64 px image on one CPU core (see
  ``perf/bench_training.py``). GroupNorm rather than BatchNorm: no batch statistics, so a
  DDP run equals a single-process run on the same global batch, and eval equals train mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facebench import conventions as cv
from facebench.baselines.encoders import (
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SmallEncoder,
    VGG16Encoder,
    load_vgg16_features,
)
from facebench.errors import FacebenchError

__all__ = [
    "HIDDEN",
    "QuaternionNormalize",
    "Linear3DMM",
    "Regressor",
]

#: Width of the hidden layer of every head.
HIDDEN = 256


class QuaternionNormalize(nn.Module):
    """``q / max(‖q‖, eps)`` over the last dimension: a unit quaternion from any 4-vector."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(self.eps)


class Linear3DMM(nn.Module):
    """Frozen linear shape layer ``x̂ = mean + basis · α`` for identity coefficients α in std units.

    Buffers (not saved in state dicts: they are rebuilt from the model, whose digest the
    checkpoint records): ``mean (V, 3)`` mm and ``basis (3V, k)`` = the first ``k`` identity modes
    scaled by their std (mm per std). ``forward(alpha (B, k)) -> (B, V, 3)``.
    """

    def __init__(self, model, n_identity: int):
        super().__init__()
        if not 1 <= n_identity <= model.n_identity:
            raise FacebenchError(f"n_identity must be in [1, {model.n_identity}] for model {model.name!r}, "
                                 f"got {n_identity}")
        mean = torch.from_numpy(np.asarray(model.mean, np.float32).copy())
        basis = np.asarray(model.identity_basis[:, :, :n_identity], np.float32) * np.asarray(
            model.identity_std[:n_identity], np.float32)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("basis", torch.from_numpy(basis.reshape(-1, n_identity).copy()), persistent=False)
        self.n_vertices = int(mean.shape[0])

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.mean + (alpha @ self.basis.T).reshape(alpha.shape[0], self.n_vertices, 3)


def _head(in_features: int, out_features: int, bias: torch.Tensor) -> nn.Sequential:
    """``Linear(in, 256) → ReLU → Linear(256, out)`` whose last layer starts at weights 0, ``bias``."""
    head = nn.Sequential(nn.Linear(in_features, HIDDEN), nn.ReLU(inplace=True), nn.Linear(HIDDEN, out_features))
    nn.init.zeros_(head[2].weight)
    with torch.no_grad():
        head[2].bias.copy_(bias)
    return head


class Regressor(nn.Module):
    """Encoder + identity/quaternion/translation heads + frozen 3DMM layer (module docstring).

    Args:
        model: the :class:`~facebench.models.MorphableModel` whose identity space is regressed.
        encoder: ``"small"`` or ``"vgg16"``.
        n_identity: identity modes regressed (default ``min(100, model.n_identity)``).
        image_size: ``(H, W)`` (or one int) of the training images, pixels; recorded in
            :meth:`config` and checked by :meth:`forward`.
        init_distance_mm: the initial camera distance (translation bias ``(0, 0, d)``), mm.
        init_translation: ``(3,)`` mm, overrides ``(0, 0, init_distance_mm)`` (e.g. a training
            set's mean t).
        vgg16_weights: optional local torchvision VGG-16 state dict (``encoder="vgg16"`` only).
    """

    def __init__(self, model, *, encoder: str = "small", n_identity: int | None = None,
                 image_size: int | tuple[int, int] = 224, init_distance_mm: float = 600.0,
                 init_translation=None, vgg16_weights: str | Path | None = None):
        super().__init__()
        if encoder not in ENCODERS:
            raise FacebenchError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        if vgg16_weights is not None and encoder != "vgg16":
            raise FacebenchError("--vgg16-weights needs --encoder vgg16")
        size = (int(image_size), int(image_size)) if np.ndim(image_size) == 0 else tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 32:
            raise FacebenchError(f"image size must be (H, W) with H, W >= 32 px, got {image_size}")
        n_identity = min(100, model.n_identity) if n_identity is None else int(n_identity)
        translation = (np.array([0.0, 0.0, float(init_distance_mm)]) if init_translation is None
                       else np.asarray(init_translation, np.float64).reshape(3))
        if not np.all(np.isfinite(translation)) or translation[2] <= 0:
            raise FacebenchError(f"the initial translation must be finite with z > 0 mm, got {translation.tolist()}")
        self.encoder_name = encoder
        self.image_size = size
        self.model_name = model.name
        self.model_digest = model.digest()
        self.encoder = VGG16Encoder() if encoder == "vgg16" else SmallEncoder()
        if vgg16_weights is not None:
            load_vgg16_features(self.encoder, vgg16_weights)
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        width = self.encoder.out_features
        self.identity_head = _head(width, n_identity, torch.zeros(n_identity))
        self.rotation_head = _head(width, 4, torch.tensor(np.array(cv.Q_FRONT), dtype=torch.float32))
        self.translation_head = _head(width, 3, torch.as_tensor(translation, dtype=torch.float32))
        self.normalize = QuaternionNormalize()
        self.shape_layer = Linear3DMM(model, n_identity)
        self.n_identity = n_identity
        self.init_translation = [float(v) for v in translation]

    def config(self) -> dict[str, Any]:
        """Plain (JSON-able) description that :meth:`from_config` rebuilds the architecture from."""
        return {
            "encoder": self.encoder_name,
            "n_identity": self.n_identity,
            "image_size": list(self.image_size),
            "init_translation": list(self.init_translation),
            "model": self.model_name,
            "model_digest": self.model_digest,
            "n_vertices": self.shape_layer.n_vertices,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], model) -> Regressor:
        """Rebuild a regressor (random weights) from :meth:`config` for ``model``; FacebenchError
        when ``model`` is not the one the config was made with (name, digest or vertex count)."""
        if config.get("encoder") not in ENCODERS:
            raise FacebenchError(f"checkpoint encoder {config.get('encoder')!r} is not one of {', '.join(ENCODERS)}")
        if config.get("model_digest") not in (None, model.digest()) or config.get("n_vertices") not in (
                None, model.n_vertices):
            raise FacebenchError(f"the checkpoint was trained with face model {config.get('model')!r} "
                                 f"(digest {str(config.get('model_digest'))[:12]}, {config.get('n_vertices')} vertices); "
                                 f"the dataset's model {model.name!r} differs (digest {model.digest()[:12]}, "
                                 f"{model.n_vertices} vertices)")
        return cls(model, encoder=config["encoder"], n_identity=int(config["n_identity"]),
                   image_size=tuple(config["image_size"]), init_translation=config.get("init_translation"))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images (B, 3, H, W)`` linear RGB in [0, 1] → identity, q, t, vertices (module docstring)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"images must be (B, 3, {self.image_size[0]}, {self.image_size[1]}); "
                             f"got {tuple(images.shape)}")
        features = self.encoder((images - self.input_mean) / self.input_std)
        identity = self.identity_head(features)
        return {
            "identity": identity,
            "q": self.normalize(self.rotation_head(features)),
            "t": self.translation_head(features),
            "vertices": self.shape_layer(identity),
        }
