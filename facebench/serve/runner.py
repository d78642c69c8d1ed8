"""The server process: upgrade the database, register test sets, start supervised workers, serve HTTP.

:func:`serve` binds the socket itself (port 0 picks a free one) and prints
``serving on http://HOST:PORT`` once it accepts connections, starts ``workers`` scoring
processes (:mod:`facebench.serve.worker`) and restarts any that dies (a worker killed
mid-job leaves the job to be claimed again when its lease expires). SIGINT/SIGTERM stop uvicorn,
then the workers (SIGTERM, SIGKILL after 10 s). Jobs live in the database, so a restarted server
resumes the queue where it stopped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from facebench.serve.app import ServeConfig, create_app

__all__ = ["serve", "WorkerPool"]


class WorkerPool:
    """``n`` worker processes, each restarted when it exits (checked every ``interval_s``)."""

    def __init__(self, n: int, db_url: str, data_dir: Path, lease_s: float, job_delay_s: float = 0.0,
                 interval_s: float = 0.5, log=print):
        import os

        self.command = [sys.executable, "-m", "facebench.serve.worker", "--db", db_url, "--data-dir", str(data_dir),
                        "--lease-s", str(lease_s), "--parent", str(os.getpid())]
        if job_delay_s:
            self.command += ["--job-delay", str(job_delay_s)]
        self.n, self.interval_s, self.log = n, interval_s, log
        self.processes: list[subprocess.Popen] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._supervise, daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self.processes = [subprocess.Popen(self.command) for _ in range(self.n)]
        self.thread.start()

    def _supervise(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            for i, process in enumerate(self.processes):
                code = process.poll()
                if code is not None and not self.stop_event.is_set():
                    self.log(f"worker {process.pid} exited ({code}); starting another")
                    self.processes[i] = subprocess.Popen(self.command)
                    self.restarts += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 2,
          lease_s: float = 300.0, job_delay_s: float = 0.0, log=print) -> None:
    """Run the service until SIGINT/SIGTERM (the database must be upgraded, test sets registered)."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made once "serving on" is printed wait in the backlog, never refused
    bound_port = sock.getsockname()[1]
    pool = WorkerPool(workers, config.db_url, config.data_dir, lease_s, job_delay_s, log=log)

    def announce() -> None:
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        log(f"serving on http://{shown}:{bound_port} ({workers} scoring workers; data in {config.data_dir})")

    app = create_app(config, on_ready=announce)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))

    pool.start()
    try:
        server.run(sockets=[sock])
    finally:
        pool.stop()
        sock.close()
