"""What every facebench command group shares: one-line errors and exit codes.

Errors a user can fix (bad files, bad options) print one ``error:`` line and exit 2; unexpected
failures print one ``internal error:`` line and exit 1 (``facebench --debug ...`` re-raises).
"""

from __future__ import annotations

import os
import sys

import click

from facebench.errors import FacebenchError

EXIT_INVALID_INPUT = 2
EXIT_INTERNAL_ERROR = 1


class FacebenchGroup(click.Group):
    """A click group that turns exceptions into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # e.g. `facebench models info | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except (FacebenchError, ValueError, OSError) as error:
            _fail(ctx, error, f"error: {error}", EXIT_INVALID_INPUT)
        except KeyboardInterrupt as error:
            _fail(ctx, error, "interrupted", 130)
        except Exception as error:  # the last line of defence of the CLI
            _fail(ctx, error, f"internal error: {type(error).__name__}: {error} (rerun with --debug for details)",
                  EXIT_INTERNAL_ERROR)


def _fail(ctx: click.Context, error: BaseException, message: str, code: int) -> None:
    """Print one line and exit with ``code``; with ``--debug``, re-raise ``error`` instead."""
    if ctx.find_root().params.get("debug"):
        raise error
    click.echo(message, err=True)
    ctx.exit(code)
