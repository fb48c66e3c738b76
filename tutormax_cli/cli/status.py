"""`tutormax status`: one screen of health for the on-call."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level `status` command to `app` (not implemented yet)."""
