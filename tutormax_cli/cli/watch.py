"""`tutormax watch`: a live table of metric updates."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level `watch` command to `app` (not implemented yet)."""
