"""The self-supervised loss of the multi-level face model (Tewari et al. 2018).

The image metrics :func:`photometric_error` and :func:`reflectance_error` are defined in
:mod:`facebench.benchmark.metrics` (docs/metrics.md) and re-exported here.

The main paper's exact term definitions are not at hand; these are facebench's readings, each
written here as implemented. Notation: B images ``I_b (3, H, W)`` in [0, 1] linear RGB, ``S =
max(H, W)``; per level ``ℓ ∈ {base, final}`` vertices ``x_i`` (head frame, mm), reflectance
``r_i``, light ``sh_ℓ``, camera ``(q, t, K)``; ``x_cam,i = R(q) x_i + t``, ``u_i = π(K x_cam,i)``
pixels; ``c_i = r_i ⊙ SH(n_i; sh_ℓ)`` the shaded vertex colour (``n_i`` the camera-frame vertex
normal, as :func:`facebench.render.shade_vertices`). Every term is a **mean** (per visible vertex,
landmark, edge, pair, vertex) and then a mean over the batch, so no weight depends on the mesh
resolution or the batch size.

Per level (keys ``"{level}/photo"``, ``"{level}/land"``):

- **photo** — photometric alignment by **per-vertex image sampling** (MoFA's / the paper's form),
  not full rendering: ``E_photo = (1/|𝒱|) Σ_{i∈𝒱} sqrt(‖I(u_i) − c_i‖² + 1e-8)``, where ``I(u)``
  is bilinear (``grid_sample``, pixel centres at integer coordinates) and ``𝒱`` the visible vertices:
  camera-frame normal facing the camera (``n_i · x_cam,i < 0``), projected inside the image, on a
  pixel covered by the mesh's own z-buffer (:func:`facebench.render.rasterize`, no gradient) with
  ``Z_i ≤ zbuf(round(u_i)) + 2 px · Z_i / f_x`` (not occluded; the tolerance is two pixel
  footprints in mm), and inside ``masks`` when given. Why: one no-grad rasterization per level
  plus a gather is several times cheaper on 2 CPU cores than a differentiable render + its
  backward pass, the gradient reaches the pose and geometry through the image gradient at every
  visible vertex (dense, not only at silhouettes), and 14.5k vertices over a 64 px face sample
  every pixel many times. Visibility is a constant of each step (chosen without gradient).
- **land** — ``E_land = (1/L) Σ_k ‖(u_{l_k} − ũ_k) / S‖²`` over the 68 iBUG landmarks that both
  the face model (``landmark_indices ≥ 0``) and the target (finite) define: squared distance in
  units of the image size, so the weight is unit-free and resolution-free.

Shared (keys without a level):

- **reg** — ``Σ_k α_k² + Σ_k β_k²`` (identity + expression coefficients, std units).
- **rstd** — ``Σ_k γ_k²`` (reflectance coefficients, std units).
- **smo** — smoothness of the shape correctives, the graph-Laplacian quadratic form over the
  mesh's undirected edges ``ℰ``: ``(1/|ℰ|) Σ_{(i,j)∈ℰ} ‖o_i − o_j‖²`` (``o = F_shape(δ)``, mm²);
  0 for any constant offset field.
- **sta** — stabilization (offsets kept small): ``(1/V) Σ_i ‖o_i‖²`` (mm²).
- **ref** — local reflectance sparsity of the final reflectance ``r``:
  ``(1/|ℰ|) Σ_{(i,j)∈ℰ} w_ij ((‖r_i − r_j‖² + ε)^{p/2} − ε^{p/2})``, ``p = sparsity_p`` (0.9),
  ``ε = 1e-6`` (finite gradient at equal reflectance; the subtraction makes equal reflectance
  exactly 0); ``w_ij = exp(−α ‖κ_i − κ_j‖)`` with ``κ = I / (I_R + I_G + I_B)`` the input
  image's chromaticity sampled (no gradient) at the final level's projected vertices, ``α = 20``
  (``chroma_alpha``); ``w_ij = 1`` when i or j is not visible (no image evidence).
- **glo** — global reflectance constancy: ``(1/P) Σ_{(i,j)∈𝒫} ‖r_i − r_j‖²`` over ``P`` (2,000)
  fixed random pairs of skin vertices (``facebench.models.procedural.vertex_regions()["skin"]`` for
  the procedural model, all vertices for other models, or ``skin_mask``), drawn once with ``seed``.

``total = Σ_ℓ (w_photo E_photo,ℓ + w_land E_land,ℓ) + w_reg E_reg + w_rstd E_rstd + w_smo E_smo
+ w_sta E_sta + w_ref E_ref + w_glo E_glo``.

Default weights and how they are rescaled
-----------------------------------------
The supplement gives stage-1 (pre-training) ``w_photo = 1.9, w_reg = 3e-5, w_rstd = 0.002``,
others 0, and stage-2 (fine-tuning) ``w_photo = 0.2, w_reg = 0.003, w_rstd = 0.002,
w_smo = 3.2e4, w_ref = 13, w_glo = 80, w_sta = 0.08``, without units or normalisations. Our
reading, and the conversion factors ``RESCALE`` it implies:

- **colours and coefficients** (photo, reg, rstd): colours in [0, 1], coefficients in
  std units, and per-vertex **means**, as ours: factor 1. A mean also keeps a weight independent
  of the mesh (14,541 vertices here, ~53k in the BFM).
- **reflectance priors** (ref, glo): factor **0.01**, set by balancing per-vertex gradients, not
  read off the supplement. With factor 1 the sparsity term's gradient on a vertex's reflectance is
  about 90× the photometric term's (``13 · 1.4 · ~6 edges / 3V`` vs ``0.2 / (V/2)``: p-norm
  gradients stay ~1 at small differences), and fine-tuning flattened eyes and lips into skin
  colour (reflectance error of the final level 0.046 vs 0.024 for the base, photometric error of
  the final level above the base's). Measured on the quick setup (64 px, 300 + 150 iterations,
  C = 100, Adam): factor 1 — photometric base 0.1342, final 0.1363; factor 0.01 — base 0.1314,
  final 0.1306 (the final level beats the base, as it should).
- **geometry** (smo, sta): their offsets read in **metres**, ours are mm, and both terms are
  squared lengths: factor ``(1e-3)² = 1e-6`` (``w_smo = 0.032``, ``w_sta = 8e-8`` per mm²).
  Consequence, measured: ``sta`` is then negligible (about 1e-7 of the total at 1–2 mm offsets;
  the fine-tuning's ``w_reg`` and ``smo`` are what keep the correctives in check); raise
  ``w_sta`` to make it bite.
- **landmarks** (no supplement value; ours): ``w_land = 20`` in both stages. A landmark off by
  5 % of the image (3 px at 64 px) then costs ``20 · 0.0025 = 0.05``, of the order of the
  photometric term at the start of pre-training (``1.9 × ~0.15``). With ``w_land = 0.2`` a fresh
  network drifted (landmark error grew from 6 to 20 px in 150 steps while the photometric term
  fell: the face shrank onto easy pixels).

Measured with the earlier factor 1 for ref/glo (32 synthetic 64 px images, batch 8, Adam lr 1e-4, C = 100):
pre-training, 200 steps: total 0.46 → 0.13, landmark error 1.3 px, photometric error (rendered
base level vs input over the mask) 0.059; then fine-tuning, 200 steps: total 0.38 → 0.063, the
weighted terms at the end: ref 0.020, photo 0.014 per level, land 0.007 per level, reg 0.0009,
smo 0.0007, glo 0.0002, rstd 0.0002 — no term dominates; landmark error 0.9 px.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facebench import conventions as cv
from facebench.benchmark.metrics import photometric_error, reflectance_error
from facebench.errors import FacebenchError
from facebench.render import rasterize, shade_vertices, vertex_normals_torch

__all__ = [
    "MultiLevelWeights",
    "MultiLevelLoss",
    "RESCALE",
    "SUPPLEMENT_PRETRAINING",
    "SUPPLEMENT_FINETUNING",
    "photometric_error",
    "reflectance_error",
    "mesh_edges",
    "vertex_visibility",
    "sample_vertices",
]

#: The supplement's weights, as printed (their units).
SUPPLEMENT_PRETRAINING = {"w_photo": 1.9, "w_reg": 3e-5, "w_rstd": 0.002}
SUPPLEMENT_FINETUNING = {"w_photo": 0.2, "w_reg": 0.003, "w_rstd": 0.002, "w_smo": 3.2e4, "w_ref": 13.0,
                         "w_glo": 80.0, "w_sta": 0.08}
_COLOUR = 255.0
_N_REF = 14541.0
_P = 0.9
#: Factor from the supplement's weight to ours, per term (module docstring, "rescaled").
RESCALE = {
    "w_photo": 1.0,
    "w_reg": 1.0,
    "w_rstd": 1.0,
    "w_smo": 1e-6,
    "w_sta": 1e-6,
    "w_ref": 0.01,
    "w_glo": 0.01,
}
#: Our landmark weight (the supplement gives none).
W_LAND = 20.0
_EPS_PHOTO = 1e-8
_EPS_SPARSE = 1e-6


@dataclasses.dataclass(frozen=True)
class MultiLevelWeights:
    """Weights of :class:`MultiLevelLoss` (all >= 0) and the sparsity exponent ``p ∈ (0, 1]``."""

    w_photo: float = 0.0
    w_land: float = 0.0
    w_reg: float = 0.0
    w_rstd: float = 0.0
    w_smo: float = 0.0
    w_sta: float = 0.0
    w_ref: float = 0.0
    w_glo: float = 0.0
    sparsity_p: float = 0.9

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise FacebenchError(f"{field.name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise FacebenchError(f"{field.name} must be finite, got {value}")
            if field.name.startswith("w_") and value < 0:
                raise FacebenchError(f"loss weight {field.name} must be >= 0, got {value}")
        if not 0.0 < self.sparsity_p <= 1.0:
            raise FacebenchError(f"sparsity_p must be in (0, 1], got {self.sparsity_p}")

    @classmethod
    def _rescaled(cls, supplement: dict[str, float]) -> MultiLevelWeights:
        return cls(w_land=W_LAND, **{k: v * RESCALE[k] for k, v in supplement.items()})

    @classmethod
    def pretraining(cls) -> MultiLevelWeights:
        """Stage 1 (base level only): the supplement's weights rescaled (module docstring)."""
        return cls._rescaled(SUPPLEMENT_PRETRAINING)

    @classmethod
    def finetuning(cls) -> MultiLevelWeights:
        """Stage 2 (both levels, correctives): the supplement's weights rescaled."""
        return cls._rescaled(SUPPLEMENT_FINETUNING)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> MultiLevelWeights:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise FacebenchError(f"unknown loss weights: {', '.join(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------- mesh and sampling
def mesh_edges(faces) -> torch.Tensor:
    """``(E, 2)`` long: the undirected edges of triangles ``faces (F, 3)``, each once (i < j)."""
    faces = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces).long()
    pairs = torch.cat((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))
    pairs = torch.sort(pairs, dim=1).values
    return torch.unique(pairs, dim=0)


