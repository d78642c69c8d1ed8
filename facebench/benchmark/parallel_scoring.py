"""Scoring's units of work (a chunk of samples; one scan sample) and running them in parallel
processes or on a dask cluster, with the same bytes as one process.

Corresponding-topology scoring (:func:`facebench.benchmark.scoring.score`) walks the dataset in
chunks of ``chunk_size`` samples. :func:`evaluate_chunk` computes everything one chunk gives
(per-sample metrics, its sum of per-vertex errors and of ground-truth vertices, the dense
per-vertex rows) and :func:`accumulate` adds it to the totals. Scan protocols align one sample at
a time: :func:`evaluate_scan_sample` gives a :class:`ScanSampleResult` (its metrics, or why it
failed, its landmark-fit warning, its ground-truth-to-surface distances) and :func:`accumulate_scan`
adds it. Serial scoring calls both in sample order. Parallel scoring (``score(..., workers=N)`` or
``dask_address=...``) computes the same units in other processes, a few contiguous shards per
worker, and the calling process adds them **in sample order**: every floating-point sum is the
same sequence of additions as in one process, so the results are the same bytes (tested).

Each shard opens the dataset and the submission itself, read-only (``load_submission(validate=False)``:
the submission was validated once by the caller), so workers need the same paths: on a
cluster, a shared filesystem. Only small results travel back (metrics, error and warning text,
per-vertex distances); no input array and no open3d object crosses a process boundary.

Each worker runs one torch/OpenMP thread (:func:`facebench.threads.apply_threads`; the thread
policy of the README). Local workers ignore SIGINT from their start: on Ctrl-C the calling process
stops them and raises ``KeyboardInterrupt`` (the CLI prints ``interrupted``, exit 130); a worker
that dies (killed by a signal, out of memory) or a dask worker lost repeatedly raises
:class:`ScoringWorkerLost`. Either way :func:`~facebench.benchmark.scoring.score` returns nothing,
so nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from facebench.benchmark import metrics

__all__ = ["ChunkResult", "evaluate_chunk", "accumulate", "parallel_chunks", "chunk_bounds", "shards",
           "ScanSampleResult", "ScanUnreadable", "evaluate_scan_sample", "accumulate_scan", "parallel_scan_samples",
           "ScoringWorkerLost"]


class ScoringWorkerLost(RuntimeError):
    """A scoring worker process ended abruptly (not a fault of the submission: a machine failure)."""


# ---------------------------------------------------------------------------- corresponding topology
@dataclasses.dataclass
class ChunkResult:
    """What one chunk of samples ``[start, stop)`` contributes (rows: relative indices with a prediction)."""

    start: int
    stop: int
    gt_sum: np.ndarray
    rows: np.ndarray
    shape_mm: np.ndarray | None = None
    error_sum: np.ndarray | None = None
    dense: np.ndarray | None = None
    posed_at: np.ndarray | None = None
    pose: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def evaluate_chunk(dataset, chunk: Sequence, start: int, stop: int, keys: Sequence[str], shared_K,
                   dense: bool) -> ChunkResult:
    """The metrics of samples ``[start, stop)`` of ``dataset``; ``chunk`` holds their predictions."""
    present = np.array([s.vertices is not None for s in chunk])
    gt_all = dataset.read("vertices", start, stop).astype(np.float64)
    piece = ChunkResult(start, stop, gt_all.sum(axis=0), np.flatnonzero(present))
    if not present.any():
        return piece
    rows = piece.rows
    gt = gt_all[rows]
    pred = np.stack([chunk[i].vertices for i in rows]).astype(np.float64)
    errors = metrics.per_vertex_error_mm(gt, pred)
    piece.shape_mm = metrics.shape_error_from_per_vertex(errors)
    piece.error_sum = errors.sum(axis=0)
    if dense:
        piece.dense = errors.astype(np.float16)
    if "rotation_deg" in keys:
        posed = np.array([chunk[i].q is not None and chunk[i].t is not None for i in rows])
        if posed.any():
            sel = rows[posed]
            q = dataset.read("q", start, stop)[sel]
            t = dataset.read("t", start, stop)[sel]
            q_hat = np.stack([chunk[i].q for i in sel])
            t_hat = np.stack([chunk[i].t for i in sel])
            K = shared_K if shared_K is not None else dataset.read("K", start, stop)[sel]
            piece.posed_at = sel
            piece.pose = {
                "translation_cm": metrics.translation_error_cm(t, t_hat),
                "rotation_deg": metrics.rotation_error_deg(q, q_hat),
                "reprojection_px": metrics.reprojection_error_px(gt[posed], q, t, pred[posed], q_hat, t_hat, K),
            }
    return piece


def accumulate(piece: ChunkResult, values: dict[str, np.ndarray], sum_per_vertex: np.ndarray, count: np.ndarray,
               sum_gt: np.ndarray, dense: np.ndarray | None) -> None:
    """Add one chunk to the totals (in place); call it in chunk order."""
    sum_gt += piece.gt_sum
    if piece.shape_mm is None:
        return
    index = piece.start + piece.rows
    values["shape_mm"][index] = piece.shape_mm
    sum_per_vertex += piece.error_sum
    count += len(piece.rows)
    if dense is not None:
        dense[index] = piece.dense
    if piece.posed_at is not None:
        at = piece.start + piece.posed_at
        for key, value in piece.pose.items():
            values[key][at] = value


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def shards(bounds: list[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """``bounds`` cut into at most ``parts`` contiguous, nearly equal runs (order kept)."""
    parts = max(1, min(parts, len(bounds)))
    edges = np.linspace(0, len(bounds), parts + 1).round().astype(int)
    return [bounds[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


@contextlib.contextmanager
def _opened(dataset_path: str, submission_path: str):
    """The dataset and the (already validated) submission opened read-only in this worker, with
    the thread policy applied; a facebench error is re-raised as a plain :class:`FacebenchError`
    with the same message (subclasses with their own ``__init__`` do not survive pickling)."""
    from facebench.benchmark.submission import load_submission
    from facebench.datasets.dataset_file import FaceDataset
    from facebench.errors import FacebenchError
    from facebench.threads import apply_threads

    apply_threads(1)  # a dask worker runs no initializer of ours
    try:
        dataset = FaceDataset(dataset_path)
        with load_submission(submission_path, dataset, validate=False) as submission:
            yield dataset, submission
    except FacebenchError as error:
        if type(error) is FacebenchError:
            raise
        raise FacebenchError(str(error)) from None


def score_shard(dataset_path: str, submission_path: str, keys: Sequence[str], bounds: list[tuple[int, int]],
                dense: bool) -> list[ChunkResult]:
    """Evaluate a run of chunks in this process (the task sent to a worker)."""
    with _opened(dataset_path, submission_path) as (dataset, submission):
        ids = dataset.ids
        return [evaluate_chunk(dataset, [submission.get(i) for i in ids[start:stop]], start, stop, keys,
                               dataset.shared_K, dense) for start, stop in bounds]


def parallel_chunks(dataset_path: str | Path, submission_path: str | Path, n: int, keys: Sequence[str],
                    chunk_size: int, dense: bool, *, workers: int = 1, dask_address: str | None = None,
                    tasks_per_worker: int = 2) -> Iterator[ChunkResult]:
    """Every chunk's :class:`ChunkResult`, in chunk order, computed by ``workers`` local processes
    or by the workers of the dask.distributed scheduler at ``dask_address``."""
    args = (str(Path(dataset_path).resolve()), str(Path(submission_path).resolve()), list(keys))

    def tasks(parts: int) -> list[tuple]:
        return [(*args, part, dense) for part in shards(chunk_bounds(n, chunk_size), parts)]

    for pieces in _run_tasks(score_shard, tasks, workers, dask_address, tasks_per_worker):
        yield from pieces


# ---------------------------------------------------------------------------- scan protocols
class ScanUnreadable(Exception):
    """A sample's ground-truth scan is missing or unreadable in the dataset file: that sample fails."""


