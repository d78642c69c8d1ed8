"""Scoring speed: corresponding topology on N samples of the procedural model (default 6,000),
and a scan protocol (``synthetic-scan``: landmark fit, ICP, distances per sample) on the first
``--scan-n`` (default 40), each with 1 and 2 worker processes in the same run.

Builds a dataset without rendering (8x8 placeholder images; the scorer reads only vertices,
poses and landmarks), a noisy-oracle submission, then times `facebench.benchmark.scoring.score`
against a same-run reference: a plain per-sample Python loop computing the same four metrics; the
scan protocol's reference is the same run with one worker (the ratio is the speed-up of
``--workers 2``, process start-up included). Prints the load average before and after each part:
on a shared machine, a second worker only helps where a core is idle.

    python perf/bench_scoring.py [--n 6000] [--workers 1,2] [--scan-n 40] [--scan-rounds 2]   # --n 0: scan only
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from facebench import conventions as cv
from facebench.benchmark.protocols import get_protocol
from facebench.benchmark.scoring import score
from facebench.benchmark.templates import write_template
from facebench.datasets.dataset_file import DatasetWriter, FaceDataset
from facebench.models import load


def build_dataset(path: Path, n: int, chunk: int = 500) -> None:
    model = load("synthetic")
    rng = np.random.default_rng(0)
    K = cv.intrinsics(1000.0, 8)
    with DatasetWriter(path, n=n, height=8, width=8, faces=model.faces, landmark_indices=model.landmark_indices,
                       n_vertices=model.n_vertices, n_coefficients={}, K=K, attrs={"model": "synthetic"}) as w:
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            yaw, pitch = rng.uniform(-90, 90, b), rng.uniform(-30, 30, b)
            q = cv.pose_from_angles(yaw, pitch, np.zeros(b))
            t = np.tile([0.0, 0.0, 600.0], (b, 1))
            vertices = model.shape(rng.standard_normal((b, 40)).astype(np.float32))
            lm = cv.project(vertices[:, model.landmark_indices].astype(np.float64), q, t, K)
            w.write(start, {
                "ids": [f"{i:06d}" for i in range(start, start + b)],
                "images": np.zeros((b, 8, 8, 3), np.uint8), "masks": np.zeros((b, 8, 8), bool),
                "reflectance_images": np.zeros((b, 8, 8, 3), np.uint8), "vertices": vertices,
                "landmarks_2d": lm.astype(np.float32), "q": q, "t": t, "sh": np.zeros((b, 9, 3), np.float32),
                "yaw": yaw, "pitch": pitch, "roll": np.zeros(b), "coefficients": {},
            })


def reference_loop(dataset: Path, submission: Path) -> float:
    """Same metrics, one sample at a time (h5py row reads, numpy per sample)."""
    import h5py

    start = time.perf_counter()
    ds = FaceDataset(dataset)
    with h5py.File(submission, "r") as sub, h5py.File(dataset, "r") as gt:
        for i in range(len(ds)):
            x, xh = gt["vertices"][i].astype(np.float64), sub["vertices"][i].astype(np.float64)
            q, t, qh, th = gt["q"][i], gt["t"][i], sub["q"][i], sub["t"][i]
            np.linalg.norm(x - xh, axis=1).mean()
            np.linalg.norm(t - th) / 10
            cv.rotation_error_deg(q, qh)
            np.linalg.norm(cv.project(x, q, t, ds.shared_K) - cv.project(xh, qh, th, ds.shared_K), axis=1).mean()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=6000, help="samples scored under synthetic (0: skip)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time (score --workers)")
    parser.add_argument("--scan-n", type=int, default=40, help="samples scored under synthetic-scan (0: skip)")
    parser.add_argument("--scan-rounds", type=int, default=2,
                        help="rounds of the scan runs, the worker counts interleaved within each round")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as work:
        if args.n > 0:
            corresponding_benchmark(Path(work), args.n, worker_counts)
        if args.scan_n > 0:
            scan_benchmark(Path(work), args.scan_n, worker_counts, args.scan_rounds)


def corresponding_benchmark(work: Path, n: int, worker_counts: list[int]) -> None:
    """``synthetic`` on ``n`` samples: serial against the reference loop, then each worker count."""
    dataset, submission = work / "d.h5", work / "s.h5"
    t0 = time.perf_counter()
    build_dataset(dataset, n)
    write_template(dataset, "noisy", submission, noise_mm=1.0, pose_noise_deg=2.0)
    print(f"setup: {n} samples x 14,541 vertices in {time.perf_counter() - t0:.1f} s; {_load()}")
    result = score(dataset, submission, get_protocol("synthetic"))
    timings = result.summary["timings_s"]
    reference = reference_loop(dataset, submission)
    print(f"facebench score (synthetic): {timings['total']:.2f} s total "
          f"(validate {timings['validate']:.2f}, evaluate {timings['evaluate']:.2f}, "
          f"summarize {timings['summarize']:.2f}); {n / timings['total']:.0f} samples/s")
    print(f"reference per-sample loop:   {reference:.2f} s; ratio {reference / timings['total']:.1f}x")
    print(f"mean shape error {result.summary['metrics']['shape_mm']['mean']:.4f} mm, "
          f"rotation {result.summary['metrics']['rotation_deg']['mean']:.4f} deg")
    for workers in worker_counts:  # process start-up included
        t0 = time.perf_counter()
        timed = score(dataset, submission, get_protocol("synthetic"), workers=workers)
        elapsed = time.perf_counter() - t0
        print(f"score --workers {workers}: {elapsed:.2f} s total (evaluate {timed.summary['timings_s']['evaluate']:.2f} s); "
              f"{n / elapsed:.0f} samples/s")


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the pool's workers, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def scan_benchmark(work: Path, n: int, worker_counts: list[int], rounds: int) -> None:
    """``synthetic-scan`` on ``n`` samples with each worker count, interleaved over ``rounds``
    (one process = the in-process serial path; others include process start-up); the first
    count is the reference of the speed-up, taken from the medians."""
    dataset, submission = work / "scan.h5", work / "scan_sub.h5"
    build_dataset(dataset, n)
    write_template(dataset, "noisy", submission, noise_mm=1.0, pose_noise_deg=2.0)
    print(f"scan protocol (synthetic-scan), {n} samples x 14,541 vertices, {rounds} rounds; {_load()}")
    walls: dict[int, list[float]] = {w: [] for w in worker_counts}
    for round_ in range(rounds):
        for workers in worker_counts:
            cpu, t0 = _cpu_s(), time.perf_counter()
            result = score(dataset, submission, get_protocol("synthetic-scan"), workers=workers)
            elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu
            walls[workers].append(elapsed)
            print(f"  round {round_ + 1}, --workers {workers}: {elapsed:.2f} s wall, {cpu:.2f} s CPU; "
                  f"{n / elapsed:.2f} samples/s; mean {result.summary['metrics']['shape_mm']['mean']:.4f} mm; {_load()}")
    reference = worker_counts[0]
    base = float(np.median(walls[reference]))
    for workers in worker_counts:
        wall = float(np.median(walls[workers]))
        print(f"score --protocol synthetic-scan --workers {workers}: median {wall:.2f} s; {n / wall:.2f} samples/s; "
              f"{base / wall:.2f}x --workers {reference}")


if __name__ == "__main__":
    main()
