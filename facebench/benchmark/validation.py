"""Validation of a submission against a dataset: every problem at once, as data.

:func:`validate_submission` never stops at the first problem: it returns a
:class:`~facebench.benchmark.validation_report.ValidationReport` listing each
:class:`~facebench.benchmark.validation_report.Problem` (severity, code, message, the ids
concerned), the completion rate and counts. A submission is scored only when the report is
``ok`` (no errors). Only a submission that cannot be opened at all (missing, not HDF5, unsafe zip)
stops early, because nothing else can be inspected.

The problem codes are listed in :mod:`facebench.benchmark.validation_report`; the checks are in
:mod:`facebench.benchmark.validation_hdf5`, :mod:`facebench.benchmark.validation_folder` and the
shared :mod:`facebench.benchmark.validation_checks`.

Scan datasets (MICC, FaceWarehouse files): the expected extent is the median largest
bounding-box side of the first 5 scans; there are no poses (no ``translation-scale`` check); the
landmark count is the dataset's scan landmark set (4 or 6); HDF5 predictions must give ``faces``.

Decisions: float32 and float64 coordinates are both accepted (float64 is read as is); a few
degenerate triangles are harmless (closest-point distances ignore them) but many mean a broken
surface; triangle areas are computed only for topology ``any`` (scan protocols use the surface;
corresponding-topology protocols compare vertices by index and never use it), where they cost
about 1.5 ms per 14.5k-vertex sample; ``missing-ids`` is a warning because the completion rate reports it. A mirrored
prediction is **not** detected here: a reflection only shows at alignment time, where it is
refused (no det < 0 alignment is ever accepted), so a mirrored shape scores as what it is.
"""

from __future__ import annotations

from pathlib import Path

from facebench.benchmark.submission_source import open_source
from facebench.benchmark.submission_zip import UnsafeArchiveError
from facebench.benchmark.validation_checks import Expectations, expectations
from facebench.benchmark.validation_folder import check_folder
from facebench.benchmark.validation_hdf5 import check_hdf5
from facebench.benchmark.validation_report import ValidationReport
from facebench.errors import InputFileError, InvalidInputError

__all__ = ["validate_submission", "TOPOLOGIES"]

TOPOLOGIES = ("dataset", "any")


def validate_submission(submission_path: str | Path, dataset, *, require_pose: bool = False,
                        topology: str = "dataset", chunk_size: int = 64) -> ValidationReport:
    """Check a submission against a dataset and report every problem.

    Args:
        submission_path: ``.h5``, folder with ``manifest.json``, or ``.zip`` of either.
        dataset: a :class:`facebench.datasets.dataset_file.FaceDataset` or its path.
        require_pose: poses (q, t) are needed (pose and reprojection metrics).
        topology: ``"dataset"`` (corresponding-topology protocols: every prediction on the
            dataset's vertices) or ``"any"`` (scan protocols: any mesh, landmarks needed).
        chunk_size: HDF5 rows read at a time (memory ~ chunk_size × V × 12 bytes).

    Returns:
        The :class:`ValidationReport`; it prints nothing.

    Raises:
        ValueError: an unknown ``topology``. InputFileError: the dataset cannot be read.
    """
    from facebench.datasets.dataset_file import FaceDataset

    if topology not in TOPOLOGIES:
        raise InvalidInputError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset(dataset)
    expect = expectations(dataset, require_pose, topology)
    report = ValidationReport(str(submission_path), str(dataset.path), n_expected=len(expect.ids))
    submitted = None
    try:
        with open_source(submission_path) as source:
            report.kind = source.kind
            try:
                if source.kind == "hdf5":
                    submitted = check_hdf5(source.root, expect, report, chunk_size)
                else:
                    submitted = check_folder(source.root, expect, report)
            except (OSError, KeyError, ValueError, RuntimeError) as error:  # corrupt data or metadata (h5py)...
                reason = (str(error).strip().splitlines() or [""])[0][:200]
                report.add("error", "unreadable", f"unreadable submission: {type(error).__name__}: {reason} "
                                                  f"({source.root})")
            except RecursionError:
                report.add("error", "unreadable", f"unreadable submission: structures nested too deep ({source.root})")
    except UnsafeArchiveError as error:
        report.add("error", "unsafe-zip", str(error))
    except InputFileError as error:
        report.add("error", "unreadable", str(error))
    _finish_ids(report, expect, submitted)
    return report


def _finish_ids(report: ValidationReport, expect: Expectations, submitted: list[str] | None) -> None:
    """Completion and missing ids; ``submitted`` is None when the ids could not be read."""
    present = set(submitted or ())
    report.missing_ids = [i for i in expect.ids if i not in present]
    report.n_scored = len(expect.ids) - len(report.missing_ids)
    if submitted is None:
        return
    if report.missing_ids and report.n_scored:
        report.add("warning", "missing-ids",
                   f"{len(report.missing_ids)} of {len(expect.ids)} dataset ids have no prediction: they count as "
                   f"not scored (completion {report.completion:.3f})", report.missing_ids)
    if not report.n_scored:
        report.add("error", "no-predictions", "no dataset id has a prediction (completion 0): nothing to score",
                   report.missing_ids)
