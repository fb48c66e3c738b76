"""The operator's views of computed metrics, as frames and plain data: the leaderboard, the tier
distribution against a week earlier, one tutor's document with its trends and the reasons for
its tier, and what-if tiers under other thresholds.

Pure functions of frames read by `store.query`, or of the same rows as dicts where a CLI
command reads only a handful (`show tutor`, `show tiers`, `status`, the top of `show tutors`):
those paths never import polars, which would cost a whole process more than its reads. No
database, no clock (`now` is an argument), no rendering. The CLI draws them; the tests compare
them with the rows they came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tutormax_cli.errors import UsageError
from tutormax_cli.metrics.columns import METRIC_COLUMNS
from tutormax_cli.metrics.tiers import FLAGGED_METRICS, TIER_NAMES, TierRules
from tutormax_cli.metrics.windows import WINDOWS

if TYPE_CHECKING:
    import polars as pl

Rows = Sequence[dict[str, Any]]
"""Rows as dicts, as `pl.DataFrame.to_dicts()` gives them (`store.query`'s `*_dicts`)."""

METRICS = tuple(
    name
    for name in METRIC_COLUMNS
    if name not in ("tutor_id", "window", "metric_date", "calculation_date", "performance_tier")
)
"""The metric columns, in contract order."""

TREND_DAYS = 30


def tier_rank(column: str = "performance_tier") -> pl.Expr:
    """0 for Exemplary … 4 for At Risk, 5 for a tier name this code does not know."""
    import polars as pl

    return (
        pl.col(column)
        .replace_strict(list(TIER_NAMES), list(range(len(TIER_NAMES))), default=len(TIER_NAMES))
        .cast(pl.Int32)
    )


def tier_names(given: list[str] | None) -> list[str] | None:
    """Tier names as typed (any case, e.g. `at risk`) spelled as stored, or a usage error that
    lists them."""
    if not given:
        return None
    canonical = {name.lower(): name for name in TIER_NAMES}
    out = []
    for name in given:
        if name.strip().lower() not in canonical:
            raise UsageError(f"unknown tier {name!r}: use one of {', '.join(TIER_NAMES)}")
        out.append(canonical[name.strip().lower()])
    return out


# -- leaderboard ------------------------------------------------------------------------------


def check_sort(sort: str | None) -> None:
    """A usage error naming the sortable columns unless `sort` is one of them (or None)."""
    if sort is not None and sort not in (*METRICS, "tutor_id", "performance_tier"):
        raise UsageError(f"cannot sort by {sort!r}: use one of {', '.join(METRICS)}")


def leaderboard(
    latest: pl.DataFrame,
    *,
    tiers: list[str] | None = None,
    sort: str | None = None,
    descending: bool = False,
    limit: int | None = None,
) -> pl.DataFrame:
    """Tutors of one window's latest rows, ranked. By default best tier first, then higher
    average rating, more completed sessions; `sort` orders by one metric instead (nulls last,
    ties by tutor_id). `tiers` keeps only those tiers."""
    import polars as pl

    check_sort(sort)
    df = latest
    if tiers:
        df = df.filter(pl.col("performance_tier").is_in(tiers))
    if sort is None:
        df = df.sort(
            [tier_rank(), "avg_rating", "sessions_completed", "tutor_id"],
            descending=[descending, not descending, not descending, False],
            nulls_last=True,
        )
    elif sort == "performance_tier":
        df = df.sort([tier_rank(), "tutor_id"], descending=[descending, False])
    else:
        df = df.sort([sort, "tutor_id"], descending=[descending, False], nulls_last=True)
    if limit is not None:
        df = df.head(limit)
    return df.with_row_index("rank", offset=1)


def numbered(board: Rows) -> list[dict[str, Any]]:
    """A board's rows, already in their order (`store.query.leaderboard_dicts` reads them in
    `leaderboard`'s default order), with `rank` first from 1, as `leaderboard` numbers them."""
    return [{"rank": i, **r} for i, r in enumerate(board, start=1)]


def leaderboard_records(board: pl.DataFrame | Rows) -> list[dict[str, Any]]:
    """The JSON objects of `show tutors --json`, from a board's frame or its rows."""
    cols = ["tutor_id", "window", "metric_date", "calculation_date", *METRICS, "performance_tier"]
    if isinstance(board, Sequence):
        return [{c: r[c] for c in cols if c in r} for r in board]
    return board.select([c for c in cols if c in board.columns]).to_dicts()


# -- tier distribution ------------------------------------------------------------------------


TierCounts = Mapping[str, int]
"""Tutors per tier name, as `store.query.tier_counts` reads them."""


def tier_counts(latest: pl.DataFrame) -> dict[str, int]:
    """Tutors per tier among latest rows held in a frame."""
    now = latest.group_by("performance_tier").len()
    return {str(t): int(n) for t, n in zip(now["performance_tier"], now["len"], strict=True)}


def tier_distribution_rows(
    current: TierCounts | pl.DataFrame, earlier: TierCounts | pl.DataFrame | None
) -> list[dict[str, Any]]:
    """Tutors per tier (best first) with their share, and the change against `earlier` (the
    latest rows as they stood a week before; None when there is no history that old). Either
    is counts per tier (`store.query.tier_counts`) or the latest rows themselves."""
    counts = dict(current) if isinstance(current, Mapping) else tier_counts(current)
    before: dict[str, int] | None = None
    if earlier is not None:
        before = dict(earlier) if isinstance(earlier, Mapping) else tier_counts(earlier)
    names = list(TIER_NAMES) + sorted(set(counts) - set(TIER_NAMES))
    total = max(sum(counts.values()), 1)
    rows = []
    for name in names:
        n = int(counts.get(name, 0))
        was = None if before is None else int(before.get(name, 0))
        change = None if was is None else n - was
        share = round(100 * n / total, 1)
        rows.append(
            {"tier": name, "tutors": n, "share_pct": share, "earlier": was, "change": change}
        )
    return rows


def tier_distribution(
    current: TierCounts | pl.DataFrame, earlier: TierCounts | pl.DataFrame | None
) -> pl.DataFrame:
    """`tier_distribution_rows` as a frame."""
    import polars as pl

    return pl.DataFrame(
        tier_distribution_rows(current, earlier),
        schema={
            "tier": pl.String,
            "tutors": pl.Int64,
            "share_pct": pl.Float64,
            "earlier": pl.Int64,
            "change": pl.Int64,
        },
    )


# -- freshness -------------------------------------------------------------------------------


def freshness(latest: pl.DataFrame | Rows, now: datetime) -> dict[str, dict[str, Any]]:
    """Per window, over the active tutors' newest rows: how many, and the age of the newest and
    the oldest `calculation_date` among them. `latest` is `store.query.active_freshness`'s
    summary (`window`, `tutors`, `newest`, `oldest`; a frame, or its rows as from
    `active_freshness_dicts`) or the rows (`window`, `calculation_date`) in a frame, which are
    summarized the same way here."""
    if not isinstance(latest, Sequence):
        if "tutors" not in latest.columns:
            import polars as pl

            calc = pl.col("calculation_date").drop_nulls()
            latest = latest.group_by("window").agg(
                tutors=calc.len(), newest=calc.max(), oldest=calc.min()
            )
        latest = latest.to_dicts()
    by_window = {r["window"]: r for r in latest}
    out: dict[str, dict[str, Any]] = {}
    for window in WINDOWS:
        row = by_window.get(window) or {}
        newest: datetime | None = row.get("newest")
        oldest: datetime | None = row.get("oldest")
        out[window] = {
            "tutors": int(row.get("tutors") or 0),
            "newest": newest,
            "oldest": oldest,
            "newest_age_s": None if newest is None else round((now - newest).total_seconds(), 1),
            "oldest_age_s": None if oldest is None else round((now - oldest).total_seconds(), 1),
        }
    return out


# -- one tutor --------------------------------------------------------------------------------


def flags_of(row: dict[str, Any], rules: TierRules) -> dict[str, dict[str, Any]]:
    """Per flagged metric: `flag` (green/red/None) and the `rule` it met."""
    out = {}
    for metric in FLAGGED_METRICS:
        th = rules.threshold(metric)
        flag = th.flag_of(row.get(metric))
        out[metric] = {"flag": flag, "rule": th.describe(flag) if flag else None}
    return out


def tutor_document(rows: list[dict[str, Any]], rules: TierRules, now: datetime) -> dict[str, Any]:
    """The JSON document of `show tutor`: windows keyed by name, each with its flags."""
    windows: dict[str, Any] = {}
    for row in rows:
        windows[row["window"]] = {
            **{k: v for k, v in row.items() if k not in ("tutor_id", "window")},
            "age_s": round((now - row["updated_at"]).total_seconds(), 1),
            "flags": flags_of(row, rules),
        }
    first = rows[0]
    return {
        "tutor_id": first["tutor_id"],
        "metric_date": first["metric_date"],
        "as_of": max(r["calculation_date"] for r in rows),
        "windows": {w: windows[w] for w in WINDOWS if w in windows},
    }


def trend(history: pl.DataFrame | Rows, window: str, days: int = TREND_DAYS) -> dict[str, Any]:
    """Each metric's value on each of the last `days` calendar days up to the newest snapshot
    of `window` (null where a day has no row), oldest first. `history` is a tutor's daily rows,
    in a frame or as dicts."""
    records = history if isinstance(history, Sequence) else history.to_dicts()
    rows = [r for r in records if r["window"] == window]
    if not rows:
        return {"window": window, "dates": [], "metrics": {m: [] for m in METRICS}}
    last: date = max(r["metric_date"] for r in rows)
    dates = [last - timedelta(days=days - 1 - i) for i in range(days)]
    by_date = {r["metric_date"]: r for r in rows}
    return {
        "window": window,
        "dates": dates,
        "metrics": {m: [by_date.get(d, {}).get(m) for d in dates] for m in METRICS},
        "tiers": [by_date.get(d, {}).get("performance_tier") for d in dates],
    }


@dataclass(frozen=True)
class Explanation:
    """Why a tutor's row has its tier: the flags, the rule that matched, and the sessions of the
    window that weighed most."""

    window: str
    tier: str | None
    rule: str
    greens: list[str]
    reds: list[str]
    decisive: list[str]
    flags: dict[str, dict[str, Any]]
    sessions: dict[str, list[dict[str, Any]]]
    counts: dict[str, int]
    stored_tier_differs: bool

    def as_dict(self) -> dict[str, Any]:
        """The `explain` object of `show tutor --explain --json`."""
        return {
            "window": self.window,
            "tier": self.tier,
            "rule": self.rule,
            "green": self.greens,
            "red": self.reds,
            "decisive": self.decisive,
            "flags": self.flags,
            "sessions": self.sessions,
            "counts": self.counts,
            "stored_tier_differs": self.stored_tier_differs,
        }


def _rule_text(tier: str, greens: int, reds: int, rules: TierRules) -> str:
    if tier == "Exemplary":
        return f"{greens} green flags (≥ {rules.exemplary_min_green}) and no red → Exemplary"
    if tier == "At Risk":
        return f"{reds} red flags (≥ {rules.at_risk_min_red}) → At Risk"
    if tier == "Needs Attention":
        return (
            f"{reds} red flag{'s' if reds != 1 else ''} "
            f"(≥ {rules.needs_attention_min_red}, < {rules.at_risk_min_red}) → Needs Attention"
        )
    if tier == "Strong":
        return f"{greens} green flags (≥ {rules.strong_min_green}) and no red → Strong"
    return f"{greens} green flag{'s' if greens != 1 else ''} and no red → Developing"


WEIGHTY_RATING = 3
"""Ratings at or below this are listed among the sessions that weighed on a tier."""


def weighty_sessions(sessions: pl.DataFrame, limit: int = 5) -> dict[str, pl.DataFrame]:
    """The sessions that pulled a tutor's metrics down: no-shows, reschedules and rated first
    sessions below 4 (newest first), and the lowest ratings (≤ 3, lowest first)."""
    import polars as pl

    from tutormax_cli.metrics.partials import FIRST_SESSION_NUMBER, SUCCESS_RATING

    newest = pl.col("scheduled_start")
    return {
        "no_shows": sessions.filter(pl.col("no_show")).sort(newest, descending=True),
        "lowest_ratings": sessions.filter(pl.col("overall_rating") <= WEIGHTY_RATING).sort(
            ["overall_rating", "scheduled_start"], descending=[False, True]
        ),
        "reschedules": sessions.filter(pl.col("tutor_initiated_reschedule")).sort(
            newest, descending=True
        ),
        "failed_first_sessions": sessions.filter(
            (pl.col("session_number") == FIRST_SESSION_NUMBER)
            & (pl.col("overall_rating") < SUCCESS_RATING)
        ).sort(newest, descending=True),
    }


def explain(
    row: dict[str, Any], sessions: pl.DataFrame, rules: TierRules, limit: int = 5
) -> Explanation:
    """The flags and rule behind `row`'s tier, and the window's weightiest sessions (`limit`
    of each kind, with the full counts)."""
    flags = {m: {"value": row.get(m), **f} for m, f in flags_of(row, rules).items()}
    greens = [m for m, f in flags.items() if f["flag"] == "green"]
    reds = [m for m, f in flags.items() if f["flag"] == "red"]
    tier = rules.tier_of(len(greens), len(reds))
    decisive = reds if reds else greens if tier in ("Exemplary", "Strong") else []
    picked = weighty_sessions(sessions, limit)
    return Explanation(
        window=row["window"],
        tier=row.get("performance_tier"),
        rule=_rule_text(tier, len(greens), len(reds), rules),
        greens=greens,
        reds=reds,
        decisive=decisive,
        flags=flags,
        sessions={k: df.head(limit).to_dicts() for k, df in picked.items()},
        counts={"sessions": sessions.height, **{k: df.height for k, df in picked.items()}},
        stored_tier_differs=tier != row.get("performance_tier"),
    )


def window_bounds(row: dict[str, Any]) -> tuple[datetime, datetime]:
    """The [start, end) instants a row's window covered (docs/metrics.md §2)."""
    end: datetime = row["calculation_date"]
    return end - timedelta(days=WINDOWS[row["window"]]), end


# -- what-if tiers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    """The tier distribution now and under other rules, and the tutors who would move."""

    window: str
    distribution: pl.DataFrame
    moves: pl.DataFrame

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `tiers simulate --json`."""
        return {
            "window": self.window,
            "tutors": int(self.distribution["current"].sum()),
            "distribution": self.distribution.to_dicts(),
            "moves": self.moves.to_dicts(),
        }


def simulate(latest: pl.DataFrame, rules: TierRules, window: str) -> Simulation:
    """Recompute the tier of each latest row under `rules` (tiers are a pure function of the
    stored, rounded metrics) and compare with the stored tier. Nothing is written."""
    import polars as pl

    from tutormax_cli.metrics.tiers import tier_expr

    df = latest.select(
        "tutor_id",
        pl.col("performance_tier").alias("current"),
        tier_expr(rules).alias("simulated"),
    ).with_columns(tier_rank("current").alias("_from"), tier_rank("simulated").alias("_to"))
    names = list(TIER_NAMES) + sorted(set(df["current"].drop_nulls()) - set(TIER_NAMES))
    cur = dict(df.group_by("current").len().iter_rows())
    sim = dict(df.group_by("simulated").len().iter_rows())
    dist = pl.DataFrame(
        [(n, cur.get(n, 0), sim.get(n, 0), sim.get(n, 0) - cur.get(n, 0)) for n in names],
        schema={"tier": pl.String, "current": pl.Int64, "simulated": pl.Int64, "change": pl.Int64},
        orient="row",
    )
    moves = (
        df.filter(pl.col("current") != pl.col("simulated"))
        .with_columns(
            pl.when(pl.col("_to") < pl.col("_from"))
            .then(pl.lit("up"))
            .otherwise(pl.lit("down"))
            .alias("direction")
        )
        .sort(["_from", "_to", "tutor_id"])
        .select("tutor_id", "current", "simulated", "direction")
    )
    return Simulation(window, dist, moves)
