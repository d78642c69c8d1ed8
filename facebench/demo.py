"""The main job on the built-in default: a small end-to-end benchmark, no download, no dataset.

:func:`run_demo` generates a synthetic test set with the procedural model, writes four
submissions (the reference rows: the model's mean shape at the true pose and the projection oracle,
the least-squares fit of the ground truth in the model's span, which is 0 in this in-span world;
a noisy oracle; and 3DMM fitting to the 68 2D landmarks), scores each under the ``synthetic`` and ``synthetic-scan`` protocols, and builds the
leaderboard (CSV, plots, static HTML). Everything lands under one folder:

``dataset/test.h5``, ``submissions/*.h5``, ``results/<method>__<protocol>/``, ``leaderboard/``
(``leaderboard.csv``, ``plots/*.png``, ``index.html``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

#: (method label, template kind or "landmark-fit") in leaderboard order.
DEMO_METHODS = (("mean-shape", "mean"), ("projection-oracle", "oracle"), ("noisy-oracle", "noisy"),
                ("landmark-fit", "landmark-fit"))
DEMO_PROTOCOLS = ("synthetic", "synthetic-scan")

Step = Callable[[str], None]


@dataclasses.dataclass
class DemoSummary:
    """What the demo wrote and how long each stage took (seconds)."""

    out_dir: Path
    dataset: Path
    submissions: dict[str, Path]
    results: list[Path]
    leaderboard_csv: Path
    index_html: Path | None
    plots: list[Path]
    headline: list[dict]
    timings_s: dict[str, float]


def run_demo(out_dir: str | Path, *, n: int = 48, size: int = 224, seed: int = 0,
             step: Step | None = None, progress: Callable[[int, int], None] | None = None) -> DemoSummary:
    """Run the demo into ``out_dir`` (see the module docstring); returns what it wrote.

    Args:
        n: test samples; size: image size in pixels; seed: generator seed.
        step: optional callback told the name of each stage as it starts.
        progress: optional ``callback(done, total)`` for the long loops of each stage.
    """
    import torch

    from facebench.baselines.landmark_fit import fit_dataset
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results
    from facebench.benchmark.templates import write_template
    from facebench.datasets.generator import GeneratorSettings, generate
    from facebench.leaderboard import build_leaderboard

    out = Path(out_dir)
    timings: dict[str, float] = {}

    def stage(name: str) -> float:
        if step is not None:
            step(name)
        return time.perf_counter()

    start = stage("generating the synthetic test set")
    dataset = out / "dataset" / "test.h5"
    settings = GeneratorSettings(n=n, size=size, seed=seed, angles="ramon2019")
    rows = 0

    def rows_written(count: int) -> None:  # generate() reports increments
        nonlocal rows
        rows += count
        if progress is not None:
            progress(rows, n)

    generate(settings, dataset, overwrite=True, progress=rows_written)
    timings["generate"] = time.perf_counter() - start

    start = stage("writing submissions (mean shape, projection oracle, noisy oracle, landmark fitting)")
    submissions: dict[str, Path] = {}
    for method, kind in DEMO_METHODS:
        path = out / "submissions" / f"{method}.h5"
        if kind == "landmark-fit":
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # small batched solves: one thread is faster on 2 cores
            try:
                fit_dataset(dataset, path, progress=progress)
            finally:
                torch.set_num_threads(threads)
        else:
            write_template(dataset, kind, path, noise_mm=1.0, pose_noise_deg=2.0, seed=seed)
        submissions[method] = path
    timings["submissions"] = time.perf_counter() - start

    start = stage("scoring every submission under every protocol")
    results = []
    for protocol_name in DEMO_PROTOCOLS:
        protocol = get_protocol(protocol_name)
        for method, path in submissions.items():
            result = score(dataset, path, protocol, method=method, progress=progress)
            folder = out / "results" / f"{method}__{protocol_name}"
            write_results(result, folder)
            results.append(folder)
    timings["score"] = time.perf_counter() - start

    start = stage("building the leaderboard (CSV, plots, HTML)")
    board = build_leaderboard(results, out / "leaderboard", fresh=True)
    timings["leaderboard"] = time.perf_counter() - start
    timings["total"] = sum(timings.values())
    columns = [c for c in ("method", "protocol", "completion", "shape_mm_mean", "rotation_deg_mean",
                           "translation_cm_mean", "reprojection_px_mean") if c in board.frame.columns]
    headline = board.frame[columns].to_dict(orient="records")
    return DemoSummary(
        out_dir=out, dataset=dataset, submissions=submissions, results=results, leaderboard_csv=board.csv,
        index_html=board.html, plots=[p.path for p in board.plots] if board.plots else [],
        headline=headline, timings_s=timings,
    )
