"""facebench: datasets and benchmarks for model-based monocular 3D face reconstruction.

Conventions (units, frames, quaternions, projection) live in :mod:`facebench.conventions`;
face models in :mod:`facebench.models`.
"""

__version__ = "0.1.0"
