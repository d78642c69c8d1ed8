"""Training throughput of the multi-level model (facebench.baselines.tewari2018.training) per stage.

Renders a small synthetic set once (procedural model, 64 px by default), keeps one batch in memory
and measures, after one warm-up step, at the defaults (batch 5, C = 500 affine, AdaDelta, the
supplement's stage weights):

- ``forward``: the same-run reference, eval-mode regression + decoding of both levels (no
  gradient), images/s;
- ``pretrain``: stage-1 steps (base-level loss, backward, AdaDelta on the base group), images/s;
- ``finetune``: stage-2 steps (both levels and every prior, AdaDelta on all groups), images/s;

and the ratio of each to ``forward``. On the CPU with 1 and 2 torch threads, and on CUDA when
present. ``--loop`` also times :func:`train_multilevel` itself (data reading, logging,
checkpoints; validation off) for a few iterations per stage.

    python perf/bench_multilevel_training.py [--size 64] [--batch 5] [--steps 5] [--threads 1,2]
                                                   [--devices cpu,cuda] [--loop]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, batch: int, steps: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def measure(path: Path, batch: int, steps: int, device: torch.device) -> dict[str, float]:
    """images/s of forward, pretrain and finetune steps on one in-memory batch of ``path``."""
    from facebench.baselines.runs import mean_translation
    from facebench.baselines.tewari2018.data import TrainingImages
    from facebench.baselines.tewari2018.loss import MultiLevelLoss
    from facebench.baselines.tewari2018.model import MultiLevelConfig, MultiLevelModel
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig, _optimizer, _set_frozen, stage_weights
    from facebench.datasets.dataset_file import FaceDataset

    dataset = FaceDataset(path)
    size = int(dataset.attrs["image_size"][0])
    torch.manual_seed(0)
    from facebench.models import load

    net = MultiLevelModel(load("synthetic"), MultiLevelConfig(image_size=size), K=dataset.shared_K,
                          mean_t=mean_translation(dataset)).to(device)
    images, masks, landmarks = TrainingImages(dataset).get(np.arange(batch) % len(dataset), device)
    config = MultiLevelTrainConfig(dataset=path, val=None, out=Path("unused"))
    rates = {}

    def forward():
        with torch.no_grad():
            net.reconstruct(images)

    net.eval()
    rates["forward"] = _rate(forward, batch, steps, device)
    net.train()
    for stage, levels in (("pretrain", ("base",)), ("finetune", ("base", "final"))):
        _set_frozen(net, stage)
        optimizer = _optimizer(net, config, stage)
        loss_fn = MultiLevelLoss(net, stage_weights(stage, {}), levels=levels).to(device)

        def step(loss_fn=loss_fn, optimizer=optimizer):
            loss, _ = loss_fn(net.reconstruct(images), images, landmarks, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        rates[stage] = _rate(step, batch, steps, device)
    return rates


def loop(path: Path, iterations: int, device: str, threads: int) -> dict[str, float]:
    """images/s per stage of train_multilevel itself (``iterations`` per stage, no validation)."""
    from facebench.baselines.tewari2018.training import MultiLevelTrainConfig, train_multilevel

    with tempfile.TemporaryDirectory() as tmp:
        config = MultiLevelTrainConfig(dataset=path, val=None, out=Path(tmp) / "run", pretrain_iters=iterations,
                                       finetune_iters=iterations, device=device, threads=threads, eval_every=0,
                                       checkpoint_every=0, log_every=iterations)
        return train_multilevel(config).images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--loop", action="store_true", help="also time train_multilevel (10 iterations per stage)")
    args = parser.parse_args()
    from facebench.datasets.generator import GeneratorSettings, generate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.h5"
        generate(GeneratorSettings(n=max(args.batch, 10), size=args.size, seed=0), path, batch_size=8)
        runs = []
        for device_name in args.devices.split(","):
            if device_name == "cuda" and not torch.cuda.is_available():
                print("cuda: not available, skipped")
                continue
            threads = [int(t) for t in args.threads.split(",")] if device_name == "cpu" else [torch.get_num_threads()]
            for n in threads:
                torch.set_num_threads(n)
                rates = measure(path, args.batch, args.steps, torch.device(device_name))
                runs.append((device_name, n, rates))
                ratios = ", ".join(f"{k} {rates[k]:.1f} img/s ({rates[k] / rates['forward']:.3f} of forward)"
                                   for k in ("pretrain", "finetune"))
                print(f"{device_name} threads={n} size={args.size} batch={args.batch}: forward "
                      f"{rates['forward']:.1f} img/s; {ratios}", flush=True)
                if args.loop:
                    looped = loop(path, 10, device_name, n)
                    print("  train_multilevel: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in looped.items()),
                          flush=True)


if __name__ == "__main__":
    main()
