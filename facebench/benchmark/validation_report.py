"""The result of validating a submission: every problem, as data.

A :class:`ValidationReport` lists each :class:`Problem` (severity, code, message, the ids
concerned), the completion rate and counts, and renders them as text or JSON. A submission is
scored only when the report is ``ok`` (no errors); :class:`InvalidSubmission` is raised with the
report when an invalid submission is loaded for scoring.

Problem codes (E: error, W: warning):

=========================  ==  =====================================================================
``unreadable``             E   missing file, not HDF5 / zip, unreadable mesh or manifest
``unsafe-zip``             E   a zip member outside the root, a link, a zip bomb (nothing extracted)
``unsafe-hdf5``            E   external or soft links, virtual or external storage (never followed)
``unsafe-path``            E   a symbolic link in a folder submission (never followed)
``too-large``              E   an array or attribute declared beyond the dataset's size budget
                               (:class:`facebench.benchmark.validation_checks.SizeBudget`), refused unread
``unknown-format``         E   ``format`` attribute is not ``"facebench-submission"``
``unsupported-version``    E   ``version`` is not 1
``missing-method``         W   no ``method`` name (absent, empty or whitespace only)
``bad-method-name``        E   a ``method`` that breaks :mod:`facebench.benchmark.method_name`'s rule
                               (control or invisible characters, a lone surrogate, not UTF-8, > 100)
``missing-field``          E   no ``ids`` or no ``vertices``
``bad-dtype``              E   object / variable-length / opaque / compound / reference data (never
                               read, so never unpickled); integer vertices; float faces; non-string ids
``low-precision``          W   float16 coordinates (0.06 mm steps at 100 mm)
``bad-shape``              E   an array of the wrong shape (e.g. vertices not (N,V,3))
``unknown-field``          W   an extra dataset or manifest key (ignored)
``stray-files``            W   files of a folder submission that are not ``<id>.obj|.ply`` (ignored)
``duplicate-ids``          E   an id given more than once (also ``a.obj`` next to ``a.ply``)
``unknown-ids``            E   ids that are not in the dataset (the wrong dataset?)
``missing-ids``            W   dataset ids without prediction: listed, counted into ``completion``
``no-predictions``         E   no dataset id has a prediction (completion 0: nothing to score)
``non-finite-vertices``    E   NaN or Inf coordinates
``vertex-count``           E   vertex count differs from the declared topology: the dataset's when
                               no ``faces`` are given (give ``faces`` for another topology) or when
                               the protocol compares vertices by index (topology ``dataset``)
``faces-out-of-range``     E   a face index < 0 or >= V
``faces-differ``           W   topology ``dataset``: faces given that are not the dataset's
``degenerate-faces``       W/E zero-area triangles (repeated index; with topology ``any`` also
                               area < 1e-6 mm², per sample): a warning up to 1 % of the faces of a
                               sample, an error above
``not-a-surface``          E   topology ``any``: the median triangle edge is longer than a quarter
                               of the sample's extent (faces joining distant vertices, e.g. random
                               indices: no surface to measure distances to)
``landmark-count``         E   landmark indices / coordinates not in the dataset's landmark count
``landmark-out-of-range``  E   a landmark index < −1 or >= V (−1 means "undefined")
``non-finite-landmarks``   E   ±Inf landmark coordinates (NaN means "undefined" and is accepted)
``no-landmarks``           E   topology ``any``, a topology other than the dataset's and no way to
                               get landmarks (scan protocols align on them)
``pose-incomplete``        E   ``q`` without ``t`` or the reverse (also per id in a folder)
``missing-pose``           E   ``require_pose`` and no pose
``non-finite-pose``        E   NaN or Inf in q or t
``non-unit-quaternion``    E   ``| ‖q‖ − 1 | > 1e-3``
``behind-camera``          W   ``t_z <= 0``: the head origin is not in front of the camera
``translation-scale``      W   median ‖t‖ off the ground truth's by more than ×10 (metres? µm?)
``absurd-size``            E   a sample's extent (largest bounding-box side) < 10 mm or > 1000 mm:
                               probably metres or micrometres; facebench wants millimetres
``size-mismatch``          W   extent off the ground truth's median extent by more than ×2
                               (centimetres?)
``orphan-entries``         W   manifest poses / landmarks for ids without a mesh (ignored)
=========================  ==  =====================================================================
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from facebench.errors import FacebenchError

__all__ = ["Problem", "ValidationReport", "InvalidSubmission"]


@dataclasses.dataclass
class Problem:
    """One problem of a submission.

    Attributes:
        severity: ``"error"`` (the submission is refused) or ``"warning"`` (scored anyway).
        code: stable machine-readable code (see the module table).
        message: one human sentence.
        ids: the sample ids concerned (all of them), empty for file-level problems.
    """

    severity: str
    code: str
    message: str
    ids: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "ids": list(self.ids)}


@dataclasses.dataclass
class ValidationReport:
    """Everything wrong with a submission, as data; ``to_text``/``to_dict`` render it.

    Attributes:
        submission, dataset: the paths checked.
        kind: ``"hdf5"``, ``"folder"`` or None (unreadable); ``method``, ``format``, ``version``:
            as declared (None when absent).
        n_expected: dataset ids; n_submitted: predictions in the submission (rows or meshes);
        n_scored: distinct dataset ids with a prediction; missing_ids: the others, dataset order.
        problems: every :class:`Problem` found.
    """

    submission: str
    dataset: str
    n_expected: int = 0
    kind: str | None = None
    method: str | None = None
    format: str | None = None
    version: int | None = None
    n_submitted: int = 0
    n_scored: int = 0
    missing_ids: list[str] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def completion(self) -> float:
        """Scored / expected ids, in [0, 1]."""
        return self.n_scored / self.n_expected if self.n_expected else 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def codes(self) -> set[str]:
        """The codes of all problems."""
        return {p.code for p in self.problems}

    def problem(self, code: str) -> Problem | None:
        """The first problem with ``code``, or None."""
        return next((p for p in self.problems if p.code == code), None)

    def add(self, severity: str, code: str, message: str, ids=()) -> None:
        if severity not in ("error", "warning"):
            raise ValueError(f"severity must be 'error' or 'warning', got {severity!r}")
        self.problems.append(Problem(severity, code, message, list(dict.fromkeys(str(i) for i in ids))))

    def refusal_line(self) -> str:
        """One line saying why the submission is refused: the first error and how many others."""
        if self.ok:
            return f"valid submission {self.submission}"
        first, others = self.errors[0], len(self.errors) - 1
        more = f" (and {others} other error(s))" if others else ""
        return f"invalid submission {self.submission}: {first.code}: {_cut(first.message, 300)}{more}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (every id listed)."""
        return {
            "submission": self.submission, "dataset": self.dataset, "kind": self.kind,
            "format": self.format, "version": self.version, "method": self.method,
            "ok": self.ok, "completion": self.completion, "n_expected": self.n_expected,
            "n_submitted": self.n_submitted, "n_scored": self.n_scored,
            "n_errors": len(self.errors), "n_warnings": len(self.warnings),
            "missing_ids": list(self.missing_ids), "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self, max_ids: int = 8) -> str:
        """A human report: header, completion, verdict, one line per problem (ids shortened)."""
        described = ", ".join(x for x in (self.kind, f"method {self.method!r}" if self.method else None,
                                          f"version {self.version}" if self.version is not None else None) if x)
        lines = [
            f"submission: {self.submission}" + (f" ({described})" if described else ""),
            f"dataset:    {self.dataset} ({self.n_expected} samples)",
            f"completion: {self.completion:.3f} ({self.n_scored} of {self.n_expected} dataset ids predicted, "
            f"{self.n_submitted} predictions submitted)",
        ]
        verdict = "OK" if self.ok else "INVALID"
        lines.append(f"result:     {verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        if not self.ok:  # the first line says why
            lines.insert(0, self.refusal_line())
        for p in sorted(self.problems, key=lambda p: p.severity != "error"):
            line = f"{p.severity:<8}{p.code}: {_cut(p.message, 500)}"
            if p.ids:
                shown = ", ".join(_cut(i, 60) for i in p.ids[:max_ids])
                more = f", ... and {len(p.ids) - max_ids} more" if len(p.ids) > max_ids else ""
                line += f" [ids: {shown}{more}]"
            lines.append(line)
        return "\n".join(lines)


def _cut(text: str, limit: int) -> str:
    """Strangers' strings (ids, values in messages) cut to ``limit`` characters for one line."""
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


class InvalidSubmission(FacebenchError):
    """A submission whose validation found errors; ``report`` holds all of them."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.refusal_line())
