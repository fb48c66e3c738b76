"""`tutormax tiers`: Explore tier thresholds (what-if simulations)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Explore tier thresholds (what-if simulations).")
