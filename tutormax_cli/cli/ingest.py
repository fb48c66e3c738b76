"""`tutormax ingest`: Validate and load TutorMax files (CSV, JSONL, Parquet) into the database."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Validate and load TutorMax files (CSV, JSONL, Parquet) into the database.",
)
