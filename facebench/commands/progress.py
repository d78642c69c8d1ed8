"""Progress bars of the commands, with an estimate of the remaining time also in logs.

On a terminal, :func:`progress_bar` is a plain tqdm bar (rate, elapsed, remaining time). When
stderr is not a terminal (a log file, CI, ``nohup``), tqdm would stay silent; here, once a bar has
run for :data:`QUIET_S` seconds, it prints one plain line at most every :data:`INTERVAL_S` seconds
(``rendering:  40%|... | 400/1000 [01:02<01:33, 6.4img/s]``: done/total, elapsed<remaining), so
a command that runs longer than a minute says how long its current stage has left; shorter bars print
nothing. ``train regressor`` also prints the whole run's remaining time after each epoch.
"""

from __future__ import annotations

import sys
import time

#: Seconds a bar stays silent in a log (runs shorter than this print nothing).
QUIET_S = 30.0
#: Seconds between two lines of a bar in a log.
INTERVAL_S = 30.0


class _LineWriter:
    """A file for tqdm that turns its carriage-return refreshes into whole lines, and drops them
    during the first :data:`QUIET_S` seconds."""

    def __init__(self, stream):
        self.stream = stream
        self.start = time.monotonic()

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()
        if text and time.monotonic() - self.start >= QUIET_S:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args, **kwargs):
    """``tqdm(*args, **kwargs)``; with ``disable=None`` (the commands' choice) and stderr not a
    terminal, a bar that prints a line every :data:`INTERVAL_S` seconds after :data:`QUIET_S`."""
    from tqdm import tqdm

    stream = sys.stderr
    if kwargs.get("disable", False) is None and not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.update(disable=False, file=_LineWriter(stream), mininterval=INTERVAL_S, dynamic_ncols=False, ncols=100)
    return tqdm(*args, **kwargs)
