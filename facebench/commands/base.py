"""What every facebench command group shares: one-line errors and exit codes.

Errors a user can fix print one ``error:`` line and exit 2: only exceptions raised on purpose for
bad input (:class:`facebench.errors.FacebenchError` and its subclasses, e.g. ``InputFileError``,
``InvalidInputError``, an invalid submission) and the operating system's verdict on a path the user
gave (:data:`USER_OS_ERRORS`: not found, exists, permission denied, not a directory...). Everything
else — a plain ``ValueError``, ``KeyError``, ``RuntimeError``, ``MemoryError``, any other
``OSError`` — is a bug or a machine failure, never blamed on the user: one ``internal error:`` line
and exit 1 (``facebench --debug ...`` re-raises with the traceback).
"""

from __future__ import annotations

import os
import sys

import click

from facebench.errors import FacebenchError

EXIT_INVALID_INPUT = 2
EXIT_INTERNAL_ERROR = 1

#: OSErrors that are about a path the user gave (fixable by the user): exit 2.
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


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
        except (FacebenchError, *USER_OS_ERRORS) as error:
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