def _project_camera(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels ``(B, N, 2)`` of camera-frame points (depth clamped at 1e-3 mm)."""
    z = points_cam[..., 2:3].clamp_min(1e-3)
    xy = points_cam[..., :2] / z
    u = K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2]
    v = K[1, 1] * xy[..., 1] + K[1, 2]
    return torch.stack((u, v), dim=-1)


def sample_vertices(images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(B, N, C)`` of ``images (B, C, H, W)`` at pixels ``uv (B, N, 2)``.

    Integer coordinates are pixel centres; outside the image the border value is repeated.
    Differentiable w.r.t. ``images`` and ``uv``.
    """
    H, W = images.shape[-2:]
    scale = uv.new_tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)])
    grid = (uv * scale - 1.0)[:, None]  # (B, 1, N, 2)
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].transpose(1, 2)


@torch.no_grad()
def vertex_visibility(vertices_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                      *, tolerance_px: float = 2.0, masks: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, V)`` bool: vertices seen by the camera (no gradient; module docstring, "photo").

    ``vertices_cam (B, V, 3)`` mm camera frame; ``faces (F, 3)``; ``K (3, 3)`` pixels. A vertex
    is visible when its normal faces the camera, it projects inside the ``height × width`` image
    onto a pixel the mesh covers, its depth is at most the z-buffer there plus ``tolerance_px``
    pixel footprints (``Z / f_x`` mm each), and ``masks (B, H, W)`` (if given) is set there.
    """
    vertices_cam = vertices_cam.detach()
    B = vertices_cam.shape[0]
    normals = vertex_normals_torch(vertices_cam, faces)
    front = (normals * vertices_cam).sum(-1) < 0
    uv = _project_camera(vertices_cam, K)
    px = torch.round(uv).long()
    inside = (px[..., 0] >= 0) & (px[..., 0] < width) & (px[..., 1] >= 0) & (px[..., 1] < height)
    fragments = rasterize(vertices_cam, faces, K, height, width, cull_backfaces=True)
    flat = (torch.arange(B, device=px.device)[:, None] * height + px[..., 1].clamp(0, height - 1)) * width \
        + px[..., 0].clamp(0, width - 1)
    covered = fragments.mask.reshape(-1)[flat]
    zbuf = fragments.depth.reshape(-1)[flat]
    depth = vertices_cam[..., 2]
    visible = front & inside & covered & (depth <= zbuf + tolerance_px * depth / K[0, 0])
    if masks is not None:
        visible &= masks.reshape(-1)[flat].bool()
    return visible


def _skin_mask(model) -> np.ndarray:
    if model.model_name == "synthetic":
        from facebench.models.procedural import vertex_regions

        try:
            return vertex_regions()["skin"]
        except ValueError:
            pass
    return np.ones(model.n_vertices, bool)


# ---------------------------------------------------------------------------- the loss
class MultiLevelLoss(nn.Module):
    """The self-supervised loss (module docstring) of a :class:`~facebench.baselines.tewari2018.model.MultiLevelModel`.

    Args:
        model: the multi-level model (its faces, landmark indices and K are used).
        weights: :class:`MultiLevelWeights`.
        levels: levels whose photo/land terms are computed (``("base",)`` for pre-training).
        chroma_alpha: ``α`` of the sparsity weights ``exp(−α ‖Δκ‖)``.
        n_global_pairs: number of skin vertex pairs of the global constancy term.
        skin_mask: ``(V,)`` bool, overrides the default skin region.
        seed: of the pair draw.
        visibility_tolerance_px: occlusion tolerance of :func:`vertex_visibility`.

    ``forward(output, images (B, 3, H, W) [0, 1], landmarks_2d (B, 68, 2) px, masks (B, H, W) | None)``
    returns ``(total, terms)``; images must have the model's ``image_size`` (``model.K`` is theirs).
    """

    def __init__(self, model, weights: MultiLevelWeights, *, levels=("base", "final"), chroma_alpha: float = 20.0,
                 n_global_pairs: int = 2000, skin_mask=None, seed: int = 0, visibility_tolerance_px: float = 2.0):
        super().__init__()
        levels = tuple(levels)
        if not levels or any(level not in ("base", "final") for level in levels) or len(set(levels)) != len(levels):
            raise FacebenchError(f"levels must be distinct names among base, final; got {levels}")
        if chroma_alpha < 0 or n_global_pairs < 1 or visibility_tolerance_px < 0:
            raise FacebenchError("chroma_alpha and visibility_tolerance_px must be >= 0, n_global_pairs >= 1")
        self.model, self.weights, self.levels = model, weights, levels
        self.chroma_alpha, self.tolerance = float(chroma_alpha), float(visibility_tolerance_px)
        self.register_buffer("edges", mesh_edges(model.faces.cpu()).to(model.faces.device), persistent=False)
        skin = _skin_mask(model) if skin_mask is None else np.asarray(skin_mask, bool)
        if skin.shape != (model.n_vertices,) or skin.sum() < 2:
            raise FacebenchError(f"skin_mask must be ({model.n_vertices},) bool with >= 2 vertices set")
        candidates = np.flatnonzero(skin)
        rng = np.random.default_rng(seed)
        pairs = rng.choice(candidates, size=(n_global_pairs, 2))
        self.register_buffer("pairs", torch.as_tensor(pairs, dtype=torch.long, device=model.faces.device),
                             persistent=False)

    # ------------------------------------------------------------------ per-level terms
    def _level_terms(self, output, level: str, images, landmarks_2d, masks):
        model, p = self.model, output.params
        vertices = output.vertices(level)
        K = model.K.to(vertices.dtype)
        cam = cv.transform(vertices, p.q, p.t)
        uv = _project_camera(cam, K)
        H, W = images.shape[-2:]
        visible = vertex_visibility(cam, model.faces, K, H, W, tolerance_px=self.tolerance, masks=masks)
        colors = shade_vertices(cam, model.faces, output.reflectance(level), output.sh(level))
        sampled = sample_vertices(images, uv)
        distance = torch.sqrt(((sampled - colors) ** 2).sum(-1) + _EPS_PHOTO)
        vis = visible.to(distance.dtype)
        photo = ((distance * vis).sum(1) / vis.sum(1).clamp_min(1.0)).mean()
        land = self._landmark_term(uv, landmarks_2d, max(H, W))
        return photo, land, uv, visible

    def _landmark_term(self, uv, target, size: int):
        index = self.model.landmark_indices
        if target.shape[1:] != (index.shape[0], 2):
            raise ValueError(f"landmarks_2d must be (B, {index.shape[0]}, 2), got {tuple(target.shape)}")
        pred = uv[:, index.clamp_min(0)]
        valid = torch.isfinite(target).all(-1) & (index >= 0)[None]
        target = torch.where(valid[..., None], target.to(pred.dtype), pred.detach())
        squared = (((pred - target) / size) ** 2).sum(-1)
        v = valid.to(squared.dtype)
        return ((squared * v).sum(1) / v.sum(1).clamp_min(1.0)).mean()

    # ------------------------------------------------------------------ corrective priors
    def _sparsity(self, reflectance, images, uv, visible):
        i, j = self.edges[:, 0], self.edges[:, 1]
        with torch.no_grad():
            rgb = sample_vertices(images, uv.detach())
            chroma = rgb / rgb.sum(-1, keepdim=True).clamp_min(1e-6)
            both = visible[:, i] & visible[:, j]
            w = torch.exp(-self.chroma_alpha * torch.linalg.vector_norm(chroma[:, i] - chroma[:, j], dim=-1))
            w = torch.where(both, w, torch.ones_like(w))
        p = self.weights.sparsity_p
        squared = ((reflectance[:, i] - reflectance[:, j]) ** 2).sum(-1)
        return (w * ((squared + _EPS_SPARSE) ** (p / 2) - _EPS_SPARSE ** (p / 2))).mean()

    def forward(self, output, images: torch.Tensor, landmarks_2d: torch.Tensor, masks: torch.Tensor | None = None):
        """``(total, terms)``: the weighted sum and every term (module docstring), scalar tensors."""
        S = self.model.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, S, S):
            raise ValueError(f"images must be (B, 3, {S}, {S}), got {tuple(images.shape)}")
        w, p = self.weights, output.params
        images = images.to(output.vertices_base.dtype)
        terms: dict[str, torch.Tensor] = {}
        seen = {}
        for level in self.levels:
            photo, land, uv, visible = self._level_terms(output, level, images, landmarks_2d, masks)
            terms[f"{level}/photo"], terms[f"{level}/land"] = photo, land
            seen[level] = (uv, visible)
        terms["reg"] = ((p.identity ** 2).sum(1) + (p.expression ** 2).sum(1)).mean()
        terms["rstd"] = (p.reflectance ** 2).sum(1).mean()
        i, j = self.edges[:, 0], self.edges[:, 1]
        offsets = output.shape_offsets
        terms["smo"] = ((offsets[:, i] - offsets[:, j]) ** 2).sum(-1).mean()
        terms["sta"] = (offsets ** 2).sum(-1).mean()
        reflectance = output.reflectance_final
        if w.w_ref > 0 or "final" in seen:
            if "final" not in seen:
                cam = cv.transform(output.vertices_final, p.q, p.t)
                K = self.model.K.to(cam.dtype)
                seen["final"] = (_project_camera(cam, K), vertex_visibility(
                    cam, self.model.faces, K, S, S, tolerance_px=self.tolerance, masks=masks))
            terms["ref"] = self._sparsity(reflectance, images, *seen["final"])
        else:
            terms["ref"] = reflectance.new_zeros(())
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        terms["glo"] = ((reflectance[:, a] - reflectance[:, b]) ** 2).sum(-1).mean()
        total = sum(w.w_photo * terms[f"{lv}/photo"] + w.w_land * terms[f"{lv}/land"] for lv in self.levels)
        total = total + w.w_reg * terms["reg"] + w.w_rstd * terms["rstd"] + w.w_smo * terms["smo"] \
            + w.w_sta * terms["sta"] + w.w_ref * terms["ref"] + w.w_glo * terms["glo"]
        return total, terms
