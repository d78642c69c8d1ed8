"""Where facebench keeps downloaded and converted files (models, annotations).

``$FACEBENCH_CACHE`` wins when set (tests point it at a temporary folder); otherwise the
platform's user cache folder (``platformdirs.user_cache_dir("facebench")``, e.g.
``~/.cache/facebench`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the cache location.
CACHE_ENV = "FACEBENCH_CACHE"


def cache_dir(*parts: str) -> Path:
    """The facebench cache folder (or a sub-folder ``parts`` of it), created on demand."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("facebench"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