@dataclasses.dataclass
class ScanSampleResult:
    """What sample ``index`` of a scan protocol contributes.

    Attributes:
        index: the sample's position in the dataset.
        aligned: a prediction was aligned and measured (False: missing prediction, or ``error``).
        error: why the sample could not be aligned ("" otherwise).
        warning: the landmark fit's warning (a reflection, an implausible residual), or "".
        mean_mm, median_mm, rmse_mm: ground-truth mm (NaN unless aligned).
        gt_indices: ``(K,)`` int32 kept ground-truth (scan) vertex indices, or None.
        distances: ``(K,)`` float32 mm from each to the predicted surface, or None.
        distances_f64: the same in float64, only where the dataset's samples share one topology
            (their sum per vertex gives the mean per-vertex error); else None.
    """

    index: int
    aligned: bool = False
    error: str = ""
    warning: str = ""
    mean_mm: float = math.nan
    median_mm: float = math.nan
    rmse_mm: float = math.nan
    gt_indices: np.ndarray | None = None
    distances: np.ndarray | None = None
    distances_f64: np.ndarray | None = None


def evaluate_scan_sample(dataset, sample, index: int, params) -> ScanSampleResult:
    """Align one prediction (``sample``: a :class:`~facebench.benchmark.submission.SubmissionSample`)
    onto sample ``index``'s ground truth (``dataset.scan(index)``, ``dataset.scan_landmarks(index)``)
    under ``params`` (:class:`~facebench.benchmark.align.ScanAlignmentParams`) and measure it. An
    :class:`~facebench.benchmark.similarity.AlignmentError` or an unreadable scan fails this sample
    only (``error``); any other exception is a bug and propagates."""
    from facebench.benchmark import align
    from facebench.benchmark.similarity import AlignmentError

    piece = ScanSampleResult(index)
    if sample.vertices is None:
        return piece
    try:
        try:
            gt, gt_faces = dataset.scan(index)
            gt_landmarks = dataset.scan_landmarks(index)
        except (KeyError, OSError) as error:  # a scan group missing or unreadable in the file
            raise ScanUnreadable(f"ground-truth scan unreadable ({type(error).__name__}: {error})") from None
        if sample.landmarks is None:
            raise AlignmentError("the submission gives no landmarks for this prediction")
        result = align.align_and_measure(sample.vertices, sample.faces, sample.landmarks, gt, gt_faces,
                                         gt_landmarks, params)
    except (AlignmentError, ScanUnreadable) as error:  # only these: a bug is an internal error, exit 1
        piece.error = str(error)
        return piece
    piece.aligned = True
    piece.warning = result.warning or ""
    piece.mean_mm, piece.median_mm, piece.rmse_mm = result.mean_mm, result.median_mm, result.rmse_mm
    if result.gt_distances is not None:
        piece.gt_indices = np.asarray(result.gt_indices).astype(np.int32)
        piece.distances = np.asarray(result.gt_distances).astype(np.float32)
        if not dataset.is_scan_dataset:
            piece.distances_f64 = np.asarray(result.gt_distances, np.float64)
    return piece


