"""`tutormax pipeline`: Run the validation/enrichment/persistence pipeline on the raw stream."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Run the validation/enrichment/persistence pipeline on the raw stream.",
)
