"""Rich renderings of the metric views (`show tutor`, `show tutors`, `show tiers`): tables,
flags, trends and explanations, kept apart from the commands that parse and fetch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.markup import escape

from tutormax_cli.cli import render

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


def _flag_cell(d: dict[str, Any], metric: str) -> str:
    flag = d["flags"].get(metric)
    if flag:
        return render.flagged(d[metric], flag["flag"], flag["rule"])
    return render.number(d[metric])


def print_tutor(doc: dict[str, Any]) -> None:
    from rich.table import Table

    windows = doc["windows"]
    table = Table(
        title=f"Tutor {escape(doc['tutor_id'])} — metric date {doc['metric_date']}",
        caption=f"as of {doc['as_of']:%Y-%m-%d %H:%M:%S}Z; age "
        + ", ".join(f"{w} {render.age(d['age_s'])}" for w, d in windows.items()),
    )
    table.add_column("metric")
    for window in windows:
        table.add_column(window, justify="right")
    table.add_row("Tier", *[render.tier(d["performance_tier"]) for d in windows.values()])
    for metric, label in METRIC_LABELS.items():
        table.add_row(label, *[_flag_cell(d, metric) for d in windows.values()])
    render.out.print(table)
    _print_trend(doc["trend"])
    if "explain" in doc:
        _print_explain(doc["explain"])


def _print_trend(trend: dict[str, Any]) -> None:
    from rich.table import Table

    if not trend["dates"]:
        return
    table = Table(
        title=f"Trend — {trend['window']} window, daily {trend['dates'][0]} → {trend['dates'][-1]}",
    )
    wide = render.out.width >= 100
    table.add_column("metric", no_wrap=True)
    table.add_column("trend", no_wrap=True)
    for name in ("low", "high", "latest") if wide else ("latest",):
        table.add_column(name, justify="right")
    for metric, label in METRIC_LABELS.items():
        values = trend["metrics"][metric]
        present = [v for v in values if v is not None]
        spread = (
            [render.number(min(present)), render.number(max(present))] if present else ["—"] * 2
        )
        table.add_row(
            label,
            f"[cyan]{render.sparkline(values)}[/]",
            *(spread if wide else []),
            render.number(values[-1]),
        )
    render.out.print(table)


SESSION_KINDS = {
    "no_shows": "No-shows",
    "lowest_ratings": "Lowest ratings (≤ 3)",
    "reschedules": "Tutor reschedules",
    "failed_first_sessions": "First sessions rated below 4",
}


def _print_explain(ex: dict[str, Any]) -> None:
    from rich.table import Table

    render.out.print(
        f"\n[bold]Why {render.tier(ex['tier'])} in the {ex['window']} window:[/] {ex['rule']}"
    )
    if ex["stored_tier_differs"]:
        render.out.print("[yellow]The stored tier was computed under other thresholds.[/]")
    for color, names in (("red", ex["red"]), ("green", ex["green"])):
        for metric in names:
            f = ex["flags"][metric]
            mark = "✗" if color == "red" else "✓"
            strong = "bold " if metric in ex["decisive"] else ""
            value = render.number(f["value"])
            render.out.print(
                f"  [{strong}{color}]{mark} {METRIC_LABELS[metric]} {value} {f['rule']}[/]"
            )
    counts = ex["counts"]
    for kind, title in SESSION_KINDS.items():
        rows = ex["sessions"][kind]
        if not rows:
            continue
        table = Table(
            title=f"{title}: {len(rows)} of {counts[kind]} ({counts['sessions']} sessions)",
            title_justify="left",
        )
        for name in ("session", "scheduled (UTC)", "student", "subject", "rating", "late"):
            table.add_column(name, justify="right" if name in ("rating", "late") else "left")
        for r in rows:
            table.add_row(
                escape(r["session_id"]),
                f"{r['scheduled_start']:%Y-%m-%d %H:%M}",
                escape(r["student_id"] or "—"),
                escape(r["subject"] or "—"),
                render.number(r["overall_rating"]),
                f"{r['late_start_minutes']}m" if r["late_start_minutes"] else "",
            )
        render.out.print(table)


BOARD_COLUMNS = {
    "sessions_completed": "done",
    "avg_rating": "rating",
    "first_session_success_rate": "1st ok%",
    "reschedule_rate": "resch%",
    "no_show_count": "no-shows",
    "engagement_score": "engage",
    "learning_objectives_met_pct": "obj%",
    "response_time_avg_minutes": "resp m",
}
NARROW = ("sessions_completed", "avg_rating", "no_show_count", "reschedule_rate")


def print_leaderboard(board: Iterable[dict[str, Any]], window: str, sort: str | None) -> None:
    from rich.table import Table

    wide = render.out.width >= 120
    metrics = [m for m in BOARD_COLUMNS if wide or m in NARROW or m == sort]
    if sort and sort not in metrics and sort in METRIC_LABELS:
        metrics.append(sort)
    table = Table(title=f"Tutors — {window} window, latest rows", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("tutor")
    table.add_column("tier", no_wrap=True)
    for m in metrics:
        table.add_column(BOARD_COLUMNS.get(m, m), justify="right")
    table.add_column("date")
    for r in board:
        table.add_row(
            str(r["rank"]),
            escape(r["tutor_id"]),
            render.tier(r["performance_tier"]),
            *[render.number(r[m]) for m in metrics],
            f"{r['metric_date']:%m-%d}",
        )
    render.out.print(table)


def print_distribution(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    rows = doc["tiers"]
    since = f" vs {doc['compared_with']}" if doc["compared_with"] else ""
    table = Table(
        title=f"Tiers — {doc['window']} window, {doc['tutors']} tutors, "
        f"metric date {doc['metric_date'] or '—'}{since}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("tier", no_wrap=True)
    table.add_column("", no_wrap=True)
    for name in ("tutors", "share", "7d ago", "change"):
        table.add_column(name, justify="right", no_wrap=True)
    top = max([r["tutors"] for r in rows] + [1])
    width = min(max(render.out.width - 58, 8), 60)
    for r in rows:
        bar = "█" * round(width * r["tutors"] / top) if r["tutors"] else ""
        change = r["change"]
        shown = "—" if change is None else f"{change:+d}" if change else "0"
        style = render.TIER_STYLES.get(r["tier"], "white")
        table.add_row(
            render.tier(r["tier"]),
            f"[{style}]{bar}[/]",
            str(r["tutors"]),
            f"{r['share_pct']:.0f}%",
            "—" if r["earlier"] is None else str(r["earlier"]),
            shown,
        )
    render.out.print(table)
