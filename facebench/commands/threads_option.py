"""``--threads``: the one click option of the thread policy (:mod:`facebench.threads`), shared by
every heavy command (synth generate, train, predict, score, reproduce, demo, hpo, baselines)."""

from __future__ import annotations

import click

THREADS_HELP = ("torch CPU threads of this process: N, or 'auto' (the idle cores, measured at start). "
                "Default 1 (or $FACEBENCH_THREADS): one thread per process never collapses on a busy "
                "machine; parallelism comes from worker processes.")


def _apply(ctx: click.Context, param: click.Parameter, value):
    from facebench.threads import apply_threads, resolve_threads

    if ctx.resilient_parsing:
        return value
    return apply_threads(resolve_threads(value))


def threads_option(expose: bool = False):
    """The ``--threads`` option: resolved and applied (torch threads, OMP/MKL variables for
    workers) when the command's options are parsed; with ``expose``, the command receives the
    resolved number as ``threads``."""
    return click.option("--threads", default=None, metavar="N|auto", expose_value=expose, callback=_apply,
                        is_eager=False, help=THREADS_HELP)
