"""``leaderboard.csv``: one row per method x protocol (x dataset), and its locked, atomic upsert.

Several ``facebench score`` runs may finish at once and each add its row. :func:`upsert_rows`
serializes them with an exclusive ``fcntl.flock`` on ``BOARD/.leaderboard.lock`` (released by the
kernel even if the process dies), reads the current CSV, replaces or adds rows keyed by
(method, protocol, protocol_version, dataset), and writes the result to a temporary file that
``os.replace`` puts in place: readers always see a complete CSV, and no row is lost.

Rows are sorted by protocol, protocol version and dataset, then by the protocol's main metric
(``shape_mm`` mean, ascending; missing last), then by method.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from facebench.atomic import atomic_path
from facebench.benchmark.method_name import csv_safe, csv_unescape
from facebench.errors import FacebenchError, InputFileError
from facebench.leaderboard.results import METRIC_KEYS, STAT_KEYS, Results, ordered_metric_keys

__all__ = [
    "BOARD_CSV", "LOCK_FILE", "KEY_COLUMNS", "MAIN_METRIC", "board_columns", "summary_row",
    "sort_rows", "read_board", "write_board", "board_lock", "upsert_rows", "merge_rows",
]

BOARD_CSV = "leaderboard.csv"
LOCK_FILE = ".leaderboard.lock"
#: Columns identifying a row: re-scoring the same method on the same protocol and dataset replaces it.
KEY_COLUMNS: tuple[str, ...] = ("method", "protocol", "protocol_version", "dataset")
#: The metric the rows of a protocol are ranked by (lower is better).
MAIN_METRIC = "shape_mm"
_HEAD = ("method", "protocol", "protocol_version", "dataset", "n_expected", "n_scored", "completion")
_TAIL = ("date", "facebench_version", "submission_sha256", "results")
_SHORT_HASH = 12


def board_columns(metric_keys: Iterable[str] = ()) -> list[str]:
    """Column order: identity and counts, ``<metric>_<stat>`` for every metric (the known ones
    always), then date, versions, hash and results folder."""
    metrics = ordered_metric_keys(set(METRIC_KEYS) | set(metric_keys))
    return [*_HEAD, *(f"{m}_{s}" for m in metrics for s in STAT_KEYS), *_TAIL]


def _metric_keys_of_columns(columns: Iterable[str]) -> set[str]:
    suffixes = tuple(f"_{s}" for s in STAT_KEYS)
    fixed = set(_HEAD) | set(_TAIL)
    keys = set()
    for column in columns:
        if column in fixed:
            continue
        for suffix in suffixes:
            if column.endswith(suffix):
                keys.add(column[: -len(suffix)])
    return keys


def summary_row(results: Results, board_dir: str | Path | None = None) -> dict[str, Any]:
    """The leaderboard row of one results folder.

    ``results`` is the results folder's path relative to ``board_dir`` when given (so a published
    board and its results can move together), else as read.
    """
    row: dict[str, Any] = {
        "method": results.method,
        "protocol": results.protocol_name,
        "protocol_version": results.protocol_version,
        "dataset": results.dataset_name,
        "n_expected": results.n_expected,
        "n_scored": results.n_scored,
        "completion": results.completion,
    }
    for key, summary in results.metrics.items():
        for stat in STAT_KEYS:
            row[f"{key}_{stat}"] = getattr(summary, stat)
    folder = Path(results.path)
    if board_dir is not None:
        folder = Path(os.path.relpath(folder.resolve(), Path(board_dir).resolve()))
    row.update(date=results.created, facebench_version=results.facebench_version,
               submission_sha256=results.submission_sha256[:_SHORT_HASH], results=folder.as_posix())
    return row


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by protocol, version and dataset, ranked by ``shape_mm_mean`` (NaN last), then
    by method; the index is reset."""
    if frame.empty:
        return frame.reset_index(drop=True)
    main = f"{MAIN_METRIC}_mean"
    order = frame.assign(_main=pd.to_numeric(frame[main], errors="coerce"))
    order = order.sort_values(["protocol", "protocol_version", "dataset", "_main", "method"],
                              na_position="last", kind="stable")
    return order.drop(columns="_main").reset_index(drop=True)


def _normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """All columns of :func:`board_columns` in order, key columns as str, counts as int."""
    columns = board_columns(_metric_keys_of_columns(frame.columns))
    frame = frame.reindex(columns=columns)
    for column in (*KEY_COLUMNS, "date", "facebench_version", "submission_sha256", "results"):
        frame[column] = [("" if pd.isna(v) else str(v)) for v in frame[column]]
    for column in ("n_expected", "n_scored"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0).astype(int)
    for column in columns:
        if column not in _HEAD and column not in _TAIL or column == "completion":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return sort_rows(frame)


