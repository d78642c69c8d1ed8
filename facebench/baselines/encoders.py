"""Image encoders shared by the learned baselines: ``forward(images (B, 3, H, W)) -> (B, F)``.

Both papers' regressors (Ramon et al. 2019's :class:`~facebench.baselines.ramon2019.regressor.Regressor`
and Tewari et al. 2018's :class:`~facebench.baselines.tewari2018.model.MultiLevelModel`) put MLP heads on
one of these feature extractors; images are linear RGB in [0, 1] normalized by the caller.

- ``vgg16`` (:class:`VGG16Encoder`): the VGG-16 convolution stack (13 conv3x3 + ReLU, 5 max-pools;
  64-128-256-512-512 channels) with torchvision's module indices (``features.N.weight``), then global
  average pooling to 512 features (instead of VGG's 7×7×512 flatten and 4096-wide FC layers, so any
  image size ≥ 32 px works). A local torchvision-format state dict can be loaded with
  :func:`load_vgg16_features`. 14.7 M parameters.
- ``small`` (:class:`SmallEncoder`): five stride-2 conv3x3 blocks (32-64-128-256-256 channels,
  GroupNorm(8) + ReLU) and global average pooling: 1.2 M parameters. GroupNorm rather than
  BatchNorm: no batch statistics, so a DDP run equals a single-process run on the same global batch,
  and eval equals train mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facebench.errors import InputFileError

__all__ = ["ENCODERS", "IMAGENET_MEAN", "IMAGENET_STD", "SmallEncoder", "VGG16Encoder", "load_vgg16_features",
           "count_parameters"]

#: Encoder names accepted by the regressors.
ENCODERS = ("small", "vgg16")
#: ImageNet statistics (torchvision's VGG weights expect inputs normalized with them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: VGG-16 configuration "D": output channels of each conv, "M" a 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class SmallEncoder(nn.Module):
    """Five stride-2 conv3x3 + GroupNorm + ReLU blocks and global average pooling.

    ``forward(images (B, 3, H, W)) -> (B, out_features)``; channels 32-64-128-256-256.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256, 256), groups: int = 8):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(groups, width), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.out_features = previous

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


class VGG16Encoder(nn.Module):
    """The VGG-16 convolution stack (torchvision's ``features`` indices) + global average pooling.

    ``forward(images (B, 3, H, W)) -> (B, 512)``; H, W >= 32.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(previous, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                previous = int(item)
        self.features = nn.Sequential(*layers)
        self.out_features = previous
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # torchvision's VGG initialization
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


def load_vgg16_features(encoder: VGG16Encoder, path: str | Path) -> None:
    """Load the ``features.*`` weights of a local torchvision-format VGG-16 state dict into ``encoder``.

    ``path``: a ``torch.save``-d state dict (e.g. torchvision's ``vgg16-397923af.pth``), read with
    ``weights_only=True``; ``classifier.*`` keys are ignored. InputFileError (one line) when the
    file is unreadable, is not a state dict, or its ``features`` keys/shapes differ from VGG-16's.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "VGG-16 weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InputFileError(path, f"not a torch state dict readable with weights_only=True "
                                   f"({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise InputFileError(path, f"expected a state dict, got {type(state).__name__}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    features = {k[len("features."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    expected = encoder.features.state_dict()
    missing = sorted(set(expected) - set(features))
    unexpected = sorted(set(features) - set(expected))
    if missing or unexpected:
        detail = (f"missing {', '.join('features.' + k for k in missing[:4])}" if missing
                  else f"unexpected {', '.join('features.' + k for k in unexpected[:4])}")
        raise InputFileError(path, f"not a torchvision VGG-16 state dict: {detail}")
    for key, value in features.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(expected[key].shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputFileError(path, f"features.{key} has shape {shape}, VGG-16 needs {tuple(expected[key].shape)}")
    encoder.features.load_state_dict({k: v.float() for k, v in features.items()})

