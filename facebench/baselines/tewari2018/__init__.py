"""Tewari et al. 2018, "Self-supervised Multi-level Face Model Learning for Monocular Reconstruction
at over 250 Hz".

- :mod:`.model`: the multi-level model (a 3DMM base level plus learned corrective spaces for shape
  and reflectance, spherical-harmonics lighting per level, compact codes);
- :mod:`.loss`: the self-supervised loss (photometric, landmarks, statistical priors and the
  correctives' smoothness, stabilization, sparsity and constancy priors) and the photometric and
  reflectance errors;
- :mod:`.data`: the training inputs read from a dataset file;
- :mod:`.training`: the two-stage training (pre-training the base level, then fine-tuning all);
- :mod:`.predict`: checkpoints and predictions (submissions, compact codes);
- :mod:`.evaluations`: the reproduced evaluations (number and kind of correctives, reflectance
  test, ablation).

The card ``baselines/tewari2018.md`` at the repository root reports the reproduced numbers.
"""
