"""Generation rate of ``facebench synth generate`` (images/s) and, as a same-run reference, the
render step alone.

Generates ``--n`` samples at 224×224 with the default (procedural, 28,600-triangle) model into a
temporary folder with 1 and 2 worker processes, then times the render step alone (``render`` +
reflectance ``interpolate`` of the same batch size, torch threads as set) and prints the ratio.

    python perf/bench_generate.py [--n 64] [--batch-size 8] [--device cpu] [--workers 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facebench.datasets.generator import GeneratorSettings, _Context, generate, resolve_settings
from facebench.models import load
from facebench.render import interpolate, render


def render_rate(model, settings: GeneratorSettings, batch_size: int, device: str, seconds: float = 5.0) -> float:
    """Images/s of the render step alone on one pre-computed batch."""
    resolved = resolve_settings(settings, model)
    context = _Context(model, resolved, device)
    samples = [context.sample(i) for i in range(batch_size)]
    f32 = {"dtype": torch.float32, "device": device}
    vertices = torch.as_tensor(np.stack([s["vertices"] for s in samples]), **f32)
    albedo = torch.as_tensor(np.stack([s["albedo"] for s in samples]), **f32)
    q = torch.as_tensor(np.stack([s["q"] for s in samples]), **f32)
    t = torch.as_tensor(np.stack([s["t"] for s in samples]), **f32)
    sh = torch.as_tensor(np.stack([s["sh"] for s in samples]), **f32)
    faces = torch.as_tensor(model.faces.astype(np.int64), device=device)

    def once() -> None:
        out = render(vertices, faces, q, t, context.K, resolved.size, resolved.size, reflectance=albedo, sh=sh)
        interpolate(out.fragments, albedo).cpu()

    once()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        once()
        count += batch_size
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (1 worker renders here; the default of the policy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load("synthetic")
    settings = GeneratorSettings(n=args.n, size=224, seed=0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"model {model.name} ({model.n_faces} triangles), n={args.n}, batch {args.batch_size}")
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in args.workers:
            out = Path(folder) / f"w{workers}.h5"
            summary = generate(settings, out, model=model, workers=workers, batch_size=args.batch_size,
                               device=args.device)
            rates[workers] = summary.images_per_second
            print(f"synth generate, {workers} worker(s): {summary.images_per_second:7.1f} images/s "
                  f"({summary.rows} images in {summary.seconds:.1f} s, incl. worker start-up)")
    alone = render_rate(model, settings, args.batch_size, args.device)
    print(f"render step alone ({torch.get_num_threads()} threads): {alone:7.1f} images/s")
    for workers, value in rates.items():
        print(f"ratio generate({workers}) / render alone: {value / alone:.2f}")


if __name__ == "__main__":
    main()
