"""`tutormax dlq`: Inspect, replay and purge the dead-letter stream."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect, replay and purge the dead-letter stream.")
