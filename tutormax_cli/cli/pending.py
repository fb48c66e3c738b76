"""`tutormax pending`: what is stuck in the metrics stream."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level `pending` command to `app` (not implemented yet)."""
