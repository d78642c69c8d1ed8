"""The ``facebench`` command line: a thin layer of click over library functions.

Each command group lives in :mod:`facebench.commands` (one module per group); commands parse
options, call library functions that return values, and print them. Errors a user can fix print
one ``error:`` line and exit 2; unexpected failures print ``internal error:`` and exit 1.
"""

from __future__ import annotations

import sys

import click

from facebench import __version__
from facebench.commands.base import FacebenchGroup
from facebench.commands.baselines import baselines
from facebench.commands.datasets import datasets
from facebench.commands.demo import demo_command
from facebench.commands.hpo import hpo_command
from facebench.commands.leaderboard import leaderboard
from facebench.commands.models import models
from facebench.commands.reproduce import reproduce
from facebench.commands.score import score_command
from facebench.commands.serve import serve_admin, serve_command
from facebench.commands.submission import submission
from facebench.commands.synth import synth
from facebench.commands.train import predict_command, train_command


@click.group(cls=FacebenchGroup)
@click.version_option(__version__, prog_name="facebench")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(debug: bool) -> None:
    """facebench: datasets and benchmarks for model-based monocular 3D face reconstruction."""


main.add_command(models)
main.add_command(leaderboard)
main.add_command(synth)
main.add_command(datasets)
main.add_command(submission)
main.add_command(score_command)
main.add_command(baselines)
main.add_command(demo_command)
main.add_command(train_command)
main.add_command(predict_command)
main.add_command(hpo_command)
main.add_command(reproduce)
main.add_command(serve_command)
main.add_command(serve_admin)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
