"""`tutormax worker`: Run the metrics worker and check its health."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Run the metrics worker and check its health.")
