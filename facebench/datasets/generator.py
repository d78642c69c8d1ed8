"""Synthetic 3DMM renders: settings, per-sample parameters, rendering, shards, splits (the mirror
images of symmetrized sets: :mod:`facebench.datasets.mirror`; joining shards:
:mod:`facebench.datasets.merge`).

A generation run draws ``n`` samples from a :class:`~facebench.models.MorphableModel` and writes
them in the facebench dataset format (:mod:`facebench.datasets.dataset_file`). The dataset card
``datasets/synthetic.md`` describes every setting; the essentials:

- **Determinism.** Every random quantity of sample ``i`` comes from its own stream,
  ``np.random.default_rng([seed, stream, key])`` (subject streams keyed by the subject index,
  sample streams by ``i``), so a sample depends only on the settings, the seed and ``i`` — never
  on the batch size, the shard or the number of workers. Shapes and reflectances are computed per
  sample in float64 with fixed-order loops (``np.einsum``, no BLAS), poses and landmark
  projections per sample; only the rasterizer runs batched (float32; its per-pixel work does not
  depend on the batch, which the tests check bit for bit).
- **Camera.** The camera looks at the centre ``c`` of the mean shape's bounding box from
  ``distance`` mm: ``t = (0, 0, distance) - R(q) c``; focal ``focal`` px (default: the mean
  shape's larger side fills ``1 / 1.3`` of the image), principal point at the image centre.
- **Pose.** ``q = pose_from_angles(yaw, pitch, roll)`` (head angles, docs/conventions.md) with angles drawn
  from a named distribution (:data:`ANGLE_DISTRIBUTIONS`); stored angles are
  ``head_angles(q)``.
- **Mirror samples** (``symmetrize``): row ``2 i + 1`` is the mirror image of row ``2 i``:
  vertices ``M x[perm]`` (``M = diag(-1, 1, 1)`` in the head frame, ``perm`` the mirror vertex
  correspondence), rotation ``R' = N R M`` (``N = diag(-1, 1, 1)`` in the camera frame),
  ``t' = N t``, light with the x-odd SH coefficients negated; with ``cx = (W - 1) / 2`` every
  camera point ``y`` maps to ``N y``, i.e. pixel ``(u, v)`` to ``(W - 1 - u, v)``, so the
  mirrored image **is** the horizontal flip of the original (stored as that flip) and its
  landmarks are the flipped landmarks with iBUG left/right partners swapped. The model's
  coefficient spaces are not closed under mirroring, so mirror rows store NaN coefficients
  (their vertices are the ground truth) and ``mirror_of`` = the original row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facebench import conventions as cv
from facebench.datasets.dataset_file import (
    DatasetWriter,
    FaceDataset,
    TorchFaceDataset,
)
from facebench.datasets.mirror import MIRROR, mirror_correspondence, mirror_pose, mirror_sh
from facebench.errors import FacebenchError, InputFileError

__all__ = [
    "ANGLE_DISTRIBUTIONS",
    "SPLIT_NAMES",
    "GeneratorSettings",
    "ResolvedSettings",
    "OutputPlan",
    "GenerationSummary",
    "resolve_settings",
    "plan_outputs",
    "sample_parameters",
    "render_rows",
    "generate",
    "mirror_correspondence",
    "mirror_sh",
    "mirror_pose",
    "FaceDataset",
    "TorchFaceDataset",
    "open_dataset",
]

#: Named angle distributions: name -> (description, default maxima (yaw, pitch, roll) degrees).
#: ``uniform``: each angle uniform in ``[-max, max]`` (the maxima are settable).
#: ``ramon2019``: our reading of Ramon et al. 2019 (their Fig. 5 bins |yaw| up to 90 degrees; the
#: paper states no distribution): yaw U(-90, 90), pitch U(-30, 30), roll U(-15, 15).
#: ``frontal``: all angles 0.
ANGLE_DISTRIBUTIONS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "uniform": ("each angle uniform in [-max, max]", (60.0, 20.0, 10.0)),
    "ramon2019": ("yaw U(-90,90), pitch U(-30,30), roll U(-15,15) (our reading)", (90.0, 30.0, 15.0)),
    "frontal": ("yaw = pitch = roll = 0", (0.0, 0.0, 0.0)),
}

#: Split names by number of parts.
SPLIT_NAMES = {2: ("train", "test"), 3: ("train", "val", "test")}

#: Random streams (second word of every seed sequence).
_STREAM_SUBJECT, _STREAM_SAMPLE, _STREAM_BACKGROUND = 1, 2, 3
#: Coefficient draws are standard normal, clipped to +-this many standard deviations.
COEFFICIENT_CLIP = 3.0
#: Near plane of the renderer (mm) and the margin (x the mean shape's radius) a distance needs.
NEAR_MM = 1.0
_DISTANCE_MARGIN = 1.25
#: Default focal: the larger side of the mean shape's bounding box spans 1 / FILL of the image.
_FILL = 1.3


# ---------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
    """What the user asks for (``None``: the default, resolved by :func:`resolve_settings`).

    Angles in degrees, distances in mm, focal in pixels, sizes in pixels.
    """

    n: int
    size: int = 224
    seed: int = 0
    angles: str = "uniform"
    yaw_max: float | None = None
    pitch_max: float | None = None
    roll_max: float | None = None
    distance: float = 600.0
    focal: float | None = None
    identity_dims: int | None = None
    expression_dims: int | None = None
    reflectance_dims: int | None = None
    neutral: bool = False
    symmetrize: bool = False
    background: str = "plain:0,0,0"
    identities: int | None = None
    split: str | None = None
    preset: str | None = None
    world: str = "in-span"
    camera: str = "fixed"
    span_identity_dims: int | None = None
    span_expression_dims: int | None = None
    span_reflectance_dims: int | None = None


@dataclasses.dataclass(frozen=True)
class ResolvedSettings:
    """Every setting with its value (JSON-able via :meth:`as_dict`); see ``datasets/synthetic.md``.

    ``centre`` is the head-frame point (mm) the camera looks at; ``split`` the fractions, or ``()``.
    """

    n: int
    size: int
    seed: int
    angles: str
    yaw_max: float
    pitch_max: float
    roll_max: float
    distance: float
    focal: float
    centre: tuple[float, float, float]
    identity_dims: int
    expression_dims: int
    reflectance_dims: int
    symmetrize: bool
    background: str
    identities: int
    split: tuple[float, ...]
    world: str = "in-span"
    camera: str = "fixed"
    preset: str = ""
    out_of_span: dict | None = None
    camera_ranges: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def rows_per_sample(self) -> int:
        return 2 if self.symmetrize else 1


def _mode_count(model, prefix: str, value, option: str) -> int:
    """``value`` modes of the model's ``prefix`` space (identity, expression or reflectance), all of
    them when None; a one-line error naming ``option`` when outside [0, available]."""
    available = getattr(model, f"n_{prefix}")
    value = available if value is None else int(value)
    if not 0 <= value <= available:
        _fail(f"{option} {value} outside [0, {available}]: model {model.name!r} has {available} {prefix} modes")
    return value


def _fail(message: str) -> None:
    raise FacebenchError(message)


def parse_background(text: str) -> tuple[str, np.ndarray | None]:
    """``"plain:R,G,B"`` (linear RGB in [0, 1], or one grey value) or ``"noise"``."""
    if text == "noise":
        return "noise", None
    kind, _, values = text.partition(":")
    if kind != "plain":
        _fail(f"--background must be 'plain:R,G,B' or 'noise', got {text!r}")
    try:
        rgb = np.array([float(v) for v in values.split(",")], np.float64)
    except ValueError:
        _fail(f"--background plain: expects numbers, got {values!r}")
    if rgb.size == 1:
        rgb = np.repeat(rgb, 3)
    if rgb.size != 3 or not np.all((rgb >= 0) & (rgb <= 1)):
        _fail(f"--background plain: expects 1 or 3 values in [0, 1] (linear RGB), got {values!r}")
    return "plain", rgb


def parse_split(text: str | None) -> tuple[float, ...]:
    """``"70/10/20"`` -> fractions ``(0.7, 0.1, 0.2)``; 2 or 3 positive parts."""
    if not text:
        return ()
    try:
        parts = [float(p) for p in text.split("/")]
    except ValueError:
        _fail(f"--split expects numbers like 70/10/20, got {text!r}")
    if len(parts) not in SPLIT_NAMES or min(parts) <= 0:
        _fail(f"--split expects 2 or 3 positive parts (train/test or train/val/test), got {text!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)


def resolve_settings(settings: GeneratorSettings, model) -> ResolvedSettings:
    """Check ``settings`` against ``model`` and fill in defaults; raise FacebenchError if impossible.

    Every check happens here, before any rendering.
    """
    from facebench.datasets.presets import apply_preset

    s = apply_preset(settings)
    if s.n < 1:
        _fail(f"--n must be >= 1, got {s.n}")
    if s.size < 8:
        _fail(f"--size must be >= 8 pixels, got {s.size}")
    if s.angles not in ANGLE_DISTRIBUTIONS:
        _fail(f"unknown angle distribution {s.angles!r}; known: {', '.join(ANGLE_DISTRIBUTIONS)}")
    given = (s.yaw_max, s.pitch_max, s.roll_max)
    if s.angles != "uniform" and any(v is not None for v in given):
        _fail(f"--yaw-max/--pitch-max/--roll-max apply to --angles uniform, not {s.angles!r}")
    defaults = ANGLE_DISTRIBUTIONS[s.angles][1]
    yaw_max, pitch_max, roll_max = (d if v is None else float(v) for v, d in zip(given, defaults))
    for name, value, top in (("yaw", yaw_max, 180.0), ("pitch", pitch_max, 90.0), ("roll", roll_max, 180.0)):
        if not 0 <= value <= top:
            _fail(f"--{name}-max must be in [0, {top:g}] degrees, got {value:g}")
    dims = {}
    for prefix in ("identity", "expression", "reflectance"):
        dims[prefix] = _mode_count(model, prefix, getattr(s, f"{prefix}_dims"), f"--{prefix}-dims")
    if s.neutral:
        if s.expression_dims not in (None, 0):
            _fail("--neutral sets the expression to zero: do not also give --expression-dims")
        dims["expression"] = 0
    lo, hi = model.mean.min(axis=0).astype(np.float64), model.mean.max(axis=0).astype(np.float64)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(model.mean - centre, axis=1).max())
    needed = _DISTANCE_MARGIN * radius + NEAR_MM
    if not s.distance > needed:
        _fail(f"--distance {s.distance:g} mm puts the face behind the camera or inside the near plane: "
              f"model {model.name!r} needs more than {needed:.0f} mm (its mean shape reaches "
              f"{radius:.0f} mm from its centre)")
    focal = s.focal
    if focal is None:
        focal = s.size * s.distance / (_FILL * float(max(hi[0] - lo[0], hi[1] - lo[1])))
    if not (focal > 0 and math.isfinite(focal)):
        _fail(f"--focal must be > 0 pixels, got {focal:g}")
    parse_background(s.background)
    identities = s.n if s.identities is None else int(s.identities)
    if not 1 <= identities <= s.n:
        _fail(f"--identities must be in [1, n={s.n}], got {identities}")
    split = parse_split(s.split)
    if split and identities < len(split):
        _fail(f"--split {s.split} needs at least {len(split)} identities, got {identities}")
    world, camera = _resolve_world_and_camera(s, model, dims)
    return ResolvedSettings(
        n=int(s.n), size=int(s.size), seed=int(s.seed), angles=s.angles,
        yaw_max=yaw_max, pitch_max=pitch_max, roll_max=roll_max,
        distance=float(s.distance), focal=float(focal), centre=tuple(float(c) for c in centre),
        identity_dims=dims["identity"], expression_dims=dims["expression"],
        reflectance_dims=dims["reflectance"], symmetrize=bool(s.symmetrize),
        background=s.background, identities=identities, split=split,
        **world, **camera, preset=s.preset or "",
    )


def _resolve_world_and_camera(s: GeneratorSettings, model, dims: dict) -> tuple[dict, dict]:
    """The ``world``/``out_of_span`` and ``camera``/``camera_ranges`` fields of the resolved settings
    (:mod:`facebench.datasets.out_of_span`, :mod:`facebench.datasets.camera`)."""
    from facebench.datasets.camera import CAMERAS, CameraSettings
    from facebench.datasets.out_of_span import WORLDS, OutOfSpanSettings

    if s.world not in WORLDS:
        _fail(f"unknown world {s.world!r}; one of {', '.join(WORLDS)}")
    if s.camera not in CAMERAS:
        _fail(f"unknown camera {s.camera!r}; one of {', '.join(CAMERAS)}")
    world: dict[str, Any] = {"world": s.world, "out_of_span": None}
    span = {}
    for prefix in ("identity", "expression", "reflectance"):
        span[f"span_{prefix}_dims"] = _mode_count(model, prefix, getattr(s, f"span_{prefix}_dims"),
                                                  f"--span-{prefix}-dims")
    if s.world == "out-of-span":
        world["out_of_span"] = OutOfSpanSettings(**span).as_dict()
    elif any(getattr(s, k) is not None for k in span):
        _fail("--span-*-dims apply to --world out-of-span")
    camera: dict[str, Any] = {"camera": s.camera, "camera_ranges": None}
    if s.camera == "variable":
        if s.focal is not None or s.distance != 600.0:
            _fail("--camera variable draws distance and focal per sample: do not give --distance/--focal")
        camera["camera_ranges"] = CameraSettings().as_dict()
    return world, camera


# ---------------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """One output file: samples ``[start, stop)`` of the split holding ``[split_start, split_stop)``."""

    path: Path
    split: str
    start: int
    stop: int
    split_start: int
    split_stop: int
    shard: tuple[int, int] | None = None

    @property
    def n_samples(self) -> int:
        return self.stop - self.start


def subject_of(resolved: ResolvedSettings, index: int) -> int:
    """Subject (identity) index of sample ``index``: ``index * identities // n`` (contiguous)."""
    return index * resolved.identities // resolved.n


