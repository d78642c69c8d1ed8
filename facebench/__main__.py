"""``python -m facebench`` runs the CLI."""

from facebench.cli import main

main()
