"""``facebench reproduce table3``: Ramon et al. 2019, Table 3 on prepared MICC / FaceWarehouse files
(:mod:`facebench.baselines.ramon2019.table3`). A plain click command added to the ``reproduce`` group."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.commands.seeds_option import seeds_option
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
@click.option("--protocol-version", default=None, metavar="VERSION",
              help="Version of micc-ramon2019 / facewarehouse-ramon2019 (default: the current one, 1.3: the face "
                   "region, scan vertices within 95 mm of the scan's nose tip; 1.1: every scan vertex).")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="The runs' face model file, for models read from a file (not needed for the procedural one).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch", type=int, default=16, show_default=True, help="Images per prediction batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --seeds: the first seed.")
@seeds_option
@threads_option()
def table3_command(micc, facewarehouse, runs, named, out, checkpoint, no_extra, protocol_version, model_path, device,
                   batch, seed, seeds) -> None:
    """Ramon et al. 2019 Table 3: predict with each run on MICC / FaceWarehouse, score under
    micc-ramon2019 / facewarehouse-ramon2019 (version 1.3 by default: the face region within 95 mm
    of the scan's nose tip; --protocol-version 1.1 for the whole scan) and micc-95mm; write
    table3.csv and table3.png. With --seeds N, the runs of each seed come from --runs DIR/seed<S>/."""
    from facebench.baselines.ramon2019.table3 import (
        find_entries,
        parse_run_option,
        protocol_note,
        reproduce_table3,
        reproduce_table3_seeds,
        table3_protocols,
    )
    from facebench.errors import FacebenchError
    from facebench.leaderboard.seeds import seed_list

    if batch < 1:
        raise FacebenchError(f"--batch must be >= 1, got {batch}")
    if micc is None and facewarehouse is None:
        raise FacebenchError("give --micc and/or --facewarehouse (prepared scan datasets)")
    table3_protocols(protocol_version)  # an unknown version: one line, before any work
    options = dict(micc=micc, facewarehouse=facewarehouse, extra=not no_extra, device=device, batch_size=batch,
                   model_path=model_path, progress=click.echo, protocol_version=protocol_version)
    if seed_list(seed, seeds) and seeds > 1:
        if runs is None or named:
            raise FacebenchError("--seeds N reads each seed's runs from --runs DIR/seed<S>/; --run is for one seed")
        result = reproduce_table3_seeds(out, runs, seed_list(seed, seeds), checkpoint=checkpoint, **options)
    else:
        entries = find_entries(runs, [parse_run_option(text) for text in named], checkpoint=checkpoint)
        result = reproduce_table3(out, entries, **options)
    table = result.table
    shown = [c for c in table.columns if c in ("method", "n_seeds", "verdict") or c.endswith(("_mm", "_completion",
                                                                                             "_mm_mean", "_mm_sd"))
             and not c.endswith(("std_mm", "ci_low_mm", "ci_high_mm"))]
    click.echo("Table 3 scored under: " + "; ".join(f"{key} = {protocol_note(protocol_id)}"
                                                   for key, protocol_id in result.protocols.items()))
    click.echo(table[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, error in result.errors.items():
        click.echo(f"warning: {name}: {error}", err=True)
    click.echo(f"wrote {', '.join(str(path) for path in result.files.values())} ({result.seconds:.1f} s)")
