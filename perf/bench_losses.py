"""Forward + backward time of the five losses of Ramon et al. 2019 (facebench.baselines.ramon2019.losses).

A batch of B samples of N points (the procedural model's 14,541 vertices by default), float32,
~600 mm from a 1000 px camera, a prediction a few mm / degrees off; each loss is evaluated and
back-propagated to x̂, q̂, t̂ (``loss.mean().backward()``). MRL samples its V views with a seeded
generator on every call, as in training. Prints the median milliseconds per call over the repeats
on the CPU (``--threads`` torch threads) and on CUDA when available.

    python perf/bench_losses.py [--batch 32] [--points 14541] [--views 2] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from facebench import conventions as cv
from facebench.baselines.ramon2019 import losses as L

PARAMS = {"coarse": {"alpha": 1.0}, "xqt": {"beta": 1.0, "gamma": 1.0}, "gal": {}, "srl": {}, "mrl": {}}


def make_batch(B: int, N: int, device: str, seed: int = 0):
    """Ground truth and a nearby prediction, float32 on ``device``: x (B, N, 3) mm, q, t, K."""
    g = torch.Generator().manual_seed(seed)
    x = 80 * (torch.rand(B, N, 3, generator=g) * 2 - 1)
    angles = [a * (torch.rand(B, generator=g, dtype=torch.float64) * 2 - 1) for a in (60.0, 20.0, 10.0)]
    q = cv.pose_from_angles(*angles).float()
    t = torch.tensor([0.0, 0.0, 600.0]).expand(B, 3) + 10 * torch.randn(B, 3, generator=g)
    x_hat = x + 2 * torch.randn(B, N, 3, generator=g)
    q_hat = torch.nn.functional.normalize(q + 0.02 * torch.randn(B, 4, generator=g), dim=-1)
    t_hat = t + 5 * torch.randn(B, 3, generator=g)
    K = torch.tensor(cv.intrinsics(1000.0, 224), dtype=torch.float32)
    return [a.to(device) for a in (x_hat, q_hat, t_hat, x, q, t, K)]


def time_loss(name: str, batch, repeats: int, n_views: int, sync) -> float:
    """Median seconds of one forward + backward of loss ``name`` (after one warm-up call)."""
    x_hat, q_hat, t_hat, x, q, t, K = batch
    params = dict(PARAMS[name])
    generator = torch.Generator(device=x.device).manual_seed(0) if name == "mrl" else None
    if name == "mrl":
        params.update(n_views=n_views, generator=generator)
    times = []
    for i in range(repeats + 1):
        inputs = [a.detach().clone().requires_grad_(True) for a in (x_hat, q_hat, t_hat)]
        sync()
        start = time.perf_counter()
        L.get_loss(name)(*inputs, x, q, t, K, **params).mean().backward()
        sync()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=14541)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"B={args.batch} N={args.points} float32, MRL V={args.views}, median of {args.repeats}, "
          f"torch {torch.__version__}, CPU threads {args.threads}")
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        batch = make_batch(args.batch, args.points, device)
        for name in L.LOSSES:
            seconds = time_loss(name, batch, args.repeats, args.views, sync)
            print(f"{device:5s} {name:7s} forward+backward {1000 * seconds:8.2f} ms")


if __name__ == "__main__":
    main()
