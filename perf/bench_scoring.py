"""Corresponding-topology scoring speed: N samples of the procedural model (default 6,000).

Builds a dataset without rendering (8x8 placeholder images; the scorer reads only vertices and
poses), a noisy-oracle submission, then times `facebench.benchmark.scoring.score` against a
same-run reference: a plain per-sample Python loop computing the same four metrics.

    python perf/bench_scoring.py [--n 6000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time (score --workers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dataset, submission = Path(work) / "d.h5", Path(work) / "s.h5"
        t0 = time.perf_counter()
        build_dataset(dataset, args.n)
        write_template(dataset, "noisy", submission, noise_mm=1.0, pose_noise_deg=2.0)
        print(f"setup: {args.n} samples x 14,541 vertices in {time.perf_counter() - t0:.1f} s")
        result = score(dataset, submission, get_protocol("synthetic"))
        timings = result.summary["timings_s"]
        reference = reference_loop(dataset, submission)
        print(f"facebench score (synthetic): {timings['total']:.2f} s total "
              f"(validate {timings['validate']:.2f}, evaluate {timings['evaluate']:.2f}, "
              f"summarize {timings['summarize']:.2f}); {args.n / timings['total']:.0f} samples/s")
        print(f"reference per-sample loop:   {reference:.2f} s; ratio {reference / timings['total']:.1f}x")
        print(f"mean shape error {result.summary['metrics']['shape_mm']['mean']:.4f} mm, "
              f"rotation {result.summary['metrics']['rotation_deg']['mean']:.4f} deg")
        for workers in (int(w) for w in args.workers.split(",")):  # process start-up included
            t0 = time.perf_counter()
            timed = score(dataset, submission, get_protocol("synthetic"), workers=workers)
            elapsed = time.perf_counter() - t0
            print(f"score --workers {workers}: {elapsed:.2f} s total (evaluate {timed.summary['timings_s']['evaluate']:.2f} s); "
                  f"{args.n / elapsed:.0f} samples/s")


if __name__ == "__main__":
    main()
