"""Atomic file writing: results appear complete or not at all.

Write to a temporary file in the target's folder, then ``os.replace`` it onto the target (atomic
on POSIX within one file system). An exception or interruption removes the temporary file and
leaves any existing target untouched. The file gets the permissions a plain ``open`` would give
(0666 minus the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    Args:
        path: the final file; its parent folders are created.
        suffix: extension the temporary name must end with (e.g. ``".npz"`` for ``np.savez``,
            which would otherwise append one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".partial{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(content, path: str | Path) -> Path:
    """Write ``content`` as indented JSON with sorted keys (non-JSON values via ``str``), atomically."""
    import json

    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)


def write_csv(frame, path: str | Path) -> Path:
    """Write a pandas ``DataFrame`` without its index (6 significant digits), atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_figure(fig, path: str | Path, *, dpi: int = 110, close: bool = True, **savefig_options) -> Path:
    """Save the matplotlib figure ``fig`` as a PNG at ``path`` atomically (:func:`atomic_path`), then
    close it unless ``close`` is False; return ``path``. ``savefig_options`` go to ``fig.savefig``
    (e.g. ``facecolor``, ``bbox_inches``)."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **savefig_options)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
