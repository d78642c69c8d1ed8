"""Concurrency and crash safety of the leaderboard's locked upsert (``leaderboard/table.py``).

1. ``--writers N`` processes each upsert ``--rows`` distinct rows, one call per row, onto one board
   at the same time: every row must be there exactly once, and no lock file may be left behind.
2. ``--kills K`` times: a writer that keeps upserting is killed with SIGKILL at a random moment;
   the board must then parse and hold either the old or the new rows (never a torn file), and the
   next writer must get the lock at once (a leftover lock file never blocks).

Prints the counts and timings. Usage: ``python3 perf/bench_board_concurrency.py --writers 8 --rows 10 --kills 50``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path


def _row(writer: int, k: int) -> dict:
    return {"method": f"w{writer}-r{k}", "protocol": "synthetic", "protocol_version": "1.0", "dataset": "d",
            "n_expected": 1, "n_scored": 1, "completion": 1.0, "shape_mm_mean": float(k)}


def _writer(board: str, writer: int, rows: int) -> None:
    from facebench.leaderboard.table import upsert_rows

    for k in range(rows):
        upsert_rows(board, [_row(writer, k)])


def _forever(board: str, writer: int, ready) -> None:
    from facebench.leaderboard.table import upsert_rows

    ready.set()  # imported: the kill lands among upserts, not during start-up
    k = 0
    while True:
        upsert_rows(board, [_row(writer, k)])
        k += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from facebench.leaderboard.table import BOARD_CSV, LOCK_FILE, read_board, upsert_rows

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        board = Path(tmp) / "board"
        start = time.perf_counter()
        procs = [ctx.Process(target=_writer, args=(str(board), w, args.rows)) for w in range(args.writers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - start
        frame = read_board(board / BOARD_CSV)
        expected = {f"w{w}-r{k}" for w in range(args.writers) for k in range(args.rows)}
        counts = frame["method"].value_counts()
        exactly_once = set(counts.index) == expected and bool((counts == 1).all())
        print(f"parallel: {args.writers} writers x {args.rows} upserts in {elapsed:.2f} s; "
              f"{len(frame)} rows, expected {len(expected)}; every row exactly once: {exactly_once}; "
              f"exit codes {sorted({p.exitcode for p in procs})}; lock file left: {(board / LOCK_FILE).exists()}")

        rng = random.Random(args.seed)
        torn = blocked = 0
        worst_wait = 0.0
        for _ in range(args.kills):
            before = set(read_board(board / BOARD_CSV)["method"])
            ready = ctx.Event()
            p = ctx.Process(target=_forever, args=(str(board), 1000 + rng.randrange(10**6), ready))
            p.start()
            ready.wait(120)
            time.sleep(rng.uniform(0.0, 0.4))  # a few upserts (each ~30-100 ms), killed at a random moment
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            try:
                after = set(read_board(board / BOARD_CSV)["method"])
                torn += not before <= after
            except Exception as error:  # noqa: BLE001 (a torn board is what is measured)
                torn += 1
                print(f"  torn board: {error}")
            t0 = time.perf_counter()
            try:
                upsert_rows(board, [_row(-1, 0)], timeout_s=5.0)
            except Exception as error:  # noqa: BLE001
                blocked += 1
                print(f"  next writer blocked: {error}")
            worst_wait = max(worst_wait, time.perf_counter() - t0)
        print(f"kill -9: {args.kills} writers killed at random moments; torn boards: {torn}; next writer blocked: "
              f"{blocked}; slowest next upsert {worst_wait * 1000:.0f} ms; rows now {len(read_board(board / BOARD_CSV))}")
        return 0 if exactly_once and not torn and not blocked else 1


if __name__ == "__main__":
    sys.exit(main())
