"""Content hashes of files: the one sha256 helper of facebench (model versions, downloads,
dataset and submission fingerprints in results)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 8 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