def read_board(path: str | Path) -> pd.DataFrame:
    """Read a ``leaderboard.csv`` (empty frame with the standard columns when it does not exist).

    Raises:
        InputFileError: the file exists but is not a leaderboard CSV.
    """
    path = Path(path)
    if not path.exists():
        return _normalize(pd.DataFrame(columns=board_columns()))
    try:
        frame = pd.read_csv(path, dtype={c: str for c in (*KEY_COLUMNS, "date", "facebench_version",
                                                          "submission_sha256", "results")},
                            keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return _normalize(pd.DataFrame(columns=board_columns()))
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise InputFileError(path, f"not a readable leaderboard CSV ({str(error).strip().splitlines()[0]})") from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise InputFileError(path, f"not a leaderboard CSV: missing column(s) {', '.join(missing)}")
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    frame = frame.assign(**{c: frame[c].map(csv_unescape) for c in text_columns})  # write_board's csv_safe undone
    return _normalize(frame)


def write_board(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write the (normalized, sorted) board atomically; return the path."""
    path = Path(path)
    frame = _normalize(frame)
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    frame = frame.assign(**{c: frame[c].map(csv_safe) for c in text_columns})  # formula cells neutralized
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g", quoting=csv.QUOTE_MINIMAL)
    return path


@contextlib.contextmanager
def board_lock(board_dir: str | Path, timeout_s: float | None = 600.0) -> Iterator[Path]:
    """Hold the exclusive lock of a board folder (``fcntl.flock`` on ``.leaderboard.lock``).

    Not re-entrant: do not nest it for the same folder in one process. The holder removes the lock
    file before releasing it, so no empty ``.leaderboard.lock`` stays behind; a waiter that locked a
    file since removed (or replaced) starts again on the current one. After a ``kill -9`` the kernel
    releases the lock: a leftover file never blocks the next writer.

    Raises:
        FacebenchError: the lock was not obtained within ``timeout_s`` seconds (None waits forever).
    """
    board_dir = Path(board_dir)
    board_dir.mkdir(parents=True, exist_ok=True)
    lock_path = board_dir / LOCK_FILE
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(fd, lock_path, deadline, timeout_s)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                break  # the lock file still in place is the one locked
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed it meanwhile: lock the current file
    try:
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # still holding the lock: nobody else can be using this file
        os.close(fd)  # closing the descriptor releases the lock


def _flock(fd: int, lock_path: Path, deadline: float | None, timeout_s: float | None) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise FacebenchError(f"{lock_path}: still locked by another facebench process "
                                     f"after {timeout_s:g} s") from None
            time.sleep(0.02)


def _as_row(item: Results | Mapping[str, Any], board_dir: Path) -> dict[str, Any]:
    if isinstance(item, Results):
        return summary_row(item, board_dir)
    if isinstance(item, Mapping):
        missing = [c for c in KEY_COLUMNS if c not in item]
        if missing:
            raise ValueError(f"leaderboard row lacks {', '.join(missing)}")
        return {key: value for key, value in item.items()}
    raise TypeError(f"expected Results or a row mapping, got {type(item).__name__}")


def merge_rows(frame: pd.DataFrame, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``frame`` with ``rows`` added; a row with the key of an existing one replaces it (the last
    of duplicated new keys wins)."""
    new = pd.DataFrame(list(rows))
    if new.empty:
        return _normalize(frame)
    new = _normalize(new).drop_duplicates(list(KEY_COLUMNS), keep="last")
    old = _normalize(frame)
    keys = pd.MultiIndex.from_frame(new[list(KEY_COLUMNS)])
    kept = old[~pd.MultiIndex.from_frame(old[list(KEY_COLUMNS)]).isin(keys)] if len(old) else old
    parts = [p for p in (kept, new) if len(p)]
    return _normalize(pd.concat(parts, ignore_index=True) if parts else old)


def _upsert_locked(board_dir: Path, rows: list[dict[str, Any]], replace_all: bool = False) -> pd.DataFrame:
    csv = board_dir / BOARD_CSV
    current = _normalize(pd.DataFrame(columns=board_columns())) if replace_all else read_board(csv)
    board = merge_rows(current, rows)
    write_board(csv, board)
    return board


def upsert_rows(board_dir: str | Path, summaries: Iterable[Results | Mapping[str, Any]], *,
                timeout_s: float | None = 600.0) -> pd.DataFrame:
    """Add or replace rows of ``board_dir/leaderboard.csv`` under the board's exclusive lock.

    Args:
        board_dir: the board folder (created when missing).
        summaries: :class:`Results` (converted by :func:`summary_row`) or row mappings holding at
            least the :data:`KEY_COLUMNS`.
        timeout_s: how long to wait for the lock.

    Returns:
        The whole board after the update, sorted.
    """
    board_dir = Path(board_dir)
    rows = [_as_row(item, board_dir) for item in summaries]
    with board_lock(board_dir, timeout_s):
        return _upsert_locked(board_dir, rows)
