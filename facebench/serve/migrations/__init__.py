"""Alembic migrations of the service's database (``facebench serve-admin upgrade``)."""
