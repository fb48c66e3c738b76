"""The tier-change feed: detected in the writer's transaction, published after the commit, read
back by `show changes` (stream and daily rows) and `watch --changes`."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.helpers import T, sample, stored_metrics
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.metrics.tiers import load_tiers
from tutormax_cli.recompute import RecomputeRequest, recompute_as_of, run
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events, tier_changes
from tutormax_cli.stream.producer import publish

STRICT = "[thresholds.avg_rating]\ngreen = 5.1\nred = 5.0\n"
"""Every rating is below 5.0: each tutor with feedback earns a red flag, so tiers move."""


@pytest.fixture
def strict(tmp_path: Path) -> Path:
    path = tmp_path / "strict.toml"
    path.write_text(STRICT, encoding="utf-8")
    return path


def _tiers(engine: sa.Engine) -> dict[tuple[str, str], str]:
    rows = stored_metrics(engine).sort("metric_date")
    return {(r["tutor_id"], r["window"]): r["performance_tier"] for r in rows.iter_rows(named=True)}


def test_recompute_detects_exactly_the_rows_whose_tier_moved(
    engine: sa.Engine, strict: Path
) -> None:
    save_tables(engine, sample(tutors=15))
    first, _ = recompute_as_of(engine, T)
    assert first.changes == [] and first.rows_changed == 45  # nothing to change from
    before = _tiers(engine)
    again, _ = recompute_as_of(engine, T)
    assert again.changes == [] and again.rows_changed == 0  # same instant, same rows
    later = T + timedelta(hours=5)
    result, _ = recompute_as_of(engine, later, tiers=load_tiers(strict), source="sweep")
    after = _tiers(engine)
    moved = {k for k in before if before[k] != after[k]}
    assert moved, "the strict rules must move some tier"
    assert {(c.tutor_id, c.window) for c in result.changes} == moved
    for change in result.changes:
        key = (change.tutor_id, change.window)
        assert (change.from_tier, change.to_tier) == (before[key], after[key])
        assert change.source == "sweep" and change.as_of == later
        assert set(change.metrics) >= {"avg_rating", "no_show_count", "engagement_score"}
    assert result.tier_changes == len(moved)


def test_a_chunked_run_announces_each_chunks_changes_once_committed(
    engine: sa.Engine, strict: Path
) -> None:
    """Chunks are written several at once on PostgreSQL (one after the other on SQLite): every
    chunk's tier changes still reach `on_changes` once, after its commit, and the counts add up."""
    save_tables(engine, sample(tutors=15))
    recompute_as_of(engine, T)
    before = _tiers(engine)
    seen: list[tier_changes.TierChange] = []
    visible: list[bool] = []

    def announce(changes: list[tier_changes.TierChange]) -> None:
        now = _tiers(engine)  # read on another connection: only committed rows
        visible.append(all(now[(c.tutor_id, c.window)] == c.to_tier for c in changes))
        seen.extend(changes)

    later = T + timedelta(hours=5)
    req = RecomputeRequest(as_of=later, tiers=load_tiers(strict), chunk_size=4)
    result = run(engine, req, on_changes=announce)
    after = _tiers(engine)
    moved = {k for k in before if before[k] != after[k]}
    assert result.chunks == 4 and moved
    assert sorted((c.tutor_id, c.window) for c in seen) == sorted(moved)  # each change once
    assert visible and all(visible)  # announced only once committed
    assert result.tier_changes == len(moved) and result.rows_changed >= len(moved)


def test_a_backfill_of_past_days_is_history_not_a_change(engine: sa.Engine, strict: Path) -> None:
    save_tables(engine, sample(tutors=8))
    recompute_as_of(engine, T - timedelta(days=1))  # rows of 2026-03-01 ...
    recompute_as_of(engine, T)  # ... and the current ones (metric_date 2026-03-02)
    req = RecomputeRequest(
        since=(T - timedelta(days=3)).date(),
        until=(T - timedelta(days=2)).date(),  # 2026-03-01 rewritten with other tiers
        tiers=load_tiers(strict),
    )
    seen: list[tier_changes.TierChange] = []
    result = run(engine, req, on_changes=seen.extend)
    assert 0 < result.rows_changed <= result.rows  # unchanged rows are not rewritten
    assert seen == [] and result.tier_changes == 0  # older than each tutor's newest row