def accumulate_scan(piece: ScanSampleResult, values: dict[str, np.ndarray], errors: dict[int, str],
                    warnings: dict[int, str] | None, sum_per_vertex: np.ndarray | None, count: np.ndarray | None,
                    vertex_indices: list, distances: list) -> int:
    """Add one sample to the totals (in place; call it in sample order); returns how many
    ground-truth vertices it contributes to the ragged per-vertex arrays. ``sum_per_vertex`` and
    ``count``: None for scan datasets (no shared topology)."""
    i = piece.index
    if piece.error:
        errors[i] = piece.error
    if not piece.aligned:
        return 0
    if piece.warning and warnings is not None:
        warnings[i] = piece.warning
    values["shape_mm"][i] = piece.mean_mm
    values["median_mm"][i] = piece.median_mm
    values["rmse_mm"][i] = piece.rmse_mm
    if piece.distances is None:
        return 0
    if sum_per_vertex is not None:
        sum_per_vertex[piece.gt_indices] += piece.distances_f64
        count[piece.gt_indices] += 1
    vertex_indices.append(piece.gt_indices)
    distances.append(piece.distances)
    return len(piece.gt_indices)


def score_scan_shard(dataset_path: str, submission_path: str, params, start: int, stop: int) -> list[ScanSampleResult]:
    """Align and measure samples ``[start, stop)`` in this process (the task sent to a worker)."""
    with _opened(dataset_path, submission_path) as (dataset, submission):
        ids = dataset.ids
        return [evaluate_scan_sample(dataset, submission.get(ids[i]), i, params) for i in range(start, stop)]


