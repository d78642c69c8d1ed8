"""Start-up and import cost of the command line, against the work of a small ``facebench score``.

Makes (once, in a temporary folder) a 5-sample synthetic test set (``facebench synth generate --n 5
--seed 0``) and its noisy-oracle submission (``facebench submission template --kind noisy``: 1 mm
per-vertex noise), then times each command below as a fresh subprocess, interleaved, ``--repeats``
rounds (median wall seconds, and the median CPU seconds of the child: user + system, every thread):

- ``python3 -c pass``: the interpreter alone;
- ``facebench --version``: click and every command module (no command runs);
- ``import facebench.benchmark.scoring``: the scoring path's module imports (numpy, h5py, pandas);
- ``import open3d``: what scan protocols add (closest points on triangles);
- ``import torch``: what the shared ``--threads`` option costs today (``facebench/threads.py``
  imports torch in ``apply_threads``, before any command runs);
- ``facebench score --protocol synthetic`` and ``--protocol synthetic-scan`` on the 5 samples, and
  ``--protocol synthetic-scan@1.1`` (the previous final ICP stage) as a same-run reference.

Then one ``python3 -X importtime -m facebench score ... --protocol synthetic-scan`` run lists the
heavy packages that score imported (cumulative import seconds of each) and the summary's own
timings (validate, evaluate, summarize): imports against work, in one run. On a loaded machine
wall times are mostly waiting for a core: compare within one run, and look at the CPU column.

    python perf/bench_cli_startup.py [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEAVY = ("numpy", "h5py", "click", "pandas", "scipy", "open3d", "torch", "matplotlib", "facebench.cli")


def run(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and child CPU seconds of one subprocess (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def import_times(text: str) -> dict[str, float]:
    """Cumulative import seconds of the HEAVY packages from ``-X importtime`` output (largest entry)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name in HEAVY:
            out[name] = max(out.get(name, 0.0), int(parts[1]) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    py = sys.executable
    fb = [py, "-m", "facebench"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "sub.h5").is_file():
            run(fb + ["synth", "generate", "--n", "5", "--seed", "0", "--out", "d.h5"], work)
            run(fb + ["submission", "template", "--dataset", "d.h5", "--kind", "noisy", "--out", "sub.h5"], work)
        score = fb + ["score", "--dataset", "d.h5", "--submission", "sub.h5", "--overwrite", "--method", "bench"]
        commands = {
            "python3 -c pass": [py, "-c", "pass"],
            "facebench --version": fb + ["--version"],
            "import facebench.benchmark.scoring": [py, "-c", "import facebench.benchmark.scoring"],
            "import open3d": [py, "-c", "import open3d"],
            "import torch": [py, "-c", "import torch"],
            "score synthetic (5 samples)": score + ["--protocol", "synthetic", "--out", "r1"],
            "score synthetic-scan (5 samples)": score + ["--protocol", "synthetic-scan", "--out", "r2"],
            "score synthetic-scan@1.1 (5 samples)": score + ["--protocol", "synthetic-scan@1.1", "--out", "r4"],
        }
        print(f"{os.cpu_count()} cores, load average {load()} at the start; {args.repeats} rounds, interleaved")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(run(command, work))
        print(f"\n{'command':<40} {'wall s':>8} {'CPU s':>8}   (medians)")
        for name, values in times.items():
            wall, cpu = np.median([v[0] for v in values]), np.median([v[1] for v in values])
            print(f"{name:<40} {wall:8.2f} {cpu:8.2f}")

        done = subprocess.run([py, "-X", "importtime", "-m", "facebench"] + score[3:]
                              + ["--protocol", "synthetic-scan", "--out", "r3"],
                              cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        imports = import_times(done.stderr)
        summary = json.loads((work / "r3" / "summary.json").read_text())
        print("\none 'score --protocol synthetic-scan' run with -X importtime: seconds")
        for name in HEAVY:
            print(f"  import {name:<14} {imports[name]:6.2f}" if name in imports else f"  import {name:<14}      -  (not imported)")
        for phase, seconds in summary["timings_s"].items():
            print(f"  {phase:<21} {seconds:6.2f}")
        print(f"\nload average {load()} at the end")


if __name__ == "__main__":
    main()
