"""A contact sheet of a dataset file: images with landmarks, reflectance images, masks (PNG).

Drawn with matplotlib's Agg canvas (no display, no global backend change) and written atomically.
Images are shown as stored (linear RGB uint8, no gamma), so they look darker than sRGB photos.
"""

from __future__ import annotations

from pathlib import Path

from facebench.atomic import atomic_path
from facebench.datasets.dataset_file import FaceDataset
from facebench.errors import FacebenchError

#: Landmark groups drawn in different colours (0-based iBUG index ranges).
_GROUPS = ((0, 17, "#ffdd00"), (17, 27, "#ff7f0e"), (27, 36, "#2ca02c"), (36, 48, "#1f77b4"), (48, 68, "#d62728"))


def contact_sheet(path: str | Path, out: str | Path, *, count: int = 8, start: int = 0,
                  columns: int | None = None) -> Path:
    """Write a PNG showing rows ``[start, start + count)`` of the dataset at ``path``.

    Each sample is a column of three panels: the image with its 68 landmarks (``landmarks_2d``,
    coloured by group: jaw, brows, nose, eyes, mouth), the reflectance image, the mask. Samples
    wrap into several bands of ``columns`` (default ``min(count, 8)``). Returns ``out``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ds = FaceDataset(path)
    if start >= len(ds):
        raise FacebenchError(f"{path}: --start {start} beyond the {len(ds)} rows")
    rows = list(range(start, min(len(ds), start + count)))
    columns = columns or min(len(rows), 8)
    bands = -(-len(rows) // columns)
    figure = Figure(figsize=(1.9 * columns, 1.9 * 3 * bands + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(3 * bands, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, row in enumerate(rows):
        sample = ds[row]
        band, col = divmod(k, columns)
        top, middle, bottom = (axes[3 * band + i, col] for i in range(3))
        top.imshow(sample["images"], interpolation="nearest")
        lm = sample["landmarks_2d"]
        for lo, hi, colour in _GROUPS:
            top.scatter(lm[lo:hi, 0], lm[lo:hi, 1], s=2.0, c=colour, linewidths=0)
        title = f"{sample['id']}  yaw {float(sample['yaw']):.0f}°"
        top.set_title(title, fontsize=7)
        middle.imshow(sample["reflectance_images"], interpolation="nearest")
        middle.set_title("reflectance", fontsize=7)
        bottom.imshow(sample["masks"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        bottom.set_title("mask", fontsize=7)
        size = sample["masks"].shape
        for ax in (top, middle, bottom):
            ax.set_xlim(-0.5, size[1] - 0.5)
            ax.set_ylim(size[0] - 0.5, -0.5)
    figure.suptitle(f"{Path(path).name}: rows {rows[0]}..{rows[-1]} of {len(ds)} "
                    f"(linear RGB as stored)", fontsize=8)
    figure.tight_layout()
    ds.close()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return out
