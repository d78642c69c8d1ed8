"""iBUG-68 landmark vertex tables from eos' mapping files (``ibug_to_*.txt``, TOML).

The file holds a ``[landmark_mappings]`` table ``<ibug number 1..68> = <vertex index>``
(0-based vertex indices, as eos uses them). Landmarks the file does not list get ``-1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.errors import ModelFileError
from facebench.models.morphable_model import N_LANDMARKS

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml


def read_landmark_mapping(path: str | Path, n_vertices: int | None = None) -> np.ndarray:
    """Read an eos ``ibug_to_*.txt`` file into ``(68,)`` int32 vertex indices (``-1``: unmapped).

    Args:
        path: the mapping file.
        n_vertices: if given, every mapped index must be below it.

    Raises:
        ModelFileError: missing file, invalid TOML, no ``[landmark_mappings]`` table, keys
            outside 1..68, non-integer or out-of-range vertex indices.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "landmark mapping file not found")
    try:
        table = _toml.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, _toml.TOMLDecodeError) as error:
        raise ModelFileError(path, f"not a TOML landmark mapping: {error}") from None
    mappings = table.get("landmark_mappings")
    if not isinstance(mappings, dict) or not mappings:
        raise ModelFileError(path, "no [landmark_mappings] table (expected eos ibug_to_*.txt format)")
    indices = np.full(N_LANDMARKS, -1, dtype=np.int32)
    for key, value in mappings.items():
        if not (isinstance(key, str) and key.isdigit() and 1 <= int(key) <= N_LANDMARKS):
            raise ModelFileError(path, f"landmark key {key!r} is not an iBUG number 1..{N_LANDMARKS}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFileError(path, f"landmark {key}: vertex index {value!r} is not a non-negative integer")
        if n_vertices is not None and value >= n_vertices:
            raise ModelFileError(path, f"landmark {key}: vertex {value} >= model's {n_vertices} vertices")
        indices[int(key) - 1] = value
    return indices
