"""The compute budget of ``facebench reproduce table2 --standard`` (facebench/baselines/ramon2019/standard.py).

Two parts:

- ``--run DIR``: the CPU-core-seconds a finished (or partial) standard run recorded, per job kind
  (data generation, search trials, final trainings with their prediction and scoring), summed over
  seeds, and the projection to the whole run; each job runs on one core, so core-seconds are the
  sum of the jobs' wall seconds. Run it after ``facebench reproduce table2 --standard --out DIR``.
- ``--measure``: training throughput (images/s, one thread) of each loss at the standard mode's
  setting (32 px, small encoder, batch 16) on a batch held in memory, with the quick mode's
  setting (64 px, batch 32, GAL) measured in the same run as the reference (ratio), and the load.

    python perf/bench_table2_standard.py --run runs/table2-standard
    python perf/bench_table2_standard.py --measure [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def budget(run: Path) -> None:
    rows: dict[str, list[float]] = {"data": [], "search": [], "train": [], "refs": []}
    epochs = 0
    for seed_dir in sorted(run.glob("seed*")):
        data = seed_dir / "data" / "result.json"
        if data.is_file():
            rows["data"].append(json.loads(data.read_text())["seconds"])
        for trial in sorted(seed_dir.glob("search/*/trial_*/result.json")):
            r = json.loads(trial.read_text())
            rows["search"].append(float(r.get("seconds") or 0.0))
            epochs += int(r.get("epochs") or 0)
        for result in sorted(seed_dir.glob("runs/*/result.json")):
            r = json.loads(result.read_text())
            rows["train"].append(float(r["wall_seconds"]))
            epochs += int(r["epochs"])
    total = sum(sum(v) for v in rows.values())
    print(f"run {run}: load now {os.getloadavg()[0]:.1f}")
    for kind, values in rows.items():
        if values:
            print(f"  {kind:7s} {len(values):3d} jobs  {sum(values) / 60:7.1f} core-min  "
                  f"(mean {sum(values) / len(values):.0f} s)")
    print(f"  total   {total / 60:.1f} core-min recorded over {epochs} training epochs "
          f"(wall seconds of each job on its one core, at the load each job met)")


def measure(seconds: float) -> None:
    import torch

    from facebench.baselines.ramon2019.losses import make_loss
    from facebench.baselines.ramon2019.regressor import Regressor
    from facebench.models import load

    torch.set_num_threads(1)
    model = load("synthetic")
    generator = torch.Generator().manual_seed(0)

    def rate(loss: str, size: int, batch: int) -> float:
        torch.manual_seed(0)
        regressor = Regressor(model, encoder="small", image_size=(size, size))
        optimizer = torch.optim.Adam(regressor.parameters(), lr=1e-4)
        images = torch.rand(batch, 3, size, size, generator=generator)
        x = torch.as_tensor(model.mean.copy(), dtype=torch.float32)[None].repeat(batch, 1, 1)
        q = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(batch, 1)
        t = torch.tensor([[0.0, 0.0, 800.0]]).repeat(batch, 1)
        K = torch.tensor([[size * 2.0, 0, size / 2], [0, size * 2.0, size / 2], [0, 0, 1]])
        params = {"n_views": 2, "generator": generator} if loss == "mrl" else {}
        if loss == "coarse":
            params = {"alpha": 1.0}
        if loss == "xqt":
            params = {"beta": 1.0, "gamma": 1.0}
        fn = make_loss(loss, **params)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            out = regressor(images)
            value = fn(out["vertices"], out["q"], out["t"], x, q, t, K).mean()
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            done += batch
        return done / (time.perf_counter() - t0)

    print(f"load before: {os.getloadavg()[0]:.1f}")
    reference = rate("gal", 64, 32)
    print(f"reference (quick mode: gal, 64 px, batch 32): {reference:.0f} images/s")
    for loss in ("coarse", "xqt", "gal", "srl", "mrl"):
        r = rate(loss, 32, 16)
        print(f"standard {loss:6s} 32 px, batch 16: {r:6.0f} images/s  ({r / reference:.2f}x the reference)")
    print(f"load after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if args.run is None and not args.measure:
        parser.error("give --run DIR and/or --measure")
    if args.run is not None:
        budget(args.run)
    if args.measure:
        measure(args.seconds)


if __name__ == "__main__":
    main()
