"""End to end: a raw completion on `tutormax:sessions` -> pipeline -> worker -> metrics row."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from typer.testing import CliRunner

from tests.helpers import count_rows, recent_sample
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables


def test_raw_completion_reaches_the_metrics_table(
    sqlite_url: str, redis_url: str, rclient: redis.Redis, tmp_path: Path
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    tables = recent_sample(tutors=2)
    save_tables(engine, {k: v for k, v in tables.items() if k in ("tutors", "students")})
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    good = {
        "session_id": "LIVE-1", "tutor_id": "T0001", "student_id": "S00001",
        "session_number": 1, "scheduled_start": start.isoformat(),
        "actual_start": (start + timedelta(minutes=3)).isoformat(), "duration_minutes": 60,
        "subject": "Math", "session_type": "1-on-1", "tutor_initiated_reschedule": False,
        "no_show": False, "late_start_minutes": 3, "engagement_score": 0.9,
        "learning_objectives_met": True, "technical_issues": False,
    }  # fmt: skip
    bad = {**good, "session_id": "LIVE-2", "engagement_score": 1.7}
    (tmp_path / "good.json").write_text(json.dumps(good))
    env = dict(os.environ, TUTORMAX_DATABASE_URL=sqlite_url, TUTORMAX_REDIS_URL=redis_url)
    runner = CliRunner()
    for arg in ("@" + str(tmp_path / "good.json"), json.dumps(bad)):
        result = runner.invoke(app, ["events", "complete", arg], env=env)
        assert result.exit_code == 0, result.output
    rclient.xadd(keys.SESSIONS_STREAM, {"message": "{oops"})
    result = runner.invoke(app, ["pipeline", "run", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    assert count_rows(engine, "sessions") == 1
    dead = {f[b"source_stream"]: f[b"reason"] for _, f in rclient.xrange(keys.DEAD_LETTER_STREAM)}
    reasons = [f[b"reason"].decode() for _, f in rclient.xrange(keys.DEAD_LETTER_STREAM)]
    assert len(reasons) == 2 and set(dead) == {keys.SESSIONS_STREAM.encode()}
    assert any("engagement_score" in r for r in reasons)
    assert rclient.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 0
    assert rclient.xlen(keys.ENRICHMENT_STREAM) == 1
    result = runner.invoke(app, ["worker", "run", "--burst", "--debounce", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert count_rows(engine) == 3  # T0001's three windows
    result = runner.invoke(app, ["show", "tutor", "T0001", "--json"], env=env)
    doc = json.loads(result.output)
    assert doc["windows"]["7day"]["sessions_scheduled"] == 1
    assert doc["windows"]["7day"]["engagement_score"] == 56.0  # 0.4*0 logins + 0.4*90 + 0.2*100
