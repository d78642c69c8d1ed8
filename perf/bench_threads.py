"""The thread policy (facebench/threads.py) at idle and under a synthetic load started in the same run.

For each workload it prints images/s with 1 torch thread, 2 torch threads and facebench's default
(the policy of the commands: one thread per process, worker processes for ``synth generate``),
first with no load of its own ("idle": whatever else runs on the machine, shown by the load
average), then while one busy process per usable core spins ("loaded"); and the default's ratio
to the best setting of the same phase (the goal: >= 0.90 in both).

Workloads:
- ``render``: rasterize + interpolate of perf/bench_render.py's 60k-triangle mesh, 224 px, batch 16;
- ``generate``: ``facebench.datasets.generator.generate`` of ``--n`` 224-px samples (procedural
  model), 1 process with 1 or 2 threads, 2 worker processes, and the default of
  ``facebench synth generate`` (``auto_workers``: worker start-up included);
- ``train``: training steps (forward, GAL loss, backward, Adam) of the regressor, small encoder,
  64 px, batch 32, on a batch held in memory.

    python perf/bench_threads.py [--n 240] [--seconds 4] [--rounds 3] [--only render,generate,train]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render import FOCAL, SIZE, camera_vertices, head_grid  # noqa: E402

from facebench import conventions as cv  # noqa: E402
from facebench.threads import DEFAULT_THREADS, auto_workers, usable_cores  # noqa: E402


def _spin() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


def start_load(count: int) -> list:
    """``count`` busy processes (pure Python loops), one per core."""
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_spin, daemon=True) for _ in range(count)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    return procs


def stop_load(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.join()


def timed(fn, images: int, seconds: float) -> float:
    """Median images/s over calls of ``fn`` for about ``seconds`` (after one warm-up call)."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def render_workload():
    from facebench.render import interpolate, rasterize

    vertices, faces_np = head_grid()
    cam = camera_vertices(vertices, 16)
    faces = torch.tensor(faces_np)
    K = cv.intrinsics(FOCAL, SIZE)

    def run():
        interpolate(rasterize(cam, faces, K, SIZE, SIZE), cam)

    return run, 16


def train_workload():
    from facebench.baselines.ramon2019 import losses
    from facebench.baselines.ramon2019.regressor import Regressor
    from facebench.models import load

    model = load("synthetic")
    torch.manual_seed(0)
    regressor = Regressor(model, encoder="small", image_size=64)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=1e-4)
    loss_fn = losses.make_loss("gal")
    b = 32
    images = torch.rand(b, 3, 64, 64)
    x = torch.as_tensor(np.broadcast_to(model.mean, (b, *model.mean.shape)).copy(), dtype=torch.float32)
    q = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(b, 1)
    t = torch.tensor([[0.0, 0.0, 600.0]]).repeat(b, 1)
    K = torch.as_tensor(cv.intrinsics(150.0, 64), dtype=torch.float32).expand(b, 3, 3)

    def run():
        out = regressor(images)
        loss = loss_fn(out["vertices"], out["q"], out["t"], x, q, t, K).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run, b


def generate_rate(n: int, workers: int, threads: int, folder: Path) -> float:
    from facebench.datasets.generator import GeneratorSettings, generate

    torch.set_num_threads(threads)
    out = folder / f"g_{workers}_{threads}_{time.monotonic_ns()}.h5"
    summary = generate(GeneratorSettings(n=n, size=224, seed=0), out, workers=workers, batch_size=8)
    out.unlink()
    return summary.images_per_second


def phase(name: str, args, workloads) -> dict:
    load = os.getloadavg()[0]
    print(f"-- {name} (load average before: {load:.2f})", flush=True)
    table = {}
    for label, make in workloads.items():
        if label == "generate":
            with tempfile.TemporaryDirectory() as tmp:
                default_workers = auto_workers(args.n, args.rows_per_worker, DEFAULT_THREADS)
                settings = {"1 thread": (1, 1), "2 threads": (1, 2), "2 workers x 1 thread": (2, 1),
                            f"default ({default_workers} worker(s) x {DEFAULT_THREADS})": (default_workers,
                                                                                          DEFAULT_THREADS)}
                rates = {k: generate_rate(args.n, w, t, Path(tmp)) for k, (w, t) in settings.items()}
        else:
            fn, images = make()
            samples: dict[str, list[float]] = {}
            for _ in range(args.rounds):  # interleaved, so that every setting sees the same load
                for key, threads in (("1 thread", 1), ("2 threads", 2),
                                     (f"default ({DEFAULT_THREADS})", DEFAULT_THREADS)):
                    torch.set_num_threads(threads)
                    samples.setdefault(key, []).append(timed(fn, images, args.seconds / args.rounds))
            rates = {k: statistics.median(v) for k, v in samples.items()}
        best = max(rates.values())
        default = rates[next(k for k in rates if k.startswith("default"))]
        cells = ", ".join(f"{k}: {v:.1f}" for k, v in rates.items())
        print(f"{label:<9} images/s  {cells};  default / best = {default / best:.2f}", flush=True)
        table[label] = rates
    print(f"   load average after: {os.getloadavg()[0]:.2f}", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240, help="samples per generate run")
    parser.add_argument("--rows-per-worker", type=int, default=None,
                        help="auto_workers threshold (default: facebench synth generate's)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per setting and workload, split over rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="render,generate,train")
    args = parser.parse_args()
    if args.rows_per_worker is None:
        from facebench.commands.synth import GENERATE_ROWS_PER_WORKER

        args.rows_per_worker = GENERATE_ROWS_PER_WORKER
    makers = {"render": render_workload, "generate": None, "train": train_workload}
    workloads = {k: makers[k] for k in args.only.split(",")}
    cores = usable_cores()
    print(f"torch {torch.__version__}, {cores} usable cores, default threads {DEFAULT_THREADS}")
    phase("idle: no load started by this script", args, workloads)
    procs = start_load(cores)
    try:
        phase(f"loaded: {cores} busy processes started by this script", args, workloads)
    finally:
        stop_load(procs)


if __name__ == "__main__":
    main()
