"""Exceptions that carry a message meant for the person running facebench.

Library code raises these for bad input (a malformed file, an invalid option); the CLI turns
them into one error line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class FacebenchError(Exception):
    """Base class of the errors facebench reports to its user as one line."""


class InputFileError(FacebenchError):
    """A file given by the user is missing, truncated or malformed.

    ``str(error)`` is ``"<path>: <what is wrong>"``.
    """

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class ModelFileError(InputFileError):
    """A face-model file (or folder) cannot be read as the model it claims to be."""


class InvalidInputError(FacebenchError, ValueError):
    """Bad input raised on purpose (an option out of range, a value a file must not hold).

    A ``ValueError`` too, so library callers that catch ``ValueError`` keep working; the CLI maps
    it (like every :class:`FacebenchError`) to one ``error:`` line and exit 2, whereas a plain
    ``ValueError`` is a programming error: ``internal error``, exit 1.
    """