def parallel_scan_samples(dataset_path: str | Path, submission_path: str | Path, n: int, params, *,
                          workers: int = 1, dask_address: str | None = None,
                          tasks_per_worker: int = 4) -> Iterator[ScanSampleResult]:
    """Every sample's :class:`ScanSampleResult`, in sample order, computed by ``workers`` local
    processes or by the workers of the dask.distributed scheduler at ``dask_address``
    (``params``: :class:`~facebench.benchmark.align.ScanAlignmentParams`; more, smaller shards
    than for chunks, since one scan can take far longer than another)."""
    args = (str(Path(dataset_path).resolve()), str(Path(submission_path).resolve()), params)

    def tasks(parts: int) -> list[tuple]:
        return [(*args, part[0][0], part[-1][1]) for part in shards(chunk_bounds(n, 1), parts)]

    for pieces in _run_tasks(score_scan_shard, tasks, workers, dask_address, tasks_per_worker):
        yield from pieces


# ---------------------------------------------------------------------------- running the shards
def _run_tasks(function: Callable, tasks: Callable[[int], list[tuple]], workers: int, dask_address: str | None,
               tasks_per_worker: int) -> Iterator:
    """``function(*task)`` of every task of ``tasks(parts)``, in task order, ``parts`` being
    ``tasks_per_worker`` times the number of workers."""
    if dask_address:
        yield from _on_dask(function, tasks, dask_address, tasks_per_worker)
    else:
        yield from _on_processes(function, tasks(workers * tasks_per_worker), workers)


def _init_worker() -> None:
    import signal

    from facebench.threads import apply_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle: no worker tracebacks
    apply_threads(1)  # one torch/OpenMP (open3d) thread per worker: parallelism comes from the processes


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while worker processes start (the disposition is inherited through spawn's
    exec, so a Ctrl-C during their start-up prints no traceback); the main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _lost(detail: str) -> ScoringWorkerLost:
    return ScoringWorkerLost(f"a scoring worker {detail} (killed by a signal, or out of memory?); nothing was "
                             "scored or written: rerun (fewer --workers need less memory)")


def _on_processes(function: Callable, tasks: list[tuple], workers: int) -> Iterator:
    import concurrent.futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch/OpenMP threads
    pool = concurrent.futures.ProcessPoolExecutor(max(1, min(workers, len(tasks))), mp_context=context,
                                                  initializer=_init_worker)
    finished = False
    try:
        with _sigint_ignored():  # processes start as tasks are submitted
            futures = [pool.submit(function, *task) for task in tasks]
        for future in futures:
            yield future.result()
        finished = True
    except BrokenProcessPool as error:
        if error.__cause__ is not None:  # a live worker's answer could not be read back here: a bug
            lines = [line for line in str(error.__cause__).splitlines() if line.strip(" '")]
            raise RuntimeError(f"a scoring worker's answer could not be read back ({lines[-1] if lines else error})"
                               ) from None
        raise _lost("process ended abruptly") from None
    finally:
        if not finished:  # Ctrl-C, a worker's error, a lost worker, the caller stopped early
            _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool) -> None:
    """Terminate a process pool's workers now (they ignore SIGINT) and wait for them."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def _on_dask(function: Callable, tasks: Callable[[int], list[tuple]], address: str, tasks_per_worker: int) -> Iterator:
    try:
        from distributed import Client, KilledWorker
    except ImportError:  # pragma: no cover
        from facebench.errors import FacebenchError

        raise FacebenchError("--dask needs dask.distributed: pip install 'facebench[cluster]'") from None
    with Client(address, set_as_default=False) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        futures = [client.submit(function, *task, pure=False) for task in tasks(n_workers * tasks_per_worker)]
        try:
            for future in futures:
                yield future.result()
        except KilledWorker as error:
            raise _lost(f"of the dask cluster died repeatedly on task {getattr(error, 'task', '?')}") from None
        finally:
            client.cancel(futures)
