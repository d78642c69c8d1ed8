"""Quick shaded previews of face meshes as a PNG (matplotlib Agg, no display, no GPU).

A painter's algorithm: triangles are culled (back faces), sorted back to front by depth and drawn
as one :class:`matplotlib.collections.PolyCollection` per panel, Lambert-shaded with a fixed light.
Good enough to look at a model, its modes and samples; not a renderer for datasets.

Views (orthographic, the viewer's up is the head's +y):

- ``"front"``: viewer on +z looking at the face (the subject's left, +x, on the image right);
- ``"side"`` (= ``"left"``): yaw 90 deg, viewer on +x looking at the subject's LEFT side, the nose
  pointing to the image left;
- ``"right"``: viewer on -x looking at the subject's right side, the nose pointing right;
- ``"three_quarter"``: yaw 45 deg toward the subject's left side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facebench.atomic import atomic_path

__all__ = ["render_preview", "VIEWS"]

#: View name -> yaw (degrees) of the head seen by the viewer (rotation about +y applied to the head).
VIEWS = {"front": 0.0, "side": -90.0, "left": -90.0, "right": 90.0, "three_quarter": -45.0}

_LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])  # view frame
_AMBIENT = 0.22
_GREY = np.array([0.62, 0.60, 0.58])  # linear RGB used when no colours are given
_BACKGROUND = "white"


def _yaw_matrix(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """sRGB transfer function on linear values clipped to [0, 1] (same shape)."""
    x = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def _panel_polygons(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, yaw: float):
    """Visible triangles ``(T,3,2)`` in view x/y and their sRGB colours ``(T,3)``, back to front."""
    v = np.asarray(vertices, dtype=np.float64) @ _yaw_matrix(yaw).T
    tri = v[faces]  # (F,3,3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1)
    visible = (normal[:, 2] > 0) & (length > 0)
    tri, normal, length = tri[visible], normal[visible], length[visible]
    shade = _AMBIENT + (1.0 - _AMBIENT) * np.clip(normal @ _LIGHT / length, 0.0, 1.0)
    if colors is None:
        albedo = np.broadcast_to(_GREY, (len(tri), 3))
    else:
        albedo = np.asarray(colors, dtype=np.float64)[faces[visible]].mean(axis=1)
    rgb = linear_to_srgb(albedo * shade[:, None])
    order = np.argsort(tri[:, :, 2].mean(axis=1), kind="stable")
    return tri[order][:, :, :2], rgb[order]


def render_preview(
    meshes: Sequence[np.ndarray],
    faces: np.ndarray,
    out_path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    colors: Sequence[np.ndarray | None] | None = None,
    views: Sequence[str] = ("front", "side"),
    panel_px: int = 300,
) -> Path:
    """Draw every mesh from every view into one PNG; return its path.

    Args:
        meshes: list of ``(V,3)`` vertex arrays in the head frame (mm), sharing ``faces``.
        faces: ``(F,3)`` triangles, counter-clockwise seen from outside.
        out_path: the PNG to write (atomically: a temporary file in the same folder, then
            ``os.replace``); parent folders are created.
        titles: one title per mesh (drawn above its column), or None.
        colors: one ``(V,3)`` linear-RGB array (or None: grey) per mesh, or None for all grey;
            shown gamma-corrected to sRGB.
        views: view names of :data:`VIEWS`, one row each.
        panel_px: size of each square panel in pixels; the image is
            ``(len(views) * panel_px) x (len(meshes) * panel_px)`` (height x width).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    meshes = [np.asarray(m) for m in meshes]
    faces = np.asarray(faces, dtype=np.int64)
    if not meshes:
        raise ValueError("render_preview needs at least one mesh")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown view(s) {unknown}; known: {', '.join(VIEWS)}")
    if colors is not None and len(colors) != len(meshes):
        raise ValueError(f"got {len(colors)} colour arrays for {len(meshes)} meshes")
    if titles is not None and len(titles) != len(meshes):
        raise ValueError(f"got {len(titles)} titles for {len(meshes)} meshes")
    n_rows, n_cols = len(views), len(meshes)
    dpi = 100
    fig = Figure(figsize=(n_cols * panel_px / dpi, n_rows * panel_px / dpi), dpi=dpi, facecolor=_BACKGROUND)
    FigureCanvasAgg(fig)
    span = max(float(np.ptp(m, axis=0).max()) for m in meshes) * 0.55
    title_h = 0.09 if titles is not None else 0.0
    for i, view in enumerate(views):
        for j, vertices in enumerate(meshes):
            left, bottom = j / n_cols, 1.0 - (i + 1) / n_rows
            ax = fig.add_axes((left, bottom, 1.0 / n_cols, (1.0 - title_h) / n_rows))
            polygons, rgb = _panel_polygons(vertices, faces, None if colors is None else colors[j], VIEWS[view])
            centre = (polygons.reshape(-1, 2).max(0) + polygons.reshape(-1, 2).min(0)) / 2.0
            ax.add_collection(PolyCollection(polygons, facecolors=rgb, edgecolors="none", antialiased=False))
            ax.set_xlim(centre[0] - span, centre[0] + span)
            ax.set_ylim(centre[1] - span, centre[1] + span)
            ax.set_aspect("equal")
            ax.set_axis_off()
            if titles is not None and i == 0:
                fig.text(left + 0.5 / n_cols, 1.0 - 0.5 * title_h / n_rows, str(titles[j]),
                         ha="center", va="center", fontsize=9)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=_BACKGROUND)
    return out_path
