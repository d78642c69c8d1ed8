"""Baselines: reconstruction methods that facebench scores as reference points, one folder per paper.

- :mod:`.ramon2019`: Ramon et al. 2019, "Hyperparameter-Free Losses for Model-Based Monocular
  Reconstruction": the five pose/shape losses, the regressor, its training, prediction,
  Bayesian weight search and the reproductions of Table 2 and Table 3.
- :mod:`.tewari2018`: Tewari et al. 2018, "Self-supervised Multi-level Face Model Learning for
  Monocular Reconstruction at over 250 Hz": the multi-level model, its self-supervised loss, its
  two-stage training, prediction and the reproduced evaluations.
- :mod:`.landmark_fit`: the classic baseline, a 3D morphable model fitted to 68 2D landmarks
  (pose, identity and expression by regularized Levenberg–Marquardt in torch); no training.

Shared by both learned baselines: :mod:`.encoders` (image feature extractors), :mod:`.runs` (run
folders, checkpoints, training sets, logs) and :mod:`.scan_images` (scan-dataset crops as network
inputs).
"""
