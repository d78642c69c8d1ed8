"""Ramon et al. 2019, "Hyperparameter-Free Losses for Model-Based Monocular Reconstruction".

- :mod:`.losses`: the five pose/shape losses (multiterm Coarse and XQT; hyperparameter-free GAL,
  SRL, MRL) and the scale-compensating weights;
- :mod:`.regressor`: image encoder, three MLP heads (identity, quaternion, translation) and a
  frozen linear 3DMM layer;
- :mod:`.training`: training with one loss (Adam, checkpoints, resume, DDP);
- :mod:`.predict`: a trained regressor on a dataset → submission, validation metrics;
- :mod:`.hpo`: Bayesian search of the multiterm losses' weights (optuna);
- :mod:`.table2`, :mod:`.table3`: the reproductions of the paper's Table 2 (synthetic, with Fig. 5
  and Fig. 6) and Table 3 (MICC Florence, FaceWarehouse).

The card ``baselines/ramon2019.md`` at the repository root reports the reproduced numbers.
"""
