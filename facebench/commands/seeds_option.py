"""``--seeds N`` of every ``facebench reproduce`` command, and the one way they print a table
(single-seed columns, or their ``_mean``/``_sd`` across seeds: :mod:`facebench.leaderboard.seeds`)."""

from __future__ import annotations

from collections.abc import Sequence

import click

__all__ = ["seeds_option", "echo_table", "shown_columns"]

seeds_option = click.option(
    "--seeds", type=int, default=1, show_default=True,
    help="Run the experiment for seeds SEED … SEED+N-1 (each in OUT/seed<S>/); the table then gives the mean "
         "and sd across seeds and calls an ordering only when it holds in every seed with a paired interval "
         "excluding 0 (OUT/verdicts.csv).")


def shown_columns(table, columns: Sequence[str]) -> list[str]:
    """``columns`` present in ``table``, each metric replaced by its ``_mean`` and ``_sd`` when the
    table is an across-seeds one."""
    shown = []
    for column in columns:
        if column in table.columns:
            shown.append(column)
        elif f"{column}_mean" in table.columns:
            shown += [f"{column}_mean", f"{column}_sd"]
    return shown


def echo_table(table, columns: Sequence[str], *, digits: int = 3) -> None:
    """Print ``table``'s :func:`shown_columns` of ``columns``."""
    click.echo(table[shown_columns(table, columns)].to_string(index=False, float_format=lambda v: f"{v:.{digits}f}"))
