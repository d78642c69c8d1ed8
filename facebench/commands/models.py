"""``facebench models ...``: list, inspect, export, sample, fetch and build face models."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from facebench.commands.base import FacebenchGroup
from facebench.errors import FacebenchError


@click.group(cls=FacebenchGroup)
def models() -> None:
    """Face models: list, inspect, export, sample, fetch, build."""


def _model_options(function):
    function = click.option("--path", type=click.Path(path_type=Path), default=None,
                            help="Model file or folder (for user-obtained models).")(function)
    function = click.option("--landmarks", "landmark_mapping", type=click.Path(path_type=Path), default=None,
                            help="eos ibug_to_*.txt mapping giving the iBUG-68 landmark vertices.")(function)
    function = click.option("--expressions", "expression_path", type=click.Path(path_type=Path), default=None,
                            help="SFM only: the expression blendshapes .bin file.")(function)
    function = click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                            help="Loader option, repeatable: e.g. region=full (ict), n_shape=300 (flame), "
                                 "color_space=linear (bfm/sfm).")(function)
    return function


def _parse_settings(settings) -> dict:
    options = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FacebenchError(f"--set expects KEY=VALUE, got {item!r}")
        value: object = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


def _load_model(name: str, path, landmark_mapping, expression_path, settings=()):
    from facebench.models import load

    options = _parse_settings(settings)
    if landmark_mapping is not None:
        options["landmark_mapping"] = landmark_mapping
    if expression_path is not None:
        if name != "sfm":
            raise FacebenchError("--expressions applies to the sfm model only")
        options["expression_path"] = expression_path
    return load(name, path, **options)


@models.command("list")
def models_list() -> None:
    """List the model names facebench can load."""
    from facebench.models import describe

    for row in describe():
        needs = "needs --path" if row["needs_path"] else "built in" if row["name"] == "synthetic" else ""
        click.echo(f"{row['name']:<10} {needs:<13} {row['description']}")


@models.command("info")
@click.argument("name", default="synthetic")
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def models_info(name, path, landmark_mapping, expression_path, settings, as_json) -> None:
    """Counts, extent in mm, origin and the landmark table of model NAME."""
    from facebench.models.summary import landmark_table, model_summary

    model = _load_model(name, path, landmark_mapping, expression_path, settings)
    summary, table = model_summary(model), landmark_table(model)
    if as_json:
        click.echo(json.dumps({"summary": summary, "landmarks": table}, indent=2))
        return
    for key, value in summary.items():
        if key == "extent_mm":
            value = " x ".join(f"{v:.1f}" for v in value.values()) + " mm (x width, y height, z depth)"
        click.echo(f"{key:<36} {value}")
    click.echo("\niBUG-68 landmarks (vertex, mean position in mm; -1 = not defined on this model):")
    for row in table:
        where = "      -" if row["vertex"] < 0 else f"{row['vertex']:7d}  ({row['x']:7.1f} {row['y']:7.1f} {row['z']:7.1f})"
        click.echo(f"  {row['ibug']:2d} {row['name']:<26} {where}")


@models.command("export")
@click.argument("name", default="synthetic")
@_model_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output mesh (.obj or .ply).")
@click.option("--identity", default=None, help="Identity coefficients in std units, comma-separated (first modes).")
@click.option("--expression", default=None, help="Expression coefficients in std units, comma-separated.")
@click.option("--reflectance", default=None, help="Reflectance coefficients in std units, comma-separated.")
@click.option("--colors/--no-colors", default=True, help="Write per-vertex reflectance colours.")
def models_export(name, path, landmark_mapping, expression_path, settings, out, identity, expression, reflectance, colors):
    """Write one face of model NAME as a mesh (head frame, mm)."""
    from facebench.meshio import write_mesh
    from facebench.models.sampling import parse_coefficients

    model = _load_model(name, path, landmark_mapping, expression_path, settings)
    a = parse_coefficients(identity, model.n_identity, "identity")
    e = parse_coefficients(expression, model.n_expression, "expression")
    r = parse_coefficients(reflectance, model.n_reflectance, "reflectance")
    vertices = model.shape(a, e)
    rgb = np.clip(model.reflectance(r), 0, 1) if colors else None
    written = write_mesh(out, vertices, model.faces, colors=rgb)
    click.echo(f"wrote {written or out} ({model.n_vertices} vertices, {model.n_faces} faces)")


@models.command("sample")
@click.argument("name", default="synthetic")
@_model_options
@click.option("--n", "count", type=click.IntRange(1, 10000), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--format", "mesh_format", type=click.Choice(["obj", "ply"]), default="obj", show_default=True)
@click.option("--expression-scale", type=float, default=1.0, show_default=True,
              help="Scale of the expression draws (0: neutral).")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Also write preview.png.")
def models_sample(name, path, landmark_mapping, expression_path, settings, count, seed, out, mesh_format,
                  expression_scale, preview):
    """Write N random faces of model NAME as meshes, their coefficients and a PNG preview."""
    from tqdm import tqdm

    from facebench.meshio import write_mesh
    from facebench.models.sampling import sample_faces

    model = _load_model(name, path, landmark_mapping, expression_path, settings)
    samples = sample_faces(model, count, seed, expression_scale=expression_scale)
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(count), desc="writing meshes", unit="mesh", disable=None):
        write_mesh(out / f"face_{i:03d}.{mesh_format}", samples.vertices[i], model.faces,
                   colors=samples.reflectance[i])
    np.savez(out / "coefficients.npz", identity=samples.identity, expression=samples.expression,
             reflectance=samples.reflectance_coefficients, seed=np.int64(seed))
    click.echo(f"wrote {count} {model.name} faces (seed {seed}) to {out}/face_*.{mesh_format} "
               f"and coefficients.npz")
    if preview:
        from facebench.models.preview import render_preview

        shown = min(count, 8)
        png = render_preview(
            [samples.vertices[i] for i in range(shown)], model.faces, out / "preview.png",
            titles=[f"face_{i:03d}" for i in range(shown)],
            colors=[samples.reflectance[i] for i in range(shown)],
        )
        click.echo(f"preview: {png}")


@models.command("fetch")
@click.argument("name", type=click.Choice(["ict"]))
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="Convert a local copy of FaceXModel/ instead of downloading.")
@click.option("--allow-unpinned", is_flag=True,
              help="Also download upstream files whose sha256 facebench has not pinned (hashes are recorded).")
def models_fetch(name, source, allow_unpinned) -> None:
    """Download (or convert a local copy of) an open model into the cache."""
    from tqdm import tqdm

    from facebench.models.ict import fetch_ict

    with tqdm(desc="ICT-FaceKit", unit="file", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        cached = fetch_ict(source=source, allow_unpinned=allow_unpinned, progress=progress)
    click.echo(f"ICT-FaceKit ready: {cached}")


@models.command("build")
@click.option("--meshes", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="Folder of registered meshes of one topology (.obj/.ply).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output model (.npz).")
@click.option("--components", type=click.IntRange(1), default=None, help="Number of PCA modes to keep.")
@click.option("--variance", type=click.FloatRange(0, 1, min_open=True), default=0.98, show_default=True,
              help="Keep the fewest modes explaining this fraction of variance (when --components is not given).")
@click.option("--landmarks", "landmark_mapping", type=click.Path(path_type=Path), default=None,
              help="eos ibug_to_*.txt mapping of the meshes' topology.")
@click.option("--name", default="built", show_default=True)
def models_build(meshes, out, components, variance, landmark_mapping, name) -> None:
    """Build a PCA model from registered meshes (generalized Procrustes, then PCA)."""
    from facebench.models.builder import build_model_from_dir
    from facebench.models.landmark_mapping import read_landmark_mapping

    landmarks = read_landmark_mapping(landmark_mapping) if landmark_mapping else None
    model = build_model_from_dir(meshes, out, n_components=components, variance=variance,
                                 landmark_indices=landmarks, name=name)
    click.echo(f"wrote {out}: {model.n_vertices} vertices, {model.n_identity} modes "
               f"(std {model.identity_std[0]:.2f} .. {model.identity_std[-1]:.2f} mm)")
