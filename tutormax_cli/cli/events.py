"""`tutormax events`: Put entries on the session streams (publish, replay)."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="Put entries on the session streams (publish, replay)."
)
