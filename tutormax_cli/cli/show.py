"""`tutormax show`: one tutor's metrics across windows, side by side."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import UnknownTutor

app = typer.Typer(no_args_is_help=True, help="Look at computed metrics.")

METRIC_LABELS = {
    "sessions_scheduled": "Sessions scheduled",
    "sessions_completed": "Sessions completed",
    "avg_rating": "Average rating",
    "first_sessions_count": "First sessions",
    "first_session_success_rate": "First-session success %",
    "reschedule_count": "Tutor reschedules",
    "reschedule_rate": "Reschedule rate %",
    "no_show_count": "No-shows",
    "no_show_rate": "No-show rate %",
    "engagement_score": "Engagement score",
    "learning_objectives_met_pct": "Objectives met %",
    "response_time_avg_minutes": "Avg response (min)",
}


def tutor_document(rows: list[dict[str, Any]], tiers_file: Path | None) -> dict[str, Any]:
    """The JSON document of `show tutor`: windows keyed by name, each with its flags."""
    from tutormax_cli.metrics.tiers import FLAGGED_METRICS, load_tiers

    rules = load_tiers(tiers_file)
    now = datetime.now(UTC)
    windows: dict[str, Any] = {}
    for row in rows:
        flags = {}
        for metric in FLAGGED_METRICS:
            th = rules.threshold(metric)
            flag = th.flag_of(row[metric])
            flags[metric] = {"flag": flag, "rule": th.describe(flag) if flag else None}
        windows[row["window"]] = {
            **{k: v for k, v in row.items() if k not in ("tutor_id", "window")},
            "age_s": round((now - row["updated_at"]).total_seconds(), 1),
            "flags": flags,
        }
    first = rows[0]
    return {
        "tutor_id": first["tutor_id"],
        "metric_date": first["metric_date"],
        "as_of": max(r["calculation_date"] for r in rows),
        "windows": {w: windows[w] for w in ("7day", "30day", "90day") if w in windows},
    }


@app.command("tutor")
def tutor(
    ctx: typer.Context,
    tutor_id: str = typer.Argument(..., help="The tutor's id."),
    tiers_file: Path | None = typer.Option(
        None, "--tiers", help="Judge flags by this TOML thresholds file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The latest 7/30/90-day metrics of one tutor, each flag with the threshold behind it.

    Example: tutormax show tutor T0001 --json
    """
    from rich.table import Table

    from tutormax_cli.store.query import latest_for_tutor

    engine = context.database(ctx)
    with engine.connect() as conn:
        rows = latest_for_tutor(conn, tutor_id).to_dicts()
    if not rows:
        raise UnknownTutor(
            f"no metrics for tutor {tutor_id!r}: check the id, or run `tutormax recompute`"
        )
    doc = tutor_document(rows, tiers_file)
    if as_json:
        context.print_json(doc)
        return
    windows = doc["windows"]
    table = Table(
        title=f"Tutor {doc['tutor_id']} — metric date {doc['metric_date']}",
        caption=f"as of {doc['as_of']:%Y-%m-%d %H:%M:%S}Z; age "
        + ", ".join(f"{w} {render.age(d['age_s'])}" for w, d in windows.items()),
    )
    table.add_column("metric")
    for window in windows:
        table.add_column(window, justify="right")
    table.add_row("Tier", *[render.tier(d["performance_tier"]) for d in windows.values()])
    for metric, label in METRIC_LABELS.items():
        cells = []
        for d in windows.values():
            flag = d["flags"].get(metric)
            cells.append(
                render.flagged(d[metric], flag["flag"], flag["rule"])
                if flag
                else render.number(d[metric])
            )
        table.add_row(label, *cells)
    render.out.print(table)