def split_ranges(resolved: ResolvedSettings) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` sample ranges of each split; subjects never straddle splits.

    Subject counts per split are the fractions times ``identities``, rounded (largest
    remainder), at least one each; subjects are assigned in order (train first).
    """
    if not resolved.split:
        return [("all", 0, resolved.n)]
    m = resolved.identities
    raw = np.array(resolved.split) * m
    counts = np.maximum(np.floor(raw).astype(int), 1)
    while counts.sum() < m:
        counts[np.argmax(raw - counts)] += 1
    while counts.sum() > m:
        counts[np.argmax(np.where(counts > 1, counts - raw, -np.inf))] -= 1
    bounds = np.concatenate(([0], np.cumsum(counts)))
    # first sample of subject s is ceil(s * n / m)
    first = [-(-int(b) * resolved.n // m) for b in bounds]
    names = SPLIT_NAMES[len(resolved.split)]
    return [(names[k], first[k], first[k + 1]) for k in range(len(names))]


def _with_suffix(out: Path, tag: str) -> Path:
    suffix = out.suffix or ".h5"
    return out.with_name(f"{out.stem}{tag}{suffix}")


def plan_outputs(resolved: ResolvedSettings, out: str | Path, *, shard: tuple[int, int] | None = None,
                 shards: int | None = None) -> list[OutputPlan]:
    """The files a run writes. With splits, ``out`` ``a.h5`` gives ``a_train.h5``...; ``shard=(i, N)``
    writes the i-th of N contiguous slices of each split to ``out`` (``a_train.h5``...);
    ``shards=N`` writes all N as ``a-000-of-N.h5``... (same content as ``shard=(i, N)``)."""
    out = Path(out)
    if shard is not None:
        i, count = shard
        if not (count >= 1 and 0 <= i < count):
            _fail(f"--shard I/N needs 0 <= I < N, got {i}/{count}")
        selected = [(i, count)]
    elif shards is not None:
        if shards < 1:
            _fail(f"--shards must be >= 1, got {shards}")
        selected = [(i, shards) for i in range(shards)]
    else:
        selected = [None]
    plans = []
    for name, lo, hi in split_ranges(resolved):
        for part in selected:
            tag = "" if name == "all" else f"_{name}"
            if part is not None and shards is not None:
                tag += f"-{part[0]:03d}-of-{part[1]:03d}"
            start, stop = lo, hi
            if part is not None:
                start = lo + part[0] * (hi - lo) // part[1]
                stop = lo + (part[0] + 1) * (hi - lo) // part[1]
                if stop <= start:
                    _fail(f"shard {part[0]}/{part[1]} of split {name!r} would be empty ({hi - lo} samples)")
            plans.append(OutputPlan(_with_suffix(out, tag) if tag else out, name, start, stop, lo, hi, part))
    return plans


# ---------------------------------------------------------------------------- per-sample draws
def _rng(seed: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, int(key)])


def _coefficients(rng: np.random.Generator, dims: int, width: int) -> np.ndarray:
    c = np.zeros(width, np.float64)
    c[:dims] = np.clip(rng.standard_normal(dims), -COEFFICIENT_CLIP, COEFFICIENT_CLIP)
    return c


def sample_parameters(resolved: ResolvedSettings, model, index: int) -> dict[str, Any]:
    """The random parameters of sample ``index`` (depends only on settings, seed and index).

    Returns ``identity``, ``expression``, ``reflectance`` coefficients (float64, std units, model
    width, zero beyond the dims), ``angles`` (yaw, pitch, roll drawn, degrees), ``sh (9,3)``
    float32 and ``subject``.
    """
    from facebench.render.shading import random_sh

    subject = subject_of(resolved, index)
    subject_rng = _rng(resolved.seed, _STREAM_SUBJECT, subject)
    identity = _coefficients(subject_rng, resolved.identity_dims, model.n_identity)
    reflectance = _coefficients(subject_rng, resolved.reflectance_dims, model.n_reflectance)
    rng = _rng(resolved.seed, _STREAM_SAMPLE, index)
    expression = _coefficients(rng, resolved.expression_dims, model.n_expression)
    maxima = np.array([resolved.yaw_max, resolved.pitch_max, resolved.roll_max])
    angles = rng.uniform(-1.0, 1.0, 3) * maxima
    sh = random_sh(1, rng)[0].numpy()
    return {"subject": subject, "identity": identity, "expression": expression,
            "reflectance": reflectance, "angles": angles, "sh": sh}


def background_image(resolved: ResolvedSettings, index: int) -> np.ndarray:
    """``(H, W, 3)`` float64 linear-RGB background of sample ``index``.

    ``noise``: a smooth random texture (bilinear upsampling of a 6×6 grid of U(0, 1) colours)
    plus per-pixel N(0, 0.05) noise, clipped to [0, 1], from the sample's background stream.
    """
    kind, rgb = parse_background(resolved.background)
    size = resolved.size
    if kind == "plain":
        return np.broadcast_to(rgb, (size, size, 3))
    rng = _rng(resolved.seed, _STREAM_BACKGROUND, index)
    coarse = rng.uniform(0.0, 1.0, (6, 6, 3))
    x = np.linspace(0, 5, size)
    i0 = np.minimum(np.floor(x).astype(int), 4)
    f = (x - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]  # (size, 6, 3)
    fc = (x - i0)[None, :, None]
    smooth = rows[:, i0] * (1 - fc) + rows[:, i0 + 1] * fc
    return np.clip(smooth + rng.normal(0.0, 0.05, (size, size, 3)), 0.0, 1.0)



# ---------------------------------------------------------------------------- rendering
class _Context:
    """What every sample of a run shares: the model's bases in float64, K, topology."""

    def __init__(self, model, resolved: ResolvedSettings, device: str = "cpu"):
        self.model, self.resolved, self.device = model, resolved, device
        V = model.n_vertices
        self.mean = model.mean.astype(np.float64).reshape(-1)
        self.refl_mean = model.reflectance_mean.astype(np.float64).reshape(-1)
        self.bases = {}
        for prefix in ("identity", "expression", "reflectance"):
            k = getattr(resolved, f"{prefix}_dims")
            basis = getattr(model, f"{prefix}_basis").reshape(3 * V, -1)[:, :k].astype(np.float64)
            self.bases[prefix] = basis * getattr(model, f"{prefix}_std")[:k].astype(np.float64)
        self.K = cv.intrinsics(resolved.focal, resolved.size)
        self.landmarks = model.landmark_indices.astype(np.int64)
        self.perm = mirror_correspondence(model)[0] if resolved.symmetrize else None
        self.world = None
        if resolved.out_of_span is not None:
            from facebench.datasets.out_of_span import OutOfSpanSettings, OutOfSpanWorld

            oos = dict(resolved.out_of_span)
            oos["detail_wavelength_mm"] = tuple(oos["detail_wavelength_mm"])
            self.world = OutOfSpanWorld(model, OutOfSpanSettings(**oos))
        self._detail_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        lo, hi = model.mean.min(axis=0).astype(np.float64), model.mean.max(axis=0).astype(np.float64)
        self.extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))

    def detail(self, subject: int) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-span ``(shape (3V,) mm, reflectance (3V,) RGB)`` offsets of a subject (zeros in
        the in-span world); the last few subjects are cached."""
        if subject not in self._detail_cache:
            seed = self.resolved.seed
            shape = self.world.shape_detail(seed, subject)["total"].reshape(-1)
            refl = self.world.reflectance_detail(seed, subject).reshape(-1)
            if len(self._detail_cache) >= 8:
                self._detail_cache.pop(next(iter(self._detail_cache)))
            self._detail_cache[subject] = (shape, refl)
        return self._detail_cache[subject]

    def _linear(self, base: np.ndarray, prefix: str, c: np.ndarray) -> np.ndarray:
        basis = self.bases[prefix]
        if basis.shape[1] == 0:
            return base.copy()
        return base + np.einsum("ij,j->i", basis, c[: basis.shape[1]])  # fixed order, no BLAS

    def sample(self, index: int) -> dict[str, Any]:
        r, p = self.resolved, sample_parameters(self.resolved, self.model, index)
        V = self.model.n_vertices
        shape = self._linear(self.mean, "identity", p["identity"])
        shape = self._linear(shape, "expression", p["expression"])
        albedo = self._linear(self.refl_mean, "reflectance", p["reflectance"])
        if self.world is not None:
            shape_detail, refl_detail = self.detail(p["subject"])
            shape, albedo = shape + shape_detail, albedo + refl_detail
        vertices = shape.reshape(V, 3).astype(np.float32)
        albedo = np.clip(albedo, 0.0, 1.0)
        q = cv.pose_from_angles(*p["angles"])
        R = cv.quat_to_matrix(q)
        K = self.K
        if r.camera == "variable":
            from facebench.datasets.camera import CameraSettings, draw_camera, look_at_translation

            ranges = {k: tuple(v) if isinstance(v, list) else v for k, v in r.camera_ranges.items()}
            cam = draw_camera(r.seed, index, CameraSettings(**ranges), r.size, self.extent)
            t = look_at_translation(R, r.centre, cam.distance, cam.shift, cam.focal)
            K = cv.intrinsics(cam.focal, r.size)
        else:
            t = np.array([0.0, 0.0, r.distance]) - R @ np.array(r.centre)
        depth = (vertices.astype(np.float64) @ R[2]) + t[2]
        if depth.min() < NEAR_MM:
            raise FacebenchError(f"sample {index}: the face crosses the near plane; increase --distance")
        return {"index": index, "subject": p["subject"], "vertices": vertices,
                "albedo": albedo.reshape(V, 3).astype(np.float32), "q": q, "t": t, "sh": p["sh"], "K": K,
                "coefficients": {k: p[k].astype(np.float32) for k in ("identity", "expression", "reflectance")}}

    def landmarks_2d(self, vertices: np.ndarray, q: np.ndarray, t: np.ndarray, K=None) -> np.ndarray:
        """``project(vertices[landmark_indices], q, t, K)`` float32 (``K`` default: the shared one),
        NaN where undefined."""
        points = vertices[np.maximum(self.landmarks, 0)].astype(np.float64)
        uv = cv.project(points, q, t, self.K if K is None else K).astype(np.float32)
        uv[self.landmarks < 0] = np.nan
        return uv


def _quantize(image: np.ndarray) -> np.ndarray:
    """Linear RGB float -> uint8: ``rint(clip(x, 0, 1) * 255)``."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_rows(context: _Context, indices: list[int]) -> dict[str, Any]:
    """Rows of the dataset for samples ``indices`` (plus their mirrors when symmetrizing).

    Returns a batch dict for :meth:`DatasetWriter.write` (rows in order: sample, its mirror, ...).
    """
    import torch

    from facebench.render import interpolate, render

    r = context.resolved
    samples = [context.sample(i) for i in indices]
    device = torch.device(context.device)
    f32 = {"dtype": torch.float32, "device": device}
    vertices = torch.as_tensor(np.stack([s["vertices"] for s in samples]), **f32)
    albedo = torch.as_tensor(np.stack([s["albedo"] for s in samples]), **f32)
    out = render(
        vertices, torch.as_tensor(context.model.faces.astype(np.int64), device=device),
        torch.as_tensor(np.stack([s["q"] for s in samples]), **f32),
        torch.as_tensor(np.stack([s["t"] for s in samples]), **f32),
        context.K if r.camera == "fixed" else np.stack([s["K"] for s in samples]), r.size, r.size,
        reflectance=albedo,
        sh=torch.as_tensor(np.stack([s["sh"] for s in samples]), **f32), near=NEAR_MM,
    )
    shaded = out.image.cpu().numpy()
    masks = out.mask.cpu().numpy()
    reflectance_images = _quantize(interpolate(out.fragments, albedo).cpu().numpy())
    rows: dict[str, list] = {k: [] for k in (
        "ids", "images", "masks", "reflectance_images", "vertices", "landmarks_2d", "q", "t", "sh",
        "yaw", "pitch", "roll", "subject", "mirror_of")}
    coefficients: dict[str, list] = {"identity": [], "expression": [], "reflectance": []}

    per_sample_K = r.camera != "fixed"
    if per_sample_K:
        rows["K"] = []

    def add(sample_id, image, mask, refl, vertices_, q, t, sh, coeffs, subject, mirror_of, K):
        if per_sample_K:
            rows["K"].append(K)
        rows["ids"].append(sample_id)
        rows["images"].append(image)
        rows["masks"].append(mask)
        rows["reflectance_images"].append(refl)
        rows["vertices"].append(vertices_)
        rows["landmarks_2d"].append(context.landmarks_2d(vertices_, q, t, K))
        rows["q"].append(q)
        rows["t"].append(t)
        rows["sh"].append(sh)
        yaw, pitch, roll = cv.head_angles(q)
        rows["yaw"].append(yaw)
        rows["pitch"].append(pitch)
        rows["roll"].append(roll)
        rows["subject"].append(subject)
        rows["mirror_of"].append(mirror_of)
        for key in coefficients:
            coefficients[key].append(coeffs[key])

    for b, s in enumerate(samples):
        index = s["index"]
        row = index * r.rows_per_sample
        background = background_image(r, index)
        image = _quantize(np.where(masks[b][..., None], shaded[b], background))
        add(f"{index:07d}", image, masks[b], reflectance_images[b], s["vertices"], s["q"], s["t"],
            s["sh"], s["coefficients"], s["subject"], -1, s["K"])
        if r.symmetrize:
            q_m, t_m = mirror_pose(s["q"], s["t"])
            vertices_m = (s["vertices"][context.perm] * MIRROR.astype(np.float32)).astype(np.float32)
            nan = {k: np.full_like(v, np.nan) for k, v in s["coefficients"].items()}
            add(f"{index:07d}m", image[:, ::-1], masks[b][:, ::-1], reflectance_images[b][:, ::-1],
                vertices_m, q_m, t_m, mirror_sh(s["sh"]), nan, s["subject"], row, s["K"])
    batch = {k: np.stack(v) if k != "ids" else v for k, v in rows.items()}
    batch["coefficients"] = {k: np.stack(v) for k, v in coefficients.items()}
    return batch


# ---------------------------------------------------------------------------- writing
@dataclasses.dataclass
class GenerationSummary:
    """What a run wrote: output paths, rows (images) written, wall time, images/s."""

    paths: list[Path]
    rows: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _model_attrs(model, model_spec: dict | None) -> dict[str, Any]:
    return {"model": model.name, "model_version": model.version, "model_digest": model.digest(),
            "model_spec": model_spec or {"name": model.name}}


def _file_attrs(resolved: ResolvedSettings, model, plan: OutputPlan, model_spec, mirror_error) -> dict:
    per = resolved.rows_per_sample
    attrs = {
        **_model_attrs(model, model_spec),
        "generator": "facebench.datasets.synthetic",
        "seed": resolved.seed,
        "settings": resolved.as_dict(),
        "split": plan.split,
        "rows": [plan.start * per, plan.stop * per],
        "split_rows": [plan.split_start * per, plan.split_stop * per],
        "shard": "" if plan.shard is None else f"{plan.shard[0]}/{plan.shard[1]}",
        "image_encoding": "linear RGB, uint8 = rint(clip(x, 0, 1) * 255), no gamma",
        "world": resolved.world,
        "camera": resolved.camera,
    }
    if mirror_error is not None:
        attrs["mirror_max_error_mm"] = mirror_error
    return attrs


def _batches(start: int, stop: int, size: int) -> Iterator[list[int]]:
    for lo in range(start, stop, size):
        yield list(range(lo, min(stop, lo + size)))


def _writer(plan: OutputPlan, resolved: ResolvedSettings, model, attrs: dict, overwrite: bool) -> DatasetWriter:
    return DatasetWriter(
        plan.path, n=plan.n_samples * resolved.rows_per_sample, height=resolved.size, width=resolved.size,
        faces=model.faces, landmark_indices=model.landmark_indices, n_vertices=model.n_vertices,
        n_coefficients={"identity": model.n_identity, "expression": model.n_expression,
                        "reflectance": model.n_reflectance},
        K=cv.intrinsics(resolved.focal, resolved.size) if resolved.camera == "fixed" else None,
        attrs=attrs, overwrite=overwrite,
        extra_fields={"subject": ((), np.int64), "mirror_of": ((), np.int64)},
    )


# Worker state (one per process of the pool).
_WORKER: dict[str, Any] = {}


def _worker_init(model, resolved: ResolvedSettings, device: str, threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks

    torch.set_num_threads(threads)
    _WORKER["context"] = _Context(model, resolved, device)


def _worker_render(indices: list[int]) -> dict[str, Any]:
    return render_rows(_WORKER["context"], indices)


def _worker_shard(job) -> int:
    plan, attrs, overwrite, batch_size = job
    context = _WORKER["context"]
    _write_plan(context, plan, attrs, overwrite, batch_size, map_fn=map, progress=None)
    return plan.n_samples * context.resolved.rows_per_sample


def _write_plan(context: _Context, plan: OutputPlan, attrs: dict, overwrite: bool, batch_size: int,
                map_fn, progress) -> None:
    r = context.resolved
    per = r.rows_per_sample
    batches = list(_batches(plan.start, plan.stop, batch_size))
    with _writer(plan, r, context.model, attrs, overwrite) as writer:
        for indices, batch in zip(batches, map_fn(_render_in(context), batches)):
            writer.write((indices[0] - plan.start) * per, batch)
            if progress is not None:
                progress(len(batch["ids"]))


def _render_in(context: _Context) -> Callable[[list[int]], dict]:
    if _WORKER.get("context") is context:
        return _worker_render  # picklable for a pool
    return lambda indices: render_rows(context, indices)


def generate(
    settings: GeneratorSettings,
    out: str | Path,
    *,
    model=None,
    model_spec: dict | None = None,
    shard: tuple[int, int] | None = None,
    shards: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    batch_size: int = 8,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> GenerationSummary:
    """Render a synthetic dataset (see the module docstring and ``datasets/synthetic.md``).

    Args:
        settings: what to generate; checked by :func:`resolve_settings` before any work.
        out: output file (``.h5``); with splits/shards the names derive from it
            (:func:`plan_outputs`).
        model: a MorphableModel (default: ``facebench.models.load("synthetic")``).
        model_spec: how the model was loaded (name, path, options), recorded in the attributes.
        shard: ``(i, N)``: write only the i-th of N slices (of each split).
        shards: write all N slices as separate files, in parallel over ``workers``.
        workers: processes rendering in parallel (``spawn``; 1 torch thread each).
        overwrite: replace existing outputs (otherwise an existing output is an error, before work).
        batch_size: samples per rasterizer call (does not change any output bit).
        device: torch device of the rasterizer (``cuda`` is faster; bits may differ from CPU).
        progress: called with the number of rows written after each batch; ``total`` once with
            the total number of rows.

    Returns:
        :class:`GenerationSummary`.
    """
    if model is None:
        from facebench.models import load

        model = load("synthetic")
    if workers < 1:
        _fail(f"--workers must be >= 1, got {workers}")
    if batch_size < 1:
        _fail(f"batch size must be >= 1, got {batch_size}")
    resolved = resolve_settings(settings, model)
    plans = plan_outputs(resolved, out, shard=shard, shards=shards)
    if not overwrite:
        for plan in plans:
            if plan.path.exists():
                raise InputFileError(plan.path, "exists already (use --overwrite to replace it)")
    remove_stale_partials([p.path for p in plans])
    mirror_error = mirror_correspondence(model)[1] if resolved.symmetrize else None
    per = resolved.rows_per_sample
    rows = sum(p.n_samples for p in plans) * per
    if total is not None:
        total(rows)
    jobs = [(p, _file_attrs(resolved, model, p, model_spec, mirror_error)) for p in plans]
    start = time.perf_counter()
    if workers == 1:
        context = _Context(model, resolved, device)
        for plan, attrs in jobs:
            _write_plan(context, plan, attrs, overwrite, batch_size, map_fn=map, progress=progress)
    else:
        ctx = multiprocessing.get_context("spawn")
        init = (model, resolved, device, 1)
        with _pool_ignoring_ctrl_c(ctx, workers, init) as pool, _removing_partials_on_failure(pool, [p.path for p in plans]):
            if shards is not None and len(jobs) > 1:
                for count in pool.imap_unordered(_worker_shard, [(p, a, overwrite, batch_size) for p, a in jobs]):
                    if progress is not None:
                        progress(count)
            else:
                context = _Context(model, resolved, device)

                def pooled(_fn, iterable):
                    return pool.imap(_worker_render, iterable)

                for plan, attrs in jobs:
                    _write_plan(context, plan, attrs, overwrite, batch_size, map_fn=pooled, progress=progress)
    return GenerationSummary([p.path for p, _ in jobs], rows, time.perf_counter() - start)



def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(paths: list[Path]) -> list[Path]:
    """Remove the hidden ``.NAME.PID.partial`` files that writers of ``paths`` left behind when their
    process died (interrupted or killed); files of a process still running are kept. Returns the
    removed paths."""
    removed = []
    for path in paths:
        for partial in Path(path).parent.glob(f".{Path(path).name}.*.partial"):
            pid = partial.name[len(Path(path).name) + 2:-len(".partial")]
            if pid.isdigit() and not _pid_alive(int(pid)):
                partial.unlink(missing_ok=True)
                removed.append(partial)
    return removed


def _pool_ignoring_ctrl_c(ctx, workers: int, init: tuple):
    """A process pool whose workers ignore SIGINT from their first instruction (the disposition is
    inherited through ``spawn``'s exec, so a Ctrl-C during their start-up prints no traceback either);
    the parent keeps its handler and stops them (:func:`_removing_partials_on_failure`)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return ctx.Pool(workers, initializer=_worker_init, initargs=init)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return ctx.Pool(workers, initializer=_worker_init, initargs=init)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _removing_partials_on_failure(pool, paths: list[Path]):
    """On any failure or interrupt: stop the pool's workers, wait for them, then remove the partial
    files they were writing (a worker killed mid-shard cannot clean up after itself)."""
    try:
        yield
    except BaseException:
        pool.terminate()
        pool.join()
        remove_stale_partials(paths)
        raise


def open_dataset(path: str | Path) -> FaceDataset:
    """A lazy reader of a dataset file (``len``, ``[i] -> dict``); see :class:`FaceDataset`."""
    return FaceDataset(path)
