"""The multi-level face model of Tewari et al. 2018 (CVPR, "Self-supervised Multi-level Face Model
Learning for Monocular Reconstruction at over 250 Hz"): regressor, decoder, compact codes.

No public code of this model exists; this is facebench's reading of the paper and its supplement.
Frames and units are facebench's (:mod:`facebench.conventions`): head frame, mm, head → camera pose
``x_cam = R(q) x + t``, OpenCV pinhole ``K`` in pixels, linear RGB in [0, 1], 3-band SH in the
camera frame (:mod:`facebench.render.shading`).

Levels
------
- **Base level**: a linear 3DMM (any :class:`~facebench.models.MorphableModel` with enough modes;
  the procedural ``synthetic`` model by default) truncated to ``n_identity`` / ``n_expression`` /
  ``n_reflectance`` modes, coefficients in standard-deviation units::

      vertices_base    = mean + B_id (α ⊙ σ_id) + B_exp (β ⊙ σ_exp)            (B, V, 3) mm
      reflectance_base = ρ̄ + B_refl (γ ⊙ σ_refl)                               (B, V, 3) RGB

  The bases are frozen, non-persistent buffers rebuilt from the face model (a checkpoint records
  the model's digest and refuses another model).
- **Final level**: base + learned **corrective spaces** ``F(δ | Θ)`` mapping ``C`` corrective
  parameters to per-vertex offsets (:class:`CorrectiveSpace`), one for the shape (mm) and one for
  the reflectance (RGB)::

      vertices_final    = vertices_base    + F_shape(δ_shape)
      reflectance_final = reflectance_base + F_refl(δ_refl)

  ``corrective_kind``: ``affine`` ``F(δ) = M δ + b`` (the paper's choice), ``relu1``
  ``W2 ReLU(W1 δ + b1) + b2``, ``relu2`` ``W3 ReLU(W2 ReLU(W1 δ + b1) + b2) + b3`` (the
  supplement's comparison), hidden width ``corrective_hidden``. The **last layer is initialised
  to zero** (weights and bias) so a fresh model's final level equals its base level; the hidden
  layers keep torch's default initialisation. ``C = 0`` means no corrective at all (final = base,
  no parameters). Offsets are in the geometry's / colour's own units (mm, RGB): no hidden scale.
- **Illumination** is regressed **independently per level**: ``sh_base`` lights the base level,
  ``sh_final`` the final level (27 coefficients each).

Regressor
---------
``images (B, 3, S, S)`` linear RGB in [0, 1] (``S = image_size``, 64 px by default) →
``2 x − 1`` → encoder → trunk → heads.

- **Encoder**: :class:`facebench.baselines.encoders.SmallEncoder` with channels
  ``w-2w-4w-8w-8w`` (``w = encoder_width = 32``: 32-64-128-256-256), five stride-2 conv3x3 +
  GroupNorm(8) + ReLU blocks and global average pooling → 8w features (1.2 M parameters at w = 32;
  GroupNorm: no batch statistics, so batch 1 at test time equals training). A 64 px image costs
  about 27 MFLOP, so the forward pass is far under the paper's 4 ms (``perf/bench_multilevel.py``).
- **Trunk**: ``Linear(8w, 512) → ReLU``, shared by all heads.
- **Heads** (one ``Linear(512, ·)`` each): identity (n_identity), expression (n_expression),
  reflectance (n_reflectance), rotation (4), translation (3), sh_base (27), sh_final (27),
  delta_shape (C), delta_reflectance (C). The base heads' weights and biases start at **zero**
  except the biases that set the initial state: coefficients 0 (mean face, mean reflectance),
  ``q = Q_FRONT`` (frontal camera), ``t = mean_t`` (the training set's mean translation), both SH
  sets ``= default_sh()`` (ambient 0.6 + a frontal key light 0.5). The two δ heads keep torch's
  default (small random) initialisation: with the corrective's last layer at zero a zero δ would
  leave ``∂/∂M = g δᵀ = 0`` and ``∂/∂δ = Mᵀ g = 0`` forever (a dead branch); random δ lets ``M``
  learn from the first step while the offsets still start at exactly 0.
- **Rotation**: the head outputs an unnormalised 4-vector ``q̃`` (bias ``Q_FRONT``), ``q = q̃/‖q̃‖``
  (w ≥ 0 not enforced; every consumer is sign-invariant). Quaternion normalisation is smooth near
  the frontal start and matches the Ramon et al. regressor.
- **Translation**: ``t = mean_t + 0.1 ‖mean_t‖ · h`` (``h`` the head's unit-free output): one unit
  of ``h`` is 10 % of the camera distance (60 mm at 600 mm), so the head's weights see
  unit-scale targets.

Parameter groups (:meth:`MultiLevelModel.parameter_groups`, for per-branch learning rates):
``base`` = encoder, trunk and the base heads (coefficients, pose, both SH);
``shape_corrective`` = the ``delta_shape`` head and ``F_shape``;
``reflectance_corrective`` = the ``delta_reflectance`` head and ``F_refl``.

Compact codes
-------------
:func:`encode_reconstruction` stores reconstructions as their parameters only (float32 ``.npz``,
read back with ``allow_pickle=False``): per reconstruction 80 + 500 = 580 reflectance floats and
80 + 64 + 500 = 644 shape floats (the supplement's 1,224 floats = 4,896 bytes), plus the pose
(7) and the two SH sets (54): 1,285 floats, 5,140 bytes raw, about 4.7 KB per reconstruction
in the zip-deflated file (lossless). Decoding them with the same network weights and face
model reproduces the vertices and reflectance exactly (:meth:`MultiLevelModel.decode`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facebench import conventions as cv
from facebench.atomic import atomic_path
from facebench.baselines.encoders import SmallEncoder
from facebench.errors import FacebenchError, InputFileError
from facebench.render import RenderOutput, default_sh, render
from facebench.safe_hdf5 import parse_json

__all__ = [
    "CORRECTIVE_KINDS",
    "LEVELS",
    "MultiLevelConfig",
    "MultiLevelParams",
    "MultiLevelOutput",
    "CorrectiveSpace",
    "MultiLevelModel",
    "encode_reconstruction",
    "decode_reconstruction",
    "CHECKPOINT_FORMAT",
    "CODE_FORMAT",
]

CORRECTIVE_KINDS = ("affine", "relu1", "relu2")
LEVELS = ("base", "final")
CHECKPOINT_FORMAT = "facebench-multilevel"
CODE_FORMAT = "facebench-multilevel-codes"
_VERSION = 1
#: Width of the shared trunk between encoder and heads.
TRUNK = 512
#: One unit of the translation head's output, as a fraction of ‖mean_t‖.
TRANSLATION_SCALE = 0.1
#: Field names of :class:`MultiLevelParams`, in storage order.
PARAM_FIELDS = ("identity", "expression", "reflectance", "q", "t", "sh_base", "sh_final",
                "delta_shape", "delta_reflectance")


# ---------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class MultiLevelConfig:
    """Architecture of a :class:`MultiLevelModel` (sizes in modes, channels and pixels)."""

    n_identity: int = 80
    n_expression: int = 64
    n_reflectance: int = 80
    n_correctives: int = 500
    corrective_kind: str = "affine"
    corrective_hidden: int = 256
    image_size: int = 64
    encoder_width: int = 32

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiLevelConfig:
        """Inverse of :meth:`to_dict`; FacebenchError on unknown keys or non-integer sizes."""
        if not isinstance(d, dict):
            raise FacebenchError(f"multi-level config must be a dict, got {type(d).__name__}")
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise FacebenchError(f"unknown multi-level config keys: {', '.join(unknown)}")
        values = {}
        for key, value in d.items():
            if key == "corrective_kind":
                values[key] = str(value)
            elif isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise FacebenchError(f"multi-level config {key} must be an integer, got {value!r}")
            else:
                values[key] = int(value)
        return cls(**values)

    def check(self, morphable_model) -> None:
        """FacebenchError (one line) when this config cannot be built on ``morphable_model``."""
        for name in ("n_identity", "n_expression", "n_reflectance"):  # the base level needs each space
            if getattr(self, name) < 1:
                raise FacebenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_correctives < 0:
            raise FacebenchError(f"n_correctives must be >= 0, got {self.n_correctives}")
        for name in ("corrective_hidden", "encoder_width"):
            if getattr(self, name) < 1:
                raise FacebenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_width % 4:
            raise FacebenchError(f"encoder_width must be a multiple of 4 (GroupNorm(8) of 2w channels), "
                                 f"got {self.encoder_width}")
        if self.corrective_kind not in CORRECTIVE_KINDS:
            raise FacebenchError(f"unknown corrective kind {self.corrective_kind!r}; choose one of "
                                 f"{', '.join(CORRECTIVE_KINDS)}")
        if self.image_size < 32:
            raise FacebenchError(f"image_size must be >= 32 px, got {self.image_size}")
        name = getattr(morphable_model, "name", "?")
        for prefix in ("identity", "expression", "reflectance"):
            asked, available = getattr(self, f"n_{prefix}"), getattr(morphable_model, f"n_{prefix}")
            if asked > available:
                raise FacebenchError(f"face model {name!r} has {available} {prefix} modes, fewer than the "
                                     f"{asked} asked (n_{prefix})")
        V = morphable_model.n_vertices
        if self.n_correctives > V:
            raise FacebenchError(f"{self.n_correctives} corrective parameters exceed the {V} vertices of "
                                 f"face model {name!r} (C must be <= V)")


# ---------------------------------------------------------------------------- parameters/outputs
@dataclasses.dataclass
class MultiLevelParams:
    """What the regressor outputs (all ``(B, ...)`` float tensors, see the module docstring).

    ``identity (B, n_identity)``, ``expression (B, n_expression)``, ``reflectance
    (B, n_reflectance)`` in std units; ``q (B, 4)`` unit (w, x, y, z) head → camera; ``t (B, 3)``
    mm; ``sh_base``, ``sh_final`` ``(B, 9, 3)``; ``delta_shape``, ``delta_reflectance`` ``(B, C)``.
    """

    identity: torch.Tensor
    expression: torch.Tensor
    reflectance: torch.Tensor
    q: torch.Tensor
    t: torch.Tensor
    sh_base: torch.Tensor
    sh_final: torch.Tensor
    delta_shape: torch.Tensor
    delta_reflectance: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in PARAM_FIELDS}

    def detach(self) -> MultiLevelParams:
        return MultiLevelParams(**{k: v.detach() for k, v in self.as_dict().items()})

    def to(self, device) -> MultiLevelParams:
        return MultiLevelParams(**{k: v.to(device) for k, v in self.as_dict().items()})

    @property
    def batch_size(self) -> int:
        return int(self.q.shape[0])


@dataclasses.dataclass
class MultiLevelOutput:
    """Decoded geometry and appearance (head frame, mm; linear RGB), each ``(B, V, 3)``.

    ``vertices_final = vertices_base + shape_offsets``;
    ``reflectance_final = reflectance_base + reflectance_offsets``.
    """

    params: MultiLevelParams
    vertices_base: torch.Tensor
    vertices_final: torch.Tensor
    shape_offsets: torch.Tensor
    reflectance_base: torch.Tensor
    reflectance_final: torch.Tensor
    reflectance_offsets: torch.Tensor

    def vertices(self, level: str) -> torch.Tensor:
        """``(B, V, 3)`` mm of ``level`` (``"base"`` or ``"final"``)."""
        return self.vertices_base if _level(level) == "base" else self.vertices_final

    def reflectance(self, level: str) -> torch.Tensor:
        """``(B, V, 3)`` linear RGB of ``level``."""
        return self.reflectance_base if _level(level) == "base" else self.reflectance_final

    def sh(self, level: str) -> torch.Tensor:
        """``(B, 9, 3)`` SH light of ``level``."""
        return self.params.sh_base if _level(level) == "base" else self.params.sh_final


def _level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


# ---------------------------------------------------------------------------- corrective space
class CorrectiveSpace(nn.Module):
    """``F(δ | Θ)``: ``(B, C)`` corrective parameters → ``(B, V, 3)`` per-vertex offsets.

    ``kind``: ``affine`` (``M δ + b``, ``M`` = ``self.layers[-1].weight (3V, C)``), ``relu1`` or
    ``relu2`` (one / two hidden ReLU layers of width ``hidden``). The last layer starts at zero,
    so ``F ≡ 0`` until trained; ``n_correctives = 0`` gives zeros and has no parameters.
    """

    def __init__(self, n_correctives: int, n_vertices: int, kind: str = "affine", hidden: int = 256):
        super().__init__()
        if kind not in CORRECTIVE_KINDS:
            raise FacebenchError(f"unknown corrective kind {kind!r}; choose one of {', '.join(CORRECTIVE_KINDS)}")
        if n_correctives < 0 or n_vertices < 1 or hidden < 1:
            raise FacebenchError(f"corrective space needs C >= 0, V >= 1, hidden >= 1; got C={n_correctives}, "
                                 f"V={n_vertices}, hidden={hidden}")
        self.n_correctives, self.n_vertices, self.kind = int(n_correctives), int(n_vertices), kind
        layers: list[nn.Module] = []
        if n_correctives > 0:
            width = n_correctives
            for _ in range({"affine": 0, "relu1": 1, "relu2": 2}[kind]):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            last = nn.Linear(width, 3 * n_vertices)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            layers.append(last)
        self.layers = nn.Sequential(*layers)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta (B, C)`` → offsets ``(B, V, 3)`` (zeros, on ``delta``'s device, when C = 0)."""
        if delta.ndim != 2 or delta.shape[1] != self.n_correctives:
            raise ValueError(f"delta must be (B, {self.n_correctives}), got {tuple(delta.shape)}")
        if self.n_correctives == 0:
            return delta.new_zeros(delta.shape[0], self.n_vertices, 3)
        return self.layers(delta).view(delta.shape[0], self.n_vertices, 3)


