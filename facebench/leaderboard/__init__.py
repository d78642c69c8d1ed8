"""The leaderboard: ``leaderboard.csv``, plots and a static ``index.html`` built from results folders.

- :mod:`~facebench.leaderboard.results` reads and validates the results folders of ``facebench score``;
- :mod:`~facebench.leaderboard.table` owns the CSV rows and their locked, atomic upsert;
- :mod:`~facebench.leaderboard.plots` draws error per |yaw| bin, cumulative curves and heat maps;
- :mod:`~facebench.leaderboard.html` writes the page;
- :mod:`~facebench.leaderboard.compare` runs paired tests between two methods.

:func:`build_leaderboard` ties them together; it returns data and prints nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from facebench.errors import InputFileError
from facebench.leaderboard.compare import Comparison, compare_results
from facebench.leaderboard.results import Results, find_results_dirs, read_results
from facebench.leaderboard.table import (
    BOARD_CSV,
    KEY_COLUMNS,
    _upsert_locked,
    board_lock,
    read_board,
    summary_row,
    upsert_rows,
)

__all__ = [
    "Board", "build_leaderboard", "Results", "read_results", "find_results_dirs", "upsert_rows", "read_board",
    "summary_row", "Comparison", "compare_results", "PLOTS_DIR", "INDEX_HTML",
]

PLOTS_DIR = "plots"
INDEX_HTML = "index.html"
_PLOT_PREFIXES = ("bins_", "cumulative_", "heatmap_")


@dataclasses.dataclass(frozen=True)
class Board:
    """What :func:`build_leaderboard` wrote.

    Attributes:
        out_dir: the board folder.
        csv: ``leaderboard.csv``; ``html``: ``index.html`` (None when not written).
        frame: the whole board (every row of the CSV, ranked).
        plots: the figures written (:class:`~facebench.leaderboard.plots.Plot`).
        results: the results folders read, one per row they fed.
        warnings: rows shown without plots because their results folder could not be read, etc.
    """

    out_dir: Path
    csv: Path
    html: Path | None
    frame: pd.DataFrame
    plots: list
    results: list[Results]
    warnings: list[str]


def _key(results: Results) -> tuple[str, str, str, str]:
    return (results.method, results.protocol_name, results.protocol_version, results.dataset_name)


def _latest_per_key(results: Iterable[Results]) -> dict[tuple[str, str, str, str], Results]:
    """One results folder per row key: the most recently created (then the last path)."""
    chosen: dict[tuple[str, str, str, str], Results] = {}
    for r in sorted(results, key=lambda r: (r.created, str(r.path))):
        chosen[_key(r)] = r
    return chosen


def _results_of_rows(frame: pd.DataFrame, given: dict, out_dir: Path, warnings: list[str]) -> dict:
    """The given results plus those of other rows whose ``results`` folder can still be read."""
    available = dict(given)
    for _, row in frame.iterrows():
        key = tuple(str(row[c]) for c in KEY_COLUMNS)
        if key in available:
            continue
        folder = Path(str(row["results"]))
        folder = folder if folder.is_absolute() else out_dir / folder
        try:
            r = read_results(folder)
        except InputFileError as error:
            warnings.append(f"row {key[0]!r} ({key[1]}@{key[2]}, {key[3]}): no plots ({error})")
            continue
        if _key(r) == key:
            available[key] = r
        else:
            warnings.append(f"row {key[0]!r}: results folder {folder} now holds {_key(r)[0]!r}; no plots")
    return available


def _remove_stale_plots(plots_dir: Path, keep: set[Path]) -> None:
    if not plots_dir.is_dir():
        return
    for png in plots_dir.glob("*.png"):
        if png.name.startswith(_PLOT_PREFIXES) and png.resolve() not in keep:
            png.unlink(missing_ok=True)


def build_leaderboard(results_dirs: Iterable[str | Path], out_dir: str | Path, *, fresh: bool = False,
                      plots: bool = True, html: bool = True, timeout_s: float | None = 600.0) -> Board:
    """Build or update a leaderboard folder from results folders.

    Under the board's lock: upsert one row per results folder into ``out_dir/leaderboard.csv``
    (``fresh=True`` drops the rows not given), draw the plots of every (protocol, version,
    dataset) group into ``out_dir/plots/`` (rows whose results folder is still readable, given
    or not, get plots; stale plots of ours are removed), and write ``out_dir/index.html``.

    Args:
        results_dirs: results folders, or parents searched recursively for them.
        out_dir: the board folder (created).
        fresh: rebuild the CSV from the given results only (the published board is rebuilt so).

    Raises:
        InputFileError: a path holds no results folder or a results folder is malformed.
    """
    from facebench.leaderboard.html import GroupSection, write_index
    from facebench.leaderboard.plots import plot_group

    out_dir = Path(out_dir)
    given = _latest_per_key(read_results(d) for d in find_results_dirs(results_dirs))
    rows = [summary_row(r, out_dir) for r in given.values()]
    warnings: list[str] = []
    written_plots: list = []
    with board_lock(out_dir, timeout_s):
        frame = _upsert_locked(out_dir, rows, replace_all=fresh)
        available = _results_of_rows(frame, given, out_dir, warnings)
        sections = []
        for (protocol, version, dataset), rows_of_group in frame.groupby(
                ["protocol", "protocol_version", "dataset"], sort=False):
            keys = [tuple(str(row[c]) for c in KEY_COLUMNS) for _, row in rows_of_group.iterrows()]
            ranked = [available[k] for k in keys if k in available]
            group_plots = plot_group(ranked, out_dir / PLOTS_DIR) if plots and ranked else []
            written_plots += group_plots
            params = ranked[0].protocol if ranked else {}
            sections.append(GroupSection(str(protocol), str(version), str(dataset), rows_of_group.reset_index(drop=True),
                                         params, group_plots))
        if plots:
            _remove_stale_plots(out_dir / PLOTS_DIR, {p.path.resolve() for p in written_plots})
        index = write_index(sections, out_dir / INDEX_HTML) if html else None
    return Board(out_dir=out_dir, csv=out_dir / BOARD_CSV, html=index, frame=frame, plots=written_plots,
                 results=list(available.values()), warnings=warnings)
