"""Forward-pass speed of the multi-level model (Tewari et al. 2018): regressor and decoder.

Prints, per device and thread count, the time of the regressor (images -> parameters), of the
decoder (parameters -> both levels' vertices and reflectance) and of ``reconstruct`` (both), at
batch 1 and batch 64, reconstructions per second, and a same-run reference: the Ramon et al.
regressor (``facebench.baselines.ramon2019.regressor.Regressor``, small encoder) at the same batch and size.
CPU with ``torch.set_num_threads(1)`` and ``(2)``; CUDA when available (``torch.cuda.synchronize``
around every timing, warm-up first). The paper's forward pass ran in < 4 ms; the issue's GPU goal
is >= 2,000 reconstructions/s at batch 1.

    python perf/bench_multilevel.py [--size 64] [--correctives 500] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from facebench import conventions as cv
from facebench.baselines.encoders import count_parameters
from facebench.baselines.ramon2019.regressor import Regressor
from facebench.baselines.tewari2018.model import MultiLevelConfig, MultiLevelModel


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after 3 warm-up runs."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(device: torch.device, size: int, correctives: int, repeats: int) -> None:
    import facebench.models as fm

    face_model = fm.load("synthetic")
    K = cv.intrinsics(size * 600.0 / (1.3 * 215.3), size)
    net = MultiLevelModel(face_model, MultiLevelConfig(n_correctives=correctives, image_size=size), K=K,
                          mean_t=[0.0, 10.0, 600.0]).to(device).eval()
    reference = Regressor(face_model, encoder="small", image_size=size).to(device).eval()
    print(f"  multi-level: {count_parameters(net) / 1e6:.1f} M parameters "
          f"(regressor {sum(p.numel() for p in net.parameter_groups()['base']) / 1e6:.2f} M, C = {correctives})")
    for batch in (1, 64):
        images = torch.rand(batch, 3, size, size, device=device)
        with torch.no_grad():
            params = net(images)
            t_reg = _time(lambda x=images: net(x), device, repeats)
            t_dec = _time(lambda p=params: net.decode(p), device, repeats)
            t_all = _time(lambda x=images: net.reconstruct(x), device, repeats)
            t_ref = _time(lambda x=images: reference(x), device, repeats)
        print(f"  batch {batch:3d}: regressor {t_reg * 1e3:8.2f} ms | decode {t_dec * 1e3:8.2f} ms | "
              f"reconstruct {t_all * 1e3:8.2f} ms = {batch / t_all:8.0f} reconstructions/s "
              f"({batch / t_reg:8.0f} parameter sets/s) | reference Ramon regressor {t_ref * 1e3:7.2f} ms "
              f"(regressor / reference {t_reg / t_ref:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--correctives", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"cpu, {threads} thread(s), {args.size} px:")
        run(torch.device("cpu"), args.size, args.correctives, args.repeats)
    if torch.cuda.is_available():
        print(f"cuda ({torch.cuda.get_device_name()}), {args.size} px:")
        run(torch.device("cuda"), args.size, args.correctives, args.repeats)
    else:
        print("cuda: not available")


if __name__ == "__main__":
    main()
