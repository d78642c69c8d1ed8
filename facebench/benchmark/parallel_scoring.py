"""Scoring's unit of work, one chunk of samples, and running the chunks in parallel processes or on a dask cluster.

Corresponding-topology scoring (:func:`facebench.benchmark.scoring.score`) walks the dataset in
chunks of ``chunk_size`` samples. :func:`evaluate_chunk` computes everything one chunk gives
(per-sample metrics, its sum of per-vertex errors and of ground-truth vertices, the dense
per-vertex rows) and :func:`accumulate` adds it to the totals. Serial scoring calls both in chunk
order. Parallel scoring (``score(..., workers=N)`` or ``dask_address=...``) computes the chunks
in other processes, a few contiguous shards of chunks per worker, and the calling process adds
them **in chunk order**: every floating-point sum is the same sequence of additions as in one
process, so the results are the same bytes (tested).

Each shard opens the dataset and the submission itself (``load_submission(validate=False)``:
the submission was validated once by the caller), so workers need the same paths: on a
cluster, a shared filesystem. Scan protocols (one alignment per sample) are not parallel yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from facebench.benchmark import metrics

__all__ = ["ChunkResult", "evaluate_chunk", "accumulate", "parallel_chunks", "chunk_bounds", "shards"]


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


def score_shard(dataset_path: str, submission_path: str, keys: Sequence[str], bounds: list[tuple[int, int]],
                dense: bool) -> list[ChunkResult]:
    """Evaluate a run of chunks in this process (the task sent to a worker)."""
    from facebench.benchmark.submission import load_submission
    from facebench.datasets.dataset_file import FaceDataset

    dataset = FaceDataset(dataset_path)
    ids = dataset.ids
    with load_submission(submission_path, dataset, validate=False) as submission:
        return [evaluate_chunk(dataset, [submission.get(i) for i in ids[start:stop]], start, stop, keys,
                               dataset.shared_K, dense) for start, stop in bounds]


def _init_worker() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def parallel_chunks(dataset_path: str | Path, submission_path: str | Path, n: int, keys: Sequence[str],
                    chunk_size: int, dense: bool, *, workers: int = 1, dask_address: str | None = None,
                    tasks_per_worker: int = 2) -> Iterator[ChunkResult]:
    """Every chunk's :class:`ChunkResult`, in chunk order, computed by ``workers`` local processes
    or by the workers of the dask.distributed scheduler at ``dask_address``."""
    bounds = chunk_bounds(n, chunk_size)
    args = (str(Path(dataset_path).resolve()), str(Path(submission_path).resolve()), list(keys))
    if dask_address:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover
            from facebench.errors import FacebenchError

            raise FacebenchError("--dask needs dask.distributed: pip install 'facebench[cluster]'") from None
        with Client(dask_address, set_as_default=False) as client:
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            futures = [client.submit(score_shard, *args, part, dense, pure=False)
                       for part in shards(bounds, n_workers * tasks_per_worker)]
            for future in futures:
                yield from future.result()
        return
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch/OpenMP threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(score_shard, *args, part, dense) for part in shards(bounds, workers * tasks_per_worker)]
        for future in futures:
            yield from future.result()
