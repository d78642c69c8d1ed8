"""``facebench datasets ...``: prepare real datasets (MICC Florence, FaceWarehouse) and inspect files.

Exit codes of ``prepare``: 0 when at least one subject was prepared (2 with ``--strict`` when any
was skipped), 2 when none was (no file is written then).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from facebench.commands.base import EXIT_INVALID_INPUT, FacebenchGroup
from facebench.errors import FacebenchError
from facebench.safe_hdf5 import parse_json


@click.group(cls=FacebenchGroup)
def datasets() -> None:
    """Real datasets: prepare MICC Florence / FaceWarehouse, inspect dataset files."""


@datasets.group("prepare", cls=FacebenchGroup)
def prepare() -> None:
    """Convert a licensed copy of a real dataset into a facebench scan dataset file."""


def _numbers(text: str | None) -> list[int] | None:
    """``"1,2,5-7"`` -> [1, 2, 5, 6, 7]."""
    if text is None:
        return None
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            numbers.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
        except ValueError:
            raise FacebenchError(f"expected numbers like 1,2,5-7, got {text!r}") from None
    return numbers


def _common_options(function):
    function = click.option("--root", required=True, type=click.Path(path_type=Path),
                            help="The dataset folder as distributed.")(function)
    function = click.option("--out", required=True, type=click.Path(path_type=Path),
                            help="The dataset file to write (.h5).")(function)
    function = click.option("--annotations", type=click.Path(path_type=Path), default=None,
                            help="Local copy of Ramon et al.'s annotations (data/ folder or repository root); "
                                 "default: fetch the pinned files.")(function)
    function = click.option("--image-size", type=click.IntRange(8, 4096), default=256, show_default=True,
                            help="Side of the stored face crops, pixels.")(function)
    function = click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")(function)
    function = click.option("--strict", is_flag=True, help="Exit 2 when any subject was skipped.")(function)
    function = click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
                            help="Also write the full report (evidence included) as JSON.")(function)
    return function


def _run(function, kwargs: dict, strict: bool, json_path: Path | None) -> None:
    bar = click.progressbar(length=1, label="preparing", show_pos=True, file=click.get_text_stream("stderr"))

    def progress(done: int, total: int, name: str) -> None:
        bar.length = max(total, 1)
        bar.update(done - bar.pos, name)

    with bar:
        report = function(progress=progress, **kwargs)
    for line in report.problems:
        click.echo(f"problem: {line}")
    for line in report.warnings:
        click.echo(f"warning: {line}")
    if report.index_base is not None:
        base = report.index_base
        passes = base.get("geometry_passes", {})
        detail = f"; geometry check passed by {passes.get('0', 0)} (0-based) / {passes.get('1', 0)} (1-based) of " \
                 f"{base.get('subjects', 0)}" if passes else ""
        click.echo(f"index base: {base['base']}-based ({base.get('rule', base['mode'])}{detail})")
    if report.mm_per_unit is not None:
        click.echo(f"mm per unit: {report.mm_per_unit:.6g}")
    click.echo(f"prepared {len(report.prepared)}, skipped {len(report.skipped)}, "
               f"{report.timings.get('total', 0):.1f} s ({report.timings.get('per_subject', 0):.2f} s per subject)")
    if json_path is not None:
        from facebench.atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str), encoding="utf-8")
    if not report.written:
        click.echo(f"error: no usable subject: {report.out} not written", err=True)
        raise click.exceptions.Exit(EXIT_INVALID_INPUT)
    click.echo(f"wrote {report.out}")
    if strict and report.skipped:
        click.echo(f"error: --strict: {len(report.skipped)} subject(s) skipped", err=True)
        raise click.exceptions.Exit(EXIT_INVALID_INPUT)


@prepare.command("micc")
@_common_options
@click.option("--scan", type=click.Choice(["frontal1", "frontal2", "sidel", "sider"]), default="frontal1",
              show_default=True, help="Model/<scan> folder of each subject.")
@click.option("--video", default="Indoor-Cooperative", show_default=True, help="Video name in subject_NN/Video/.")
@click.option("--face-boxes", type=click.Path(path_type=Path), default=None,
              help="JSON {id: [x0, y0, x1, y1]} crop boxes in frame pixels (default: the central square).")
@click.option("--index-base", type=click.Choice(["auto", "0", "1"]), default="auto", show_default=True,
              help="Base of the annotated vertex indices (auto: decided from the scans).")
@click.option("--subjects", default=None, help="Only these subject numbers, e.g. 1,2,5-7.")
def prepare_micc_command(root, out, annotations, image_size, overwrite, strict, json_path, scan, video,
                         face_boxes, index_base, subjects) -> None:
    """MICC Florence: the Indoor-Cooperative frame and frontal scan of each annotated subject."""
    from facebench.datasets.micc import prepare_micc

    kwargs = dict(root=root, out=out, annotations=annotations, scan=scan, video=video, image_size=image_size,
                  face_boxes=face_boxes, index_base=index_base, subjects=_numbers(subjects), overwrite=overwrite)
    _run(prepare_micc, kwargs, strict, json_path)


@prepare.command("facewarehouse")
@_common_options
@click.option("--mm-per-unit", default="auto", show_default=True,
              help="Factor from FaceWarehouse units to mm (auto: mean tragus distance = 145 mm).")
@click.option("--testers", default=None, help="Only these tester numbers, e.g. 1-20.")
def prepare_facewarehouse_command(root, out, annotations, image_size, overwrite, strict, json_path,
                                  mm_per_unit, testers) -> None:
    """FaceWarehouse: the neutral photo (pose_0) and registered mesh of each tester."""
    from facebench.datasets.facewarehouse import prepare_facewarehouse

    kwargs = dict(root=root, out=out, annotations=annotations, image_size=image_size, mm_per_unit=mm_per_unit,
                  testers=_numbers(testers), overwrite=overwrite)
    _run(prepare_facewarehouse, kwargs, strict, json_path)


@prepare.command("now")
@click.option("--root", required=True, type=click.Path(path_type=Path),
              help="The NoW folder (imagepathsvalidation.txt, scans/, scans_lmks_onlypp/, iphone_pictures/).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The dataset file to write (.h5).")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="Image list (the test scans are withheld by NoW).")
@click.option("--image-size", type=click.IntRange(8, 4096), default=256, show_default=True,
              help="Side of the stored image crops, pixels.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--strict", is_flag=True, help="Exit 2 when any image was skipped.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the full report as JSON.")
def prepare_now_command(root, out, split, image_size, overwrite, strict, json_path) -> None:
    """NoW: each listed image with its subject's scan and seven landmarks (NoW's data stay where they are)."""
    from facebench.datasets.now import prepare_now

    _run(prepare_now, dict(root=root, out=out, split=split, image_size=image_size, overwrite=overwrite),
         strict, json_path)


@datasets.command("now-submission")
@click.option("--predictions", required=True, type=click.Path(path_type=Path),
              help="NoW-layout predictions: <subject>/<challenge>/<image>.obj|.ply with .npy|.txt landmarks.")
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="The prepared NoW dataset (.h5).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The facebench folder submission to write.")
@click.option("--method", default="unnamed", show_default=True, help="Method name.")
@click.option("--unit", type=click.Choice(["mm", "cm", "m"]), default="mm", show_default=True,
              help="Unit of the predicted meshes and landmarks (converted to mm).")
def now_submission_command(predictions, dataset, out, method, unit) -> None:
    """Convert predictions in NoW's layout into a facebench folder submission."""
    from facebench.benchmark.now_submission import now_submission

    info = now_submission(predictions, dataset, out, method=method, unit=unit)
    click.echo(f"wrote {info['written']} predictions to {out}; {len(info['missing'])} missing")


