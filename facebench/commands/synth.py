"""``facebench synth ...``: generate synthetic 3DMM render datasets, inspect, show and merge them."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.base import FacebenchGroup
from facebench.commands.threads_option import threads_option
from facebench.errors import FacebenchError


@click.group(cls=FacebenchGroup)
def synth() -> None:
    """Synthetic datasets: generate, info, world, show, merge."""


#: Images per extra worker process of ``synth generate`` by default: a spawned worker takes about
#: 5 s to start (import torch, receive the model) on 2 shared cores, i.e. ~200 images at one
#: process's rate. Measured (perf/bench_generate.py, 224 px): 96 images at load average 2, 36.5
#: images/s in one process vs 12.2 with two workers; 1,000 images at load average 12, 3.2 vs 5.6.
GENERATE_ROWS_PER_WORKER = 500


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(index), int(count)
    except ValueError:
        raise FacebenchError(f"--shard expects I/N (e.g. 3/8), got {text!r}") from None


@synth.command("generate")
@click.option("--n", "n", type=int, required=True, help="Number of samples (mirror rows come on top).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output dataset file (.h5).")
@click.option("--model", "model_name", default="synthetic", show_default=True, help="Model name (facebench models list).")
@click.option("--model-path", type=click.Path(path_type=Path), default=None, help="Model file or folder.")
@click.option("--landmarks", "landmark_mapping", type=click.Path(path_type=Path), default=None,
              help="eos ibug_to_*.txt mapping for models without landmarks.")
@click.option("--set", "model_settings", multiple=True, metavar="KEY=VALUE", help="Model loader option, repeatable.")
@click.option("--size", type=int, default=224, show_default=True, help="Image width = height, pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--angles", default="uniform", show_default=True,
              help="Angle distribution: uniform (in ±max), ramon2019, frontal.")
@click.option("--yaw-max", type=float, default=None, help="Degrees (uniform; default 60).")
@click.option("--pitch-max", type=float, default=None, help="Degrees (uniform; default 20).")
@click.option("--roll-max", type=float, default=None, help="Degrees (uniform; default 10).")
@click.option("--distance", type=float, default=600.0, show_default=True, help="Camera distance, mm.")
@click.option("--focal", type=float, default=None, help="Focal length, pixels (default: the face fills the image).")
@click.option("--identity-dims", type=int, default=None, help="Non-zero identity modes (default: all).")
@click.option("--expression-dims", type=int, default=None, help="Non-zero expression modes (default: all).")
@click.option("--reflectance-dims", type=int, default=None, help="Non-zero reflectance modes (default: all).")
@click.option("--neutral", is_flag=True, help="Zero expression.")
@click.option("--symmetrize", is_flag=True, help="Also write each sample's mirror image.")
@click.option("--background", default="plain:0,0,0", show_default=True, help="plain:R,G,B (linear, 0..1) or noise.")
@click.option("--identities", type=int, default=None, help="Number of subjects (default: one per sample).")
@click.option("--split", default=None, help="Train/val/test percentages by subject, e.g. 70/10/20.")
@click.option("--shard", default=None, metavar="I/N", help="Write only the I-th (0-based) of N shards.")
@click.option("--shards", type=int, default=None, help="Write N shard files (in parallel with --workers).")
@click.option("--workers", type=int, default=None,
              help="Rendering processes, 1 torch thread each (default: one per core, but at most one per "
                   f"{GENERATE_ROWS_PER_WORKER} images, which pay back a worker's start-up).")
@threads_option()
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per rasterizer call.")
@click.option("--device", default="cpu", show_default=True, help="torch device of the renderer (cpu, cuda).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--preset", type=click.Choice(["ramon2019", "tewari2018"]), default=None,
              help="A paper's settings (datasets/synthetic-<preset>.md); explicit options win.")
@click.option("--world", type=click.Choice(["in-span", "out-of-span"]), default="in-span", show_default=True,
              help="out-of-span: add detail orthogonal to the predictors' model span (held-out identity modes, "
                   "wrinkle-scale displacement, freckles/moles/brows/lips/skin tone).")
@click.option("--camera", type=click.Choice(["fixed", "variable"]), default="fixed", show_default=True,
              help="variable: distance 400-1200 mm, focal and off-centre shift drawn per sample.")
@click.option("--span-identity-dims", type=int, default=None, help="out-of-span: predictors' identity modes (default: all).")
@click.option("--span-expression-dims", type=int, default=None, help="out-of-span: predictors' expression modes (default: all).")
@click.option("--span-reflectance-dims", type=int, default=None,
              help="out-of-span: predictors' reflectance modes (default: all).")
def synth_generate(n, out, model_name, model_path, landmark_mapping, model_settings, size, seed, angles, yaw_max,
                   pitch_max, roll_max, distance, focal, identity_dims, expression_dims, reflectance_dims, neutral,
                   symmetrize, background, identities, split, shard, shards, workers, batch_size, device, overwrite,
                   preset, world, camera, span_identity_dims, span_expression_dims, span_reflectance_dims):
    """Render N samples of a face model into a facebench dataset file."""
    from facebench.commands.models import _load_model
    from facebench.commands.progress import progress_bar as tqdm  # remaining time also in logs
    from facebench.datasets.generator import GeneratorSettings, generate

    settings = GeneratorSettings(
        n=n, size=size, seed=seed, angles=angles, yaw_max=yaw_max, pitch_max=pitch_max, roll_max=roll_max,
        distance=distance, focal=focal, identity_dims=identity_dims, expression_dims=expression_dims,
        reflectance_dims=reflectance_dims, neutral=neutral, symmetrize=symmetrize, background=background,
        identities=identities, split=split, preset=preset, world=world, camera=camera,
        span_identity_dims=span_identity_dims, span_expression_dims=span_expression_dims,
        span_reflectance_dims=span_reflectance_dims,
    )
    if n < 1:  # before loading a model
        raise FacebenchError(f"--n must be >= 1, got {n}")
    if shard is not None and shards is not None:
        raise FacebenchError("give --shard I/N or --shards N, not both")
    model = _load_model(model_name, model_path, landmark_mapping, None, model_settings)
    if workers is None:
        from facebench.threads import auto_workers

        workers = auto_workers(n * (2 if symmetrize else 1), GENERATE_ROWS_PER_WORKER)
    spec = {"name": model_name, "path": None if model_path is None else str(model_path),
            "options": list(model_settings)}
    with tqdm(desc="rendering", unit="img", disable=None) as bar:
        def set_total(count: int) -> None:
            bar.total = count
            bar.refresh()

        summary = generate(settings, out, model=model, model_spec=spec, shard=_parse_shard(shard), shards=shards,
                           workers=workers, overwrite=overwrite, batch_size=batch_size, device=device,
                           progress=bar.update, total=set_total)
    names = ", ".join(str(p) for p in summary.paths)
    click.echo(f"wrote {summary.rows} images to {names} in {summary.seconds:.1f} s "
               f"({summary.images_per_second:.1f} images/s)")


@synth.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synth_info(path, as_json) -> None:
    """Counts, settings and the angle histogram of a dataset file."""
    import json

    from facebench.datasets.dataset_file import dataset_summary

    summary = dataset_summary(path)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key in ("path", "samples", "originals", "mirrors", "subjects", "image_size", "vertices", "faces",
                "landmarks", "model", "model_version", "seed", "split", "rows", "shard"):
        if key in summary:
            click.echo(f"{key:<14} {summary[key]}")
    if summary.get("settings"):
        click.echo("settings:")
        for key, value in summary["settings"].items():
            click.echo(f"  {key:<18} {value}")
    for name, rows in summary["histograms"].items():
        click.echo(f"{name} histogram (degrees):")
        top = max([row["count"] for row in rows] + [1])
        for k, row in enumerate(rows):
            bar = "#" * round(40 * row["count"] / top)
            close = "]" if k == len(rows) - 1 else ")"
            click.echo(f"  [{row['low']:6.1f}, {row['high']:6.1f}{close} {row['count']:7d} {bar}")


@synth.command("world")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--span", "spans", multiple=True, metavar="ID,EXP",
              help="Projection-oracle span (identity,expression modes), repeatable (default: the dataset's "
                   "predictor span and its identity-only part).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def synth_world(path, spans, as_json) -> None:
    """Out-of-span energies, camera ranges and reference errors (mean face, projection oracle)."""
    import json

    from facebench.benchmark.world_report import measure_world

    parsed = []
    for text in spans:
        try:
            identity, expression = (int(v) for v in text.split(","))
        except ValueError:
            raise FacebenchError(f"--span expects ID,EXP (e.g. 100,0), got {text!r}") from None
        parsed.append((identity, expression))
    report = measure_world(path, parsed or None)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['path']}: {report['n']} samples, world {report['world']}, camera {report['camera_kind']}"
               + (f", preset {report['preset']}" if report["preset"] else ""))
    e = report["energy"]
    click.echo(f"out-of-span energy over {e['subjects']} subjects: held-out modes {e['heldout_rms_mm']:.3f} mm RMS, "
               f"wrinkle detail {e['detail_rms_mm']:.3f} mm, total {e['total_rms_mm']:.3f} mm; reflectance "
               f"{e['reflectance_rms_rgb']:.4f} RGB RMS ({e['reflectance_applied_rms_rgb']:.4f} after clipping)")
    c = report["camera"]
    click.echo(f"camera: t_z {c['distance_mm'][0]:.0f}-{c['distance_mm'][1]:.0f} mm, "
               f"field of view {c['fov_deg'][0]:.1f}-{c['fov_deg'][1]:.1f} deg")
    for name, row in report["reference"].items():
        click.echo(f"{name:<34} shape {row['shape_mm']:.3f} mm   rmse {row['rmse_mm']:.3f} mm")


@synth.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output PNG.")
@click.option("--count", type=click.IntRange(1, 64), default=8, show_default=True, help="Samples shown.")
@click.option("--start", type=click.IntRange(0), default=0, show_default=True, help="First row shown.")
def synth_show(path, out, count, start) -> None:
    """A contact sheet: images with landmarks, reflectance images, masks."""
    from facebench.datasets.contact_sheet import contact_sheet

    written = contact_sheet(path, out, count=count, start=start)
    click.echo(f"wrote {written}")


@synth.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Merged dataset file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def synth_merge(shards, out, overwrite) -> None:
    """Join shard files of one run into one dataset file (a copy)."""
    from facebench.datasets.merge import merge_shards

    if Path(out).exists() and not overwrite:
        raise FacebenchError(f"{out}: exists already (use --overwrite to replace it)")
    merged = merge_shards(list(shards), out, overwrite=overwrite)
    click.echo(f"merged {len(shards)} shards into {merged}")
