"""Scoring: protocols, submission I/O and validation, alignment (landmarks + ICP), metrics, scoring."""
