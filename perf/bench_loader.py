"""Does data loading keep the regressor busy? ``train()`` images/s against training steps alone.

Renders ``--n`` synthetic images of ``--size`` px once (procedural model), then measures, with
``--threads`` torch threads in this process, in interleaved rounds (same load for every line):

- ``steps alone``: forward + GAL loss + backward + Adam step of the regressor (small encoder) on
  one batch held in memory, images/s (the upper bound of training);
- ``train(), N workers``: one epoch of :func:`facebench.baselines.ramon2019.training.train`
  (no validation set) reading the file through the DataLoader with N worker processes: 0 (the
  training process loads) and the policy's default (``facebench.threads.loader_workers``),
  images/s as logged in ``log.csv`` (worker start-up included);

and the ratio of each ``train()`` line to ``steps alone`` (the goal: >= 0.90 for the default).

    python perf/bench_loader.py [--n 512] [--size 64] [--batch 32] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import load_batch, render_set, time_training_step  # noqa: E402

from facebench.threads import loader_workers  # noqa: E402


def train_epoch_rate(path: Path, batch: int, workers: int, folder: Path) -> float:
    from facebench.baselines.ramon2019.training import TrainConfig, train

    out = folder / f"run_{workers}_{time.monotonic_ns()}"
    result = train(TrainConfig(dataset=path, val=None, out=out, loss="gal", encoder="small", epochs=1, batch=batch,
                               device="cpu", workers=workers))
    return result.history[0]["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from facebench.baselines.ramon2019.regressor import Regressor
    from facebench.models import load

    default_workers = loader_workers(None, args.n // args.batch)
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.n} images of {args.size} px, batch "
          f"{args.batch}; policy's loader workers: {default_workers}; load average {os.getloadavg()[0]:.2f}")
    lines: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = render_set(args.size, args.n, folder)
        model = load("synthetic")
        torch.manual_seed(0)
        regressor = Regressor(model, encoder="small", image_size=args.size)
        batch = load_batch(path, args.batch, torch.device("cpu"))
        for _ in range(args.rounds):
            seconds = time_training_step(regressor, batch, "gal", 5)
            lines.setdefault("steps alone (batch in memory)", []).append(args.batch / seconds)
            for workers in sorted({0, default_workers}):
                label = f"train(), {workers} loader worker(s)" + (" (default)" if workers == default_workers else "")
                lines.setdefault(label, []).append(train_epoch_rate(path, args.batch, workers, folder))
    steps = statistics.median(lines["steps alone (batch in memory)"])
    for label, values in lines.items():
        rate = statistics.median(values)
        print(f"{label:<40} {rate:7.1f} images/s   ratio to steps alone {rate / steps:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
