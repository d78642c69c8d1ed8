"""The reference rows of a reproduced table: what predicting nothing scores (the model's mean face at
the true pose) and the shape floor of a regressor of the dataset's model (the ground truth's
least-squares fit in the regressor's span, at the true pose), written as submissions with
:func:`facebench.benchmark.templates.write_template` and scored under the ``synthetic`` protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facebench.errors import FacebenchError

__all__ = ["REFERENCES", "score_reference_rows"]

#: Template kind → row name.
REFERENCES = {"mean": "mean-shape", "oracle": "projection-oracle"}


def score_reference_rows(test: str | Path, out: str | Path, *, identity_dims: int, expression_dims: int,
                         stage: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Write ``out/submissions/NAME.h5`` and score it into ``out/results/NAME/`` for each row of
    :data:`REFERENCES` on the dataset ``test``; return ``{NAME: {metric: mean over samples}}``.

    The oracle's span is the regressor's: at most ``identity_dims`` identity and ``expression_dims``
    expression modes of the dataset's model, within the span its out-of-span detail avoids
    (:func:`facebench.benchmark.oracle.default_span`). The oracle is left out, with a ``stage`` line,
    when the dataset's model cannot be loaded here."""
    from facebench.benchmark import oracle
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results
    from facebench.benchmark.templates import write_template
    from facebench.datasets.dataset_file import FaceDataset

    stage = stage or (lambda _message: None)
    test, out = Path(test), Path(out)
    dataset = FaceDataset(test)
    scored: dict[str, dict[str, float]] = {}
    for kind, name in REFERENCES.items():
        options: dict[str, Any] = {}
        if kind == "oracle":
            try:
                model = oracle.dataset_model(dataset)
            except FacebenchError as error:
                stage(f"      no {name} row: {error}")
                continue
            span = oracle.default_span(dataset, model)
            options = {"identity_dims": min(span[0], identity_dims, model.n_identity),
                       "expression_dims": min(span[1], expression_dims, model.n_expression)}
        submission = out / "submissions" / f"{name}.h5"
        submission.parent.mkdir(parents=True, exist_ok=True)
        write_template(dataset, kind, submission, **options)
        result = score(test, submission, get_protocol("synthetic"))
        write_results(result, out / "results" / name)
        scored[name] = {k: float(v["mean"]) for k, v in result.summary["metrics"].items()}
        stage(f"      {name}: shape {scored[name]['shape_mm']:.3f} mm, "
              f"reprojection {scored[name]['reprojection_px']:.3f} px")
    return scored
