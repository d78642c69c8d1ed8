"""Training throughput of the regressor (facebench.baselines.ramon2019.regressor / training) per encoder and loss.

For each (encoder, image size) it renders a small synthetic set once (procedural model), keeps one
batch of B images in memory and measures, after one warm-up step:

- ``forward``: the same-run reference, eval-mode forward only (no gradient), images/s;
- for each of the five losses: full training steps (forward, loss, backward, Adam step), images/s,
  and the time per epoch extrapolated to the paper's 20,349 training images (Ramon et al. report
  6.8-14.9 min per epoch on an RTX 2080 Ti);
- ``train()``: one epoch of :func:`facebench.baselines.ramon2019.training.train` (GAL) on the rendered set,
  i.e. with data loading, validation excluded, images/s (``--no-epoch`` skips it).

On the CPU with ``--threads`` torch threads, and on CUDA when present.

    python perf/bench_training.py [--configs small:64,vgg16:64,vgg16:224] [--batch 16] [--steps 3]
                                        [--threads 2] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from facebench.baselines.encoders import count_parameters
from facebench.baselines.ramon2019 import losses
from facebench.baselines.ramon2019.regressor import Regressor

#: The paper's training-set size (images per epoch).
PAPER_EPOCH = 20349
LOSS_NAMES = ("coarse", "xqt", "gal", "srl", "mrl")
#: Weights of the multiterm losses (their values do not change the cost).
PARAMS = {"coarse": {"alpha": 1.0}, "xqt": {"beta": 1.0, "gamma": 1.0}, "gal": {}, "srl": {}, "mrl": {"n_views": 2}}


def render_set(size: int, n: int, folder: Path) -> Path:
    """A synthetic training set of ``n`` images of ``size`` px (seed 0)."""
    from facebench.datasets.generator import GeneratorSettings, generate

    path = folder / f"train_{size}.h5"
    generate(GeneratorSettings(n=n, size=size, seed=0), path, batch_size=8)
    return path


def load_batch(path: Path, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The first ``batch`` items of a dataset, collated on ``device`` (repeated if the set is smaller)."""
    from torch.utils.data import default_collate

    from facebench.datasets.dataset_file import TorchFaceDataset

    data = TorchFaceDataset(path)
    items = default_collate([data[i % len(data)] for i in range(batch)])
    return {k: items[k].to(device) for k in ("image", "vertices", "q", "t", "K")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(regressor: Regressor, batch: dict, steps: int) -> float:
    """Median seconds of one eval-mode forward of the batch (after two warm-ups)."""
    regressor.eval()
    device = batch["image"].device
    times = []
    with torch.no_grad():
        for i in range(steps + 2):
            _sync(device)
            start = time.perf_counter()
            regressor(batch["image"])
            _sync(device)
            if i > 1:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_training_step(regressor: Regressor, batch: dict, loss_name: str, steps: int) -> float:
    """Median seconds of one training step (forward, loss, backward, Adam) on the batch."""
    device = batch["image"].device
    generator = torch.Generator(device=device).manual_seed(0)
    extra = {"generator": generator} if loss_name == "mrl" else {}
    loss_fn = losses.make_loss(loss_name, **PARAMS[loss_name], **extra)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=1e-4)
    regressor.train()
    times = []
    for i in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        out = regressor(batch["image"])
        loss = loss_fn(out["vertices"], out["q"], out["t"], batch["vertices"], batch["q"], batch["t"], batch["K"])
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        _sync(device)
        if i > 1:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_train_epoch(path: Path, encoder: str, batch: int, device: torch.device, folder: Path) -> float:
    """Images/s of one epoch of :func:`train` (GAL, no validation set) on ``path``."""
    from facebench.baselines.ramon2019.training import TrainConfig, train

    result = train(TrainConfig(dataset=path, val=None, out=folder / f"run_{encoder}_{path.stem}_{device.type}",
                               loss="gal", encoder=encoder, epochs=1, batch=batch, device=str(device)))
    return result.history[0]["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small:64,vgg16:64,vgg16:224",
                        help="comma-separated ENCODER:SIZE pairs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 2 warm-ups)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    parser.add_argument("--no-epoch", action="store_true", help="skip the train() epoch with data loading")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]

    from facebench.models import load

    model = load("synthetic")
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch}, median of {args.steps} steps; "
          f"epoch = {PAPER_EPOCH} images (Ramon et al.)")
    print(f"{'device':<7}{'encoder':<8}{'px':>5}{'params':>10}  {'what':<10}{'ms/step':>10}{'img/s':>9}{'min/epoch':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sets: dict[int, Path] = {}
        for device_name in devices:
            device = torch.device(device_name)
            for encoder, size in configs:
                if size not in sets:
                    sets[size] = render_set(size, max(args.batch, 16), folder)
                torch.manual_seed(0)
                regressor = Regressor(model, encoder=encoder, image_size=size).to(device)
                batch = load_batch(sets[size], args.batch, device)
                head = f"{device.type:<7}{encoder:<8}{size:>5}{count_parameters(regressor) / 1e6:>9.1f}M"

                def row(what: str, seconds: float, head: str = head) -> None:
                    rate = args.batch / seconds
                    print(f"{head}  {what:<10}{1e3 * seconds:>10.1f}{rate:>9.1f}{PAPER_EPOCH / rate / 60:>11.1f}",
                          flush=True)

                row("forward", time_forward(regressor, batch, args.steps))
                for name in LOSS_NAMES:
                    row(name, time_training_step(regressor, batch, name, args.steps))
                if not args.no_epoch:
                    rate = time_train_epoch(sets[size], encoder, args.batch, device, folder)
                    print(f"{head}  {'train()':<10}{'':>10}{rate:>9.1f}{PAPER_EPOCH / rate / 60:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
