"""``facebench serve``: a scoring service for test sets whose ground truth never leaves the server.

- :mod:`~facebench.serve.db`: the tables (teams, hashed tokens, test sets, submissions = the job
  queue), the engine (SQLite by default, any SQLAlchemy URL) and the migrations (alembic);
- :mod:`~facebench.serve.tokens`: API tokens (random, shown once, stored as SHA-256);
- :mod:`~facebench.serve.jobs`: the database as the job queue (claim with a lease, heartbeat,
  finish; a job whose worker died is claimed again when its lease expires);
- :mod:`~facebench.serve.intake`: an upload streamed to disk with a size limit, zip checks,
  validation (the report of ``facebench submission validate``), one row per accepted upload;
- :mod:`~facebench.serve.worker`: the scoring worker process;
- :mod:`~facebench.serve.app`: the HTTP API and the leaderboard page (FastAPI/Starlette);
- :mod:`~facebench.serve.runner`: the server process (uvicorn + supervised workers).

Needs the ``serve`` extra (``pip install facebench[serve]``). See docs/serve.md.
"""
