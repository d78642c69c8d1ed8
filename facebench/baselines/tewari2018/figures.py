"""Figures of the multi-level evaluations: per-variant bar plots and the paper's image panels.

- :func:`bar_plot`: one metric per variant (error vs number or kind of correctives, base vs final
  level), with the sample count in the title;
- :func:`panel_images` / :func:`write_panels`: for a few test images, the input, the final level
  rendered over it, its reflectance (unlit), its geometry (grey mesh, fixed white light) and its
  illumination (a sphere lit by the regressed final-level SH), one group of columns per variant,
  like the paper's figures. Images are shown in linear RGB (as stored); matplotlib's Agg backend;
  written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facebench.atomic import write_figure
from facebench.device import resolve_device
from facebench.errors import FacebenchError

__all__ = ["bar_plot", "panel_images", "write_panels"]


def _sphere(sh: torch.Tensor, size: int) -> np.ndarray:
    """A unit sphere seen by the camera, lit by ``sh (9,3)`` (camera frame): ``(size,size,3)``;
    outside the disc black."""
    from facebench.render import sh_irradiance

    c = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(c, c)
    inside = u**2 + v**2 < 1
    n = np.stack([u, v, -np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))], axis=-1)
    irradiance = sh_irradiance(torch.as_tensor(n, dtype=torch.float32), sh.detach().float().cpu()).numpy()
    return np.where(inside[..., None], np.clip(irradiance, 0, 1), 0.0)


def panel_images(net, dataset, indices, *, device="cpu") -> list[dict[str, np.ndarray]]:
    """For each test image of ``indices``: ``input``, ``overlay`` (final level's shaded render over
    the input), ``reflectance`` (final level, unlit, predicted pose, white background),
    ``geometry`` (final shape, grey with a fixed white light), ``illumination`` (sphere lit by the
    final level's SH) — ``(H,W,3)`` float arrays in [0,1]."""
    from facebench.baselines.tewari2018.data import TrainingImages
    from facebench.render import default_sh, render

    device = resolve_device(device)
    images, _, _ = TrainingImages(dataset).get(np.asarray(indices, np.int64), device)
    size = images.shape[-1]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            output = net.reconstruct(images)
            shaded = net.render(output, "final")
            p = output.params
            faces = torch.as_tensor(np.asarray(dataset.faces, np.int64), device=device)
            K = net.K
            refl = render(output.vertices_final, faces, p.q, p.t, K, size, size,
                          colors=output.reflectance_final.clamp(0, 1), background=1.0)
            grey = render(output.vertices_final, faces, p.q, p.t, K, size, size,
                          reflectance=torch.full_like(output.vertices_final, 0.75),
                          sh=default_sh(dtype=torch.float32, device=device), background=1.0)
    finally:
        net.train(was_training)
    rows = []
    for b in range(len(indices)):
        inp = images[b].permute(1, 2, 0).cpu().numpy()
        mask = shaded.mask[b].cpu().numpy()[..., None]
        rows.append({
            "input": inp,
            "overlay": np.where(mask, np.clip(shaded.image[b].cpu().numpy(), 0, 1), inp),
            "reflectance": np.clip(refl.image[b].cpu().numpy(), 0, 1),
            "geometry": np.clip(grey.image[b].cpu().numpy(), 0, 1),
            "illumination": _sphere(p.sh_final[b], size),
        })
    return rows


def write_panels(groups: dict[str, list[dict[str, np.ndarray]]], path: str | Path, *, title: str = "",
                 columns=("overlay", "reflectance", "geometry", "illumination")) -> Path:
    """One figure: a row per test image, the input, then ``columns`` for each variant of
    ``groups`` (variant name -> :func:`panel_images` rows); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    n_rows = len(groups[names[0]]) if names else 0
    if n_rows == 0:
        raise FacebenchError("no panel rows to draw")
    n_cols = 1 + len(columns) * len(names)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.4 * n_rows + 0.4), squeeze=False)
    for r in range(n_rows):
        cells = [("input", groups[names[0]][r]["input"])]
        for name in names:
            cells += [(f"{name}\n{c}", groups[name][r][c]) for c in columns]
        for c, (label, image) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    write_figure(fig, path, dpi=100)
    return path


def bar_plot(table: pd.DataFrame, label_column: str, path: Path, title: str, *,
              columns=(("photo_base", "base"), ("photo_final", "final")), ylabel: str = "photometric error",
              reference: float | None = None, line: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    labels = [str(v) for v in table[label_column]]
    x = np.arange(len(labels))
    width = 0.8 / len(columns)
    for k, (column, name) in enumerate(columns):
        values = table[column].to_numpy(dtype=float)
        if line:
            ax.plot(table[label_column], values, marker="o", label=name)
        else:
            ax.bar(x + (k - (len(columns) - 1) / 2) * width, values, width, label=name)
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", linewidth=1, label=f"paper ({reference:g})")
    if not line:
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
    else:
        ax.set_xlabel(label_column)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
    return path