@datasets.command("info")
@click.argument("file", type=click.Path(path_type=Path))
def info(file: Path) -> None:
    """Summary of a dataset file: kind, samples, landmarks, units, preparation report."""
    from facebench.datasets.dataset_file import FaceDataset

    ds = FaceDataset(file)
    try:
        click.echo(f"file: {file}")
        click.echo(f"kind: {ds.kind}")
        click.echo(f"samples: {len(ds.ids)}")
        if ds.is_scan_dataset:
            attrs = ds.attrs
            click.echo(f"landmarks: {', '.join(ds.landmark_names)}")
            click.echo(f"units: mm (mm_per_unit {float(attrs.get('mm_per_unit', 1.0)):.6g})")
            sizes = [len(ds.scan(i)[0]) for i in range(len(ds.ids))]
            click.echo(f"scan vertices: {min(sizes)}..{max(sizes)}")
            preparation = attrs.get("preparation")
            if preparation:
                if isinstance(preparation, str):
                    preparation = parse_json(preparation, path=file, member="preparation")
                report = preparation.get("report", {}) if isinstance(preparation, dict) else {}
                report = report if isinstance(report, dict) else {}
                base = report.get("index_base") or {}
                if "base" in base:
                    click.echo(f"index base: {base['base']} ({base.get('rule', base.get('mode'))})")
                for sid, reason in sorted(report.get("skipped", {}).items()):
                    click.echo(f"skipped {sid}: {reason}")
        click.echo(f"ids: {', '.join(list(ds.ids)[:10])}{' ...' if len(ds.ids) > 10 else ''}")
    finally:
        close = getattr(ds, "close", None)
        if close is not None:
            close()
