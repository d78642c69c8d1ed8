"""The projection oracle: the best fit of the ground truth in a model's span (a reference row).

For a face model with mean ``m (V,3)`` and the predictors' shape span ``S`` = the columns of the
first ``identity_dims`` identity and ``expression_dims`` expression modes (``(3V, k)``, flattened
head-frame coordinates, mm), the oracle's prediction of a ground truth ``x`` is the least-squares
fit in the affine span,

    x̂ = m + Q Qᵀ (x − m),    Q = an orthonormal basis of S,

i.e. ``argmin_{y ∈ m + S} ‖y − x‖²``. Its per-vertex RMS error (``rmse_mm`` of the ``synthetic``
protocol) is therefore the smallest any predictor whose output lies in ``m + S`` can reach; the
mean per-vertex distance (``shape_mm``) of the oracle is a near-floor (the RMS floor bounds the
mean distance from above, not below). With identity modes only (Ramon et al.'s regressor), the
expression of the test faces is part of the residual. On an in-span dataset with the full span,
the oracle scores ~0; on the ``out-of-span`` world it scores the out-of-span detail
(:mod:`facebench.datasets.out_of_span`).
"""

from __future__ import annotations

import numpy as np

from facebench.errors import FacebenchError

__all__ = ["span_basis", "project_to_span", "default_span", "dataset_model"]


def span_basis(model, identity_dims: int, expression_dims: int) -> np.ndarray:
    """``(3V, k)`` float64 orthonormal basis of the first ``identity_dims`` identity and
    ``expression_dims`` expression modes of ``model``."""
    from facebench.datasets.out_of_span import orthonormal_span

    V = model.n_vertices
    for name, k, available in (("identity", identity_dims, model.n_identity),
                               ("expression", expression_dims, model.n_expression)):
        if not 0 <= k <= available:
            raise FacebenchError(f"--{name}-dims {k} outside [0, {available}] for model {model.name!r}")
    ident = np.asarray(model.identity_basis, np.float64).reshape(3 * V, -1)[:, :identity_dims]
    expr = np.asarray(model.expression_basis, np.float64).reshape(3 * V, -1)[:, :expression_dims]
    return orthonormal_span(ident, expr)


def project_to_span(vertices: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares fit ``m + Q Qᵀ (x − m)`` of ``vertices (N,V,3)`` mm (float64 out)."""
    x = np.asarray(vertices, np.float64)
    m = np.asarray(mean, np.float64).reshape(-1)
    centred = x.reshape(len(x), -1) - m
    fit = (centred @ basis) @ basis.T if basis.shape[1] else np.zeros_like(centred)
    return (fit + m).reshape(x.shape)


def default_span(dataset, model) -> tuple[int, int]:
    """``(identity_dims, expression_dims)``: the predictors' span the dataset was made with (its
    ``settings.out_of_span``), else all the model's modes."""
    settings = dataset.attrs.get("settings")
    oos = settings.get("out_of_span") if isinstance(settings, dict) else None
    if isinstance(oos, dict):
        return int(oos["span_identity_dims"]), int(oos["span_expression_dims"])
    return model.n_identity, model.n_expression


def dataset_model(dataset):
    """The face model a synthetic dataset was generated with (its ``model`` attribute, loadable
    without a path, same digest and vertex count); FacebenchError otherwise."""
    from facebench.models import load

    name = dataset.attrs.get("model")
    if not isinstance(name, str) or not name or dataset.is_scan_dataset:
        raise FacebenchError(f"{dataset.path}: the oracle needs a synthetic dataset naming its face model")
    try:
        model = load(name)
    except (FacebenchError, OSError, ValueError) as error:
        raise FacebenchError(f"{dataset.path}: cannot load its model {name!r} for the oracle ({error})") from None
    digest = dataset.attrs.get("model_digest")
    same = str(digest) == model.digest() if digest else str(dataset.attrs.get("model_version")) == str(model.version)
    if model.mean.shape != (dataset.n_vertices, 3) or not same:
        raise FacebenchError(f"{dataset.path}: model {name!r} as loaded here is not the one the dataset was made with")
    return model
