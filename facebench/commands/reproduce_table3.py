"""``facebench reproduce table3``: Ramon et al. 2019, Table 3 on prepared MICC / FaceWarehouse files
(:mod:`facebench.baselines.ramon2019.table3`). A plain click command added to the ``reproduce`` group."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.threads_option import threads_option


@click.command("table3")
@click.option("--micc", type=click.Path(path_type=Path), default=None,
              help="MICC file written by `facebench datasets prepare micc`.")
@click.option("--facewarehouse", type=click.Path(path_type=Path), default=None,
              help="FaceWarehouse file written by `facebench datasets prepare facewarehouse`.")
@click.option("--runs", type=click.Path(path_type=Path), default=None,
              help="Folder of run folders (facebench train regressor|multilevel) and/or submissions; one row each.")
@click.option("--run", "named", multiple=True, metavar="NAME=PATH",
              help="One more row: a run folder, a checkpoint (.pt) or a submission (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="Run folders: model.pt (last epoch) or best.pt (lowest validation shape error).")
@click.option("--no-95mm", "no_extra", is_flag=True, help="Skip the extra micc-95mm column.")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="The runs' face model file, for models read from a file (not needed for the procedural one).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch", type=int, default=16, show_default=True, help="Images per prediction batch.")
@threads_option()
def table3_command(micc, facewarehouse, runs, named, out, checkpoint, no_extra, model_path, device, batch) -> None:
    """Ramon et al. 2019 Table 3: predict with each run on MICC / FaceWarehouse, score under
    micc-ramon2019 / facewarehouse-ramon2019 (and micc-95mm); write table3.csv and table3.png."""
    from facebench.baselines.ramon2019.table3 import find_entries, parse_run_option, reproduce_table3
    from facebench.errors import FacebenchError

    if batch < 1:
        raise FacebenchError(f"--batch must be >= 1, got {batch}")
    if micc is None and facewarehouse is None:
        raise FacebenchError("give --micc and/or --facewarehouse (prepared scan datasets)")
    entries = find_entries(runs, [parse_run_option(text) for text in named], checkpoint=checkpoint)
    result = reproduce_table3(out, entries, micc=micc, facewarehouse=facewarehouse, extra=not no_extra,
                              device=device, batch_size=batch, model_path=model_path, progress=click.echo)
    table = result.table
    shown = [c for c in table.columns if c == "method" or c.endswith(("_mm", "_completion"))
             and not c.endswith("std_mm")]
    click.echo(table[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, error in result.errors.items():
        click.echo(f"warning: {name}: {error}", err=True)
    click.echo(f"wrote {result.files['table3']}, {result.files['plot']} ({result.seconds:.1f} s)")