def test_worker_publishes_changes_and_counts_them(engine: sa.Engine, rclient: redis.Redis,
                                                  strict: Path) -> None:  # fmt: skip
    from tests.test_worker import FakeClock, make_worker

    tables = sample(tutors=6)
    save_tables(engine, tables)
    recompute_as_of(engine, T - timedelta(hours=1))
    before = _tiers(engine)
    worker = make_worker(
        rclient, engine, FakeClock(), debounce=0, max_wait=0, burst=True, tiers=load_tiers(strict)
    )
    publish(rclient, keys.ENRICHMENT_STREAM, [events.flat(t) for t in tables["tutors"]["tutor_id"]])
    worker.run()
    after = _tiers(engine)
    moved = {k for k in before if before[k] != after[k]}
    feed = tier_changes.recent(rclient)
    assert moved and {(c.tutor_id, c.window) for c in feed} == moved
    assert {c.source for c in feed} == {"worker"}
    counted = sum(
        s.value
        for m in worker.metrics.registry.collect()
        if m.name == "tutormax_worker_tier_changes"
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert counted == len(moved)


def _cli(db_url: str, redis_url: str, *args: str) -> object:
    return CliRunner().invoke(
        app, ["--database-url", db_url, "--redis-url", redis_url, *args], catch_exceptions=False
    )


def test_show_changes_from_the_feed_and_from_history(
    engine: sa.Engine, db_url: str, rclient: redis.Redis, redis_url: str, strict: Path
) -> None:
    save_tables(engine, sample(tutors=10))
    day1 = T - timedelta(days=1)  # rows of 2026-03-01 …
    recompute_as_of(engine, day1)
    result, _ = recompute_as_of(engine, T, tiers=load_tiers(strict))  # … then of 2026-03-02
    assert result.changes
    # nothing on the stream: the daily rows tell the history
    out = _cli(db_url, redis_url, "show", "changes", "--since", "2026-03-01T12:00Z", "--json")
    assert out.exit_code == 0, out.output  # type: ignore[attr-defined]
    history = json.loads(out.stdout)  # type: ignore[attr-defined]
    assert {(c["tutor_id"], c["window"], c["from"], c["to"]) for c in history} == {
        (c.tutor_id, c.window, c.from_tier, c.to_tier) for c in result.changes
    }
    assert {c["source"] for c in history} == {"history"}
    # on the stream: what it holds, newest first, filtered
    tier_changes.publish(rclient, result.changes)
    target = result.changes[0].to_tier
    out = _cli(db_url, redis_url, "show", "changes", "--since", "1h", "--to", target.lower(),
               "--window", "30day", "--json")  # fmt: skip
    listed = json.loads(out.stdout)  # type: ignore[attr-defined]
    want = [c for c in result.changes if c.to_tier == target and c.window == "30day"]
    assert [(c["tutor_id"], c["source"]) for c in listed] == [
        (c.tutor_id, "worker") for c in reversed(want)
    ]
    assert all(c["id"] for c in listed)
    text = _cli(db_url, redis_url, "show", "changes", "--since", "1h")
    assert text.exit_code == 0 and "→" in text.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize("since", ["yesterday", "5x", ""])
def test_show_changes_refuses_a_bad_since(sqlite_url: str, redis_url: str, since: str) -> None:
    out = CliRunner().invoke(
        app, ["--database-url", sqlite_url, "--redis-url", redis_url, "show", "changes",
              "--since", since],
    )  # fmt: skip
    assert out.exit_code == 2
    assert f"--since: {since!r} is neither an ISO-8601 time" in out.stderr


@pytest.mark.parametrize(
    ("since", "message"),
    [
        # were `unexpected OverflowError: date value out of range` (exit 1)
        ("99999999d", "--since: '99999999d' reaches back before 0001-01-01: use a shorter "
                      "duration or an ISO-8601 time"),
        ("0001-01-01T00:00:00+05:00",
         "--since: '0001-01-01T00:00:00+05:00' is outside 0001-01-01 … 9999-12-31 in UTC"),
    ],
)  # fmt: skip
def test_show_changes_refuses_a_since_out_of_range(
    sqlite_url: str, redis_url: str, since: str, message: str
) -> None:
    out = CliRunner().invoke(
        app, ["--database-url", sqlite_url, "--redis-url", redis_url, "show", "changes",
              "--since", since],
    )  # fmt: skip
    assert (out.exit_code, out.stderr) == (2, f"Error: {message}\n")


def test_show_changes_since_before_1970_reads_the_feed_from_its_start(
    sqlite_url: str, rclient: redis.Redis, redis_url: str
) -> None:
    """A stream id is milliseconds since 1970: a start before it was a negative id, which
    Redis refused (`Invalid stream ID`, exit 1)."""
    upgrade(open_engine(sqlite_url))
    change = tier_changes.TierChange("T1", "7day", "Strong", "At Risk", T, "sweep", {"x": 1})
    tier_changes.publish(rclient, [change])
    for since in ("1900-01-01", "30000d"):
        out = CliRunner().invoke(
            app, ["--database-url", sqlite_url, "--redis-url", redis_url, "show", "changes",
                  "--since", since, "--json"],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        assert [c["tutor_id"] for c in json.loads(out.stdout)] == ["T1"]


def test_watch_changes_follows_the_feed(
    sqlite_url: str, rclient: redis.Redis, redis_url: str
) -> None:
    change = tier_changes.TierChange("T1", "7day", "Strong", "At Risk", T, "sweep", {"x": 1})
    tier_changes.publish(rclient, [change, change])
    out = CliRunner().invoke(
        app, ["--database-url", sqlite_url, "--redis-url", redis_url, "watch", "--changes",
              "--from", "0", "--count", "2", "--json", "--timeout", "5"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(x["tutor_id"], x["from"], x["to"], x["source"]) for x in lines] == [
        ("T1", "Strong", "At Risk", "sweep")
    ] * 2


def test_recompute_cli_publishes_and_a_rerun_changes_nothing(
    engine: sa.Engine, db_url: str, rclient: redis.Redis, redis_url: str, strict: Path
) -> None:
    save_tables(engine, sample(tutors=8))
    args = ["recompute", "--since", "2026-02-25", "--until", "2026-03-02"]
    first = _cli(db_url, redis_url, *args)
    assert first.exit_code == 0 and "(144 new or changed" in first.stdout  # type: ignore[attr-defined]
    rerun = _cli(db_url, redis_url, *args)
    assert "(0 new or changed, 0 tier changes)" in rerun.stdout  # type: ignore[attr-defined]
    moved = _cli(db_url, redis_url, "recompute", "--as-of", "2026-03-03T00:00Z",
                 "--tiers", str(strict), "--json")  # fmt: skip
    payload = json.loads(moved.stdout)  # type: ignore[attr-defined]
    feed = tier_changes.recent(rclient)
    assert payload["tier_changes"] == len(feed) > 0
    assert {c.source for c in feed} == {"recompute"}
    assert pl.DataFrame([c.as_dict() for c in feed])["window"].n_unique() >= 1