# ---------------------------------------------------------------------------- the model
def _zero_head(in_features: int, out_features: int, bias) -> nn.Linear:
    head = nn.Linear(in_features, out_features)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(out_features))
    return head


def _scaled_basis(model, prefix: str, k: int) -> np.ndarray:
    """``(k, 3V)`` float32: the first ``k`` modes of ``prefix`` times their std (transposed)."""
    basis = np.asarray(getattr(model, f"{prefix}_basis"), np.float32)[:, :, :k]
    std = np.asarray(getattr(model, f"{prefix}_std"), np.float32)[:k]
    return np.ascontiguousarray((basis * std).reshape(-1, k).T)


class MultiLevelModel(nn.Module):
    """Regressor + multi-level decoder (module docstring).

    Args:
        morphable_model: the base-level :class:`~facebench.models.MorphableModel`.
        config: :class:`MultiLevelConfig`; checked against the model (FacebenchError).
        K: ``(3, 3)`` intrinsics in pixels of the ``image_size`` images (render/landmark default).
        mean_t: ``(3,)`` mm, the initial translation (the training set's mean t), z > 0.
    """

    def __init__(self, morphable_model, config: MultiLevelConfig, *, K, mean_t):
        super().__init__()
        config.check(morphable_model)
        K = np.asarray(K, np.float64)
        mean_t = np.asarray(mean_t, np.float64).reshape(-1)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise FacebenchError(f"K must be a finite (3, 3) matrix, got shape {K.shape}")
        if mean_t.shape != (3,) or not np.all(np.isfinite(mean_t)) or mean_t[2] <= 0:
            raise FacebenchError(f"mean_t must be 3 finite numbers with z > 0 mm, got {mean_t.tolist()}")
        self.config = config
        self.model_name = morphable_model.name
        self.model_digest = morphable_model.digest()
        self.n_vertices = int(morphable_model.n_vertices)
        c = config
        self._register_model_buffers(morphable_model)
        self.register_buffer("K", torch.as_tensor(K, dtype=torch.float32), persistent=False)
        self.register_buffer("mean_t", torch.as_tensor(mean_t, dtype=torch.float32), persistent=False)
        self.translation_scale = float(TRANSLATION_SCALE * np.linalg.norm(mean_t))
        w = c.encoder_width
        self.encoder = SmallEncoder((w, 2 * w, 4 * w, 8 * w, 8 * w))
        self.trunk = nn.Sequential(nn.Linear(self.encoder.out_features, TRUNK), nn.ReLU(inplace=True))
        sh0 = default_sh().reshape(-1)
        self.heads = nn.ModuleDict({
            "identity": _zero_head(TRUNK, c.n_identity, torch.zeros(c.n_identity)),
            "expression": _zero_head(TRUNK, c.n_expression, torch.zeros(c.n_expression)),
            "reflectance": _zero_head(TRUNK, c.n_reflectance, torch.zeros(c.n_reflectance)),
            "q": _zero_head(TRUNK, 4, torch.as_tensor(np.array(cv.Q_FRONT))),
            "t": _zero_head(TRUNK, 3, torch.zeros(3)),
            "sh_base": _zero_head(TRUNK, 27, sh0),
            "sh_final": _zero_head(TRUNK, 27, sh0),
        })
        with warnings.catch_warnings():  # C = 0: zero-element heads (outputs (B, 0)), nothing to initialise
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            self.delta_heads = nn.ModuleDict({
                "delta_shape": nn.Linear(TRUNK, c.n_correctives),
                "delta_reflectance": nn.Linear(TRUNK, c.n_correctives),
            })
        V = self.n_vertices
        self.shape_corrective = CorrectiveSpace(c.n_correctives, V, c.corrective_kind, c.corrective_hidden)
        self.reflectance_corrective = CorrectiveSpace(c.n_correctives, V, c.corrective_kind, c.corrective_hidden)

    def _register_model_buffers(self, model) -> None:
        c = self.config
        landmarks = np.asarray(model.landmark_indices, np.int64)
        buffers = {
            "mean_shape": np.asarray(model.mean, np.float32).reshape(-1),
            "shape_basis": np.concatenate(  # (n_identity + n_expression, 3V) mm per std
                (_scaled_basis(model, "identity", c.n_identity), _scaled_basis(model, "expression", c.n_expression))),
            "reflectance_mean": np.asarray(model.reflectance_mean, np.float32).reshape(-1),
            "reflectance_basis": _scaled_basis(model, "reflectance", c.n_reflectance),
        }
        for name, array in buffers.items():
            self.register_buffer(name, torch.from_numpy(np.array(array, np.float32)), persistent=False)
        self.register_buffer("faces", torch.as_tensor(np.asarray(model.faces, np.int64)), persistent=False)
        self.register_buffer("landmark_indices", torch.as_tensor(landmarks), persistent=False)

    # ------------------------------------------------------------------ regression
    def forward(self, images: torch.Tensor) -> MultiLevelParams:
        """``images (B, 3, S, S)`` float linear RGB in [0, 1] → :class:`MultiLevelParams`."""
        S = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, S, S):
            raise ValueError(f"images must be (B, 3, {S}, {S}), got {tuple(images.shape)}")
        features = self.trunk(self.encoder(images * 2.0 - 1.0))
        out = {name: head(features) for name, head in self.heads.items()}
        q = out["q"]
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-8)
        B = images.shape[0]
        return MultiLevelParams(
            identity=out["identity"], expression=out["expression"], reflectance=out["reflectance"],
            q=q, t=self.mean_t + self.translation_scale * out["t"],
            sh_base=out["sh_base"].view(B, 9, 3), sh_final=out["sh_final"].view(B, 9, 3),
            delta_shape=self.delta_heads["delta_shape"](features),
            delta_reflectance=self.delta_heads["delta_reflectance"](features),
        )

    # ------------------------------------------------------------------ decoding
    def decode_base(self, params: MultiLevelParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Base-level vertices ``(B, V, 3)`` mm and reflectance ``(B, V, 3)`` of ``params``."""
        B, V = params.identity.shape[0], self.n_vertices
        coefficients = torch.cat((params.identity, params.expression), dim=1)
        if coefficients.shape[1] != self.shape_basis.shape[0]:
            raise ValueError(f"expected {self.config.n_identity} identity + {self.config.n_expression} expression "
                             f"coefficients, got {params.identity.shape[1]} + {params.expression.shape[1]}")
        vertices = torch.addmm(self.mean_shape, coefficients, self.shape_basis).view(B, V, 3)
        reflectance = torch.addmm(self.reflectance_mean, params.reflectance, self.reflectance_basis).view(B, V, 3)
        return vertices, reflectance

    def decode(self, params: MultiLevelParams) -> MultiLevelOutput:
        """Decode both levels (head frame, mm; linear RGB; see the module docstring)."""
        vertices_base, reflectance_base = self.decode_base(params)
        shape_offsets = self.shape_corrective(params.delta_shape)
        reflectance_offsets = self.reflectance_corrective(params.delta_reflectance)
        return MultiLevelOutput(
            params=params,
            vertices_base=vertices_base, vertices_final=vertices_base + shape_offsets,
            shape_offsets=shape_offsets,
            reflectance_base=reflectance_base, reflectance_final=reflectance_base + reflectance_offsets,
            reflectance_offsets=reflectance_offsets,
        )

    def reconstruct(self, images: torch.Tensor) -> MultiLevelOutput:
        """``decode(forward(images))``."""
        return self.decode(self(images))

    # ------------------------------------------------------------------ images and landmarks
    def render(self, output: MultiLevelOutput, level: str = "final", *, height: int | None = None,
               width: int | None = None, K=None, background=0.0) -> RenderOutput:
        """Shaded image of ``level`` with its own SH light, seen by ``(q, t, K)``.

        ``K`` defaults to the model's (for ``image_size`` images); ``height``/``width`` to
        ``image_size``. Returns :class:`facebench.render.RenderOutput` (image ``(B, H, W, 3)``).
        """
        size = self.config.image_size
        p = output.params
        return render(output.vertices(level), self.faces, p.q, p.t, self.K if K is None else K,
                      height or size, width or size, reflectance=output.reflectance(level),
                      sh=output.sh(level), background=background)

    def landmarks_2d(self, output: MultiLevelOutput, level: str = "final", K=None) -> torch.Tensor:
        """``(B, 68, 2)`` pixels of the iBUG-68 landmark vertices of ``level``; NaN where the face
        model defines no landmark (``landmark_indices == -1``)."""
        index = self.landmark_indices.clamp_min(0)
        points = output.vertices(level)[:, index]
        uv = cv.project(points, output.params.q, output.params.t, self.K if K is None else K)
        missing = (self.landmark_indices < 0)[None, :, None]
        return torch.where(missing, torch.full_like(uv, float("nan")), uv)

    # ------------------------------------------------------------------ training support
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by branch: ``base``, ``shape_corrective``, ``reflectance_corrective``."""
        return {
            "base": [*self.encoder.parameters(), *self.trunk.parameters(), *self.heads.parameters()],
            "shape_corrective": [*self.delta_heads["delta_shape"].parameters(),
                                 *self.shape_corrective.parameters()],
            "reflectance_corrective": [*self.delta_heads["delta_reflectance"].parameters(),
                                       *self.reflectance_corrective.parameters()],
        }

    def state_for_checkpoint(self) -> dict[str, Any]:
        """A plain dict (tensors, numbers, strings; loadable with ``torch.load(weights_only=True)``)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": _VERSION,
            "config": self.config.to_dict(),
            "K": self.K.detach().cpu().double().tolist(),
            "mean_t": self.mean_t.detach().cpu().double().tolist(),
            "model": self.model_name,
            "model_digest": self.model_digest,
            "n_vertices": self.n_vertices,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, morphable_model) -> MultiLevelModel:
        """Rebuild from :meth:`state_for_checkpoint`; FacebenchError when the checkpoint is not a
        multi-level checkpoint or was made with another face model."""
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise FacebenchError(f"not a multi-level model checkpoint (format {checkpoint.get('format')!r})"
                                 if isinstance(checkpoint, dict) else "not a multi-level model checkpoint")
        if checkpoint.get("version") != _VERSION:
            raise FacebenchError(f"unsupported multi-level checkpoint version {checkpoint.get('version')!r}")
        if checkpoint.get("model_digest") != morphable_model.digest():
            raise FacebenchError(f"the checkpoint was made with face model {checkpoint.get('model')!r} "
                                 f"(digest {str(checkpoint.get('model_digest'))[:12]}); the given model "
                                 f"{morphable_model.name!r} differs (digest {morphable_model.digest()[:12]})")
        model = cls(morphable_model, MultiLevelConfig.from_dict(checkpoint["config"]),
                    K=checkpoint["K"], mean_t=checkpoint["mean_t"])
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except (RuntimeError, KeyError) as error:
            raise FacebenchError(f"checkpoint weights do not fit the multi-level model: "
                                 f"{str(error).splitlines()[0]}") from None
        return model


# ---------------------------------------------------------------------------- compact codes
def encode_reconstruction(path, params: MultiLevelParams, ids, *, config: MultiLevelConfig,
                          model_digest: str) -> Path:
    """Write reconstructions as their parameters to a compact ``.npz`` (atomically).

    Arrays: ``ids (N,)`` unicode, every :class:`MultiLevelParams` field as float32 ``(N, ...)``,
    ``metadata`` a JSON string (format, version, config, model digest); zip-deflated
    (``np.savez_compressed``, lossless): 1,285 float32 per reconstruction at the defaults are
    5,140 bytes raw, about 4.7 KB in the file (measured on N(0, 1) correctives). Returns the path.
    """
    ids = [str(i) for i in ids]
    arrays = {name: np.ascontiguousarray(value.detach().cpu().numpy().astype(np.float32))
              for name, value in params.as_dict().items()}
    n = len(ids)
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise FacebenchError(f"{len(ids)} ids but {array.shape[0]} rows of {name}")
    if len(set(ids)) != n:
        raise FacebenchError("reconstruction ids must be unique")
    metadata = {"format": CODE_FORMAT, "version": _VERSION, "config": config.to_dict(),
                "model_digest": str(model_digest)}
    path = Path(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, ids=np.array(ids, dtype=np.str_), metadata=np.array(json.dumps(metadata)), **arrays)
    return path


def decode_reconstruction(path) -> tuple[list[str], MultiLevelParams, dict]:
    """Read :func:`encode_reconstruction`'s file: ``(ids, params (float32 CPU tensors), metadata)``.

    InputFileError (one line naming the file) when it is missing, not an ``.npz``, of another
    format, or has missing/inconsistent arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "reconstruction file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except Exception as error:  # noqa: BLE001 - any failure to read is a bad file
        raise InputFileError(path, f"not a readable .npz file ({type(error).__name__})") from None
    missing = [k for k in ("ids", "metadata", *PARAM_FIELDS) if k not in contents]
    if missing:
        raise InputFileError(path, f"missing arrays: {', '.join(missing)}")
    metadata = parse_json(str(contents["metadata"]), path=path, member="metadata")
    if not isinstance(metadata, dict) or metadata.get("format") != CODE_FORMAT:
        raise InputFileError(path, f"not a multi-level reconstruction file (format "
                                   f"{metadata.get('format') if isinstance(metadata, dict) else None!r})")
    ids = [str(i) for i in contents["ids"].reshape(-1)]
    tensors = {}
    for name in PARAM_FIELDS:
        array = contents[name]
        if array.dtype.kind != "f" or array.ndim < 2 or array.shape[0] != len(ids):
            raise InputFileError(path, f"{name} must be float (N={len(ids)}, ...), got {array.dtype} {array.shape}")
        if not np.all(np.isfinite(array)):
            raise InputFileError(path, f"{name} holds NaN or Inf")
        tensors[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return ids, MultiLevelParams(**tensors), metadata
