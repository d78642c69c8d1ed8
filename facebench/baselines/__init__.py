"""Baselines: reconstruction methods that facebench scores as reference points.

- :mod:`.landmark_fitting`: the classic baseline, a 3D morphable model fitted to 68 2D landmarks
  (pose, identity and expression by regularized Levenberg–Marquardt in torch); no training.

The learned baselines of the papers (the five pose/shape losses, the regressor, the multi-level
model) live beside it.
"""
