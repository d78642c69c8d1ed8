"""The thread policy of every heavy command: how many torch threads and worker processes.

torch's own default (one intra-op thread per core, OpenMP threads that busy-wait at every
parallel region) is fast on an idle machine and collapses as soon as other work shares the
cores: every parallel region waits for its slowest thread, and a thread that loses its core for
a scheduler time slice stalls all of them. On 2 cores with other jobs running, 2 threads were
measured 6x slower than 1 (README, "Speed on a busy machine"). facebench therefore:

- runs **one torch thread per process** by default (``--threads`` 1, or the environment variable
  ``FACEBENCH_THREADS``), which never collapses under load and gives the same bits whatever
  the load (the number of threads changes the summation order of some torch kernels);
- gets parallelism from **worker processes** instead (``synth generate --workers``, DataLoader
  workers of ``train`` and ``predict``), each with one thread: processes do not wait for each
  other at every tensor operation, so a shared core slows one of them, not all;
- ``--threads auto`` measures the idle cores over a short window (``/proc/stat``) and uses that
  many threads (at least 1): faster on an idle machine, but results may then differ in the last
  bits from one run to the next, and load that starts later is not seen;
- ``--threads N`` is taken as given.

:func:`apply_threads` sets torch's intra-op and inter-op threads and ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` (inherited by spawned worker processes); :func:`auto_workers` chooses a
worker count for a known amount of work. Everything here is CPU-only policy: on CUDA the
settings only affect the host-side work.
"""

from __future__ import annotations

import math
import os
import sys
import time

from facebench.errors import FacebenchError

__all__ = ["DEFAULT_THREADS", "ENV_VARIABLE", "usable_cores", "idle_cores", "resolve_threads", "apply_threads",
           "auto_workers", "loader_workers"]

#: The default number of torch threads per process (see the module docstring).
DEFAULT_THREADS = 1
#: Environment variable that replaces the default (a number or ``auto``).
ENV_VARIABLE = "FACEBENCH_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_ticks() -> tuple[int, int] | None:
    """``(idle, total)`` jiffies of all CPUs from ``/proc/stat``; None where it is unreadable."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]
    return values[3] + values[4], sum(values)  # idle + iowait, all but guest (counted in user)


def idle_cores(window_s: float = 0.25) -> float:
    """Cores left idle by every process over the next ``window_s`` seconds (``/proc/stat``);
    where that is unreadable, ``cores - 1-minute load average``. Call it before starting work."""
    cores = os.cpu_count() or 1
    before = _cpu_ticks()
    if before is None:
        try:
            return max(0.0, usable_cores() - os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    time.sleep(window_s)
    after = _cpu_ticks()
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    return min(usable_cores(), cores * (after[0] - before[0]) / total)


def resolve_threads(threads: int | str | None = None) -> int:
    """The number of torch threads for ``threads``: a positive number as given, ``"auto"``
    measured (:func:`idle_cores`, rounded, at least 1), None the default (``FACEBENCH_THREADS``
    or :data:`DEFAULT_THREADS`)."""
    if threads is None or (isinstance(threads, str) and threads.strip() == ""):
        threads = os.environ.get(ENV_VARIABLE, "").strip() or DEFAULT_THREADS
    if isinstance(threads, str):
        text = threads.strip().lower()
        if text == "auto":
            return max(1, min(usable_cores(), math.floor(idle_cores() + 0.25)))
        try:
            threads = int(text)
        except ValueError:
            raise FacebenchError(f"--threads expects a positive number or 'auto', got {threads!r}") from None
    if int(threads) < 1:
        raise FacebenchError(f"--threads must be >= 1 or 'auto', got {threads}")
    return int(threads)


def apply_threads(threads: int) -> int:
    """Use ``threads`` torch intra-op threads in this process (and as many inter-op threads
    when torch still allows it), and export ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for spawned
    worker processes. Returns ``threads``.

    torch is not imported for this (1–2 s, more than scoring a few scans): when it is not loaded
    yet, the exported variables give it ``threads`` intra-op threads when something imports it
    (torch reads ``OMP_NUM_THREADS`` at import); its inter-op pool then keeps its default size,
    which only graph-mode parallelism uses."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" not in sys.modules:
        return threads
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first inter-op parallel work
        pass
    return threads


def auto_workers(items: int, items_per_worker: int, threads: int = 1) -> int:
    """Worker processes for ``items`` units of work: one per usable core not taken by the
    ``threads`` of each worker, but no more than one per ``items_per_worker`` units (a worker's
    start-up, about 2-3 s for a process that imports torch, must be paid back)."""
    by_cores = max(1, usable_cores() // max(1, threads))
    by_work = max(1, items // max(1, items_per_worker))
    return max(1, min(by_cores, by_work))


def loader_workers(requested: int | None = None, batches: int | None = None) -> int:
    """DataLoader workers: ``requested`` when given (0 = load in the training process), else 0
    on machines of up to 2 usable cores (measured, perf/bench_loader.py: with batched reads,
    loading is a few percent of a training step, and a worker process competes for the same
    cores and adds the transfer of every batch: 0.90 of the steps-alone rate without a worker,
    0.69 with one), and one per 4 usable cores (at most 4) on larger machines; with the number
    of ``batches`` of an epoch, at most one per 4 batches. Each worker runs one torch thread
    (torch's DataLoader sets it)."""
    if requested is not None:
        if requested < 0:
            raise FacebenchError(f"--workers must be >= 0, got {requested}")
        return requested
    cores = usable_cores()
    workers = 0 if cores <= 2 else min(4, cores // 4)
    if batches is not None:
        workers = min(workers, batches // 4)
    return max(0, workers)
