"""End to end: a raw completion on `tutormax:sessions` -> pipeline -> worker -> metrics row."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.helpers import count_rows, recent_sample
from tests.streams import add, read
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events


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
    result = runner.invoke(app, ["events", "complete", "@" + str(tmp_path / "good.json")], env=env)
    assert result.exit_code == 0, result.output
    # `events complete` refuses what the pipeline would dead-letter; a producer that does not
    # validate still reaches the pipeline, which must dead-letter it
    result = runner.invoke(app, ["events", "complete", json.dumps(bad)], env=env)
    assert result.exit_code == 1 and "LIVE-2 is not a valid completion: engagement_score" in (
        result.output
    ), result.output
    add(rclient, keys.SESSIONS_STREAM, events.envelope(bad, channel=keys.SESSIONS_STREAM))
    rclient.xadd(keys.SESSIONS_STREAM, {"message": "{oops"})
    result = runner.invoke(app, ["pipeline", "run", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    assert count_rows(engine, "sessions") == 1
    dead = {f[b"source_stream"]: f[b"reason"] for _, f in read(rclient, keys.DEAD_LETTER_STREAM)}
    reasons = [f[b"reason"].decode() for _, f in read(rclient, keys.DEAD_LETTER_STREAM)]
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


def test_events_complete_validates_before_publishing(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    tables = recent_sample(tutors=2)
    save_tables(engine, {k: v for k, v in tables.items() if k in ("tutors", "students")})
    env = dict(os.environ, TUTORMAX_DATABASE_URL=sqlite_url, TUTORMAX_REDIS_URL=redis_url)
    runner = CliRunner()
    two_fields = json.dumps({"session_id": "S1", "tutor_id": "T0001"})
    result = runner.invoke(app, ["events", "complete", two_fields], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: S1 is not a valid completion: student_id: missing;")
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0).isoformat()
    good = {
        "session_id": "OK-1", "tutor_id": "T0001", "student_id": "S00001",
        "session_number": 1, "scheduled_start": start, "actual_start": start,
        "duration_minutes": 60, "subject": "Math", "session_type": "1-on-1",
        "tutor_initiated_reschedule": False, "no_show": False, "late_start_minutes": 0,
        "technical_issues": False,
    }  # fmt: skip
    unknown_tutor = json.dumps({**good, "tutor_id": "T9999"})
    result = runner.invoke(app, ["events", "complete", unknown_tutor], env=env)
    assert result.exit_code == 1 and "tutor_id" in result.output, result.output
    result = runner.invoke(
        app, ["events", "complete", "--validate-only", json.dumps(good)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "OK-1 is valid; nothing published" in result.output
    assert rclient.xlen(keys.SESSIONS_STREAM) == 0
    result = runner.invoke(app, ["events", "complete", json.dumps(good)], env=env)
    assert result.exit_code == 0, result.output
    assert rclient.xlen(keys.SESSIONS_STREAM) == 1


def test_the_pipeline_heartbeat_reports_its_last_flush(
    sqlite_url: str, rclient: redis.Redis
) -> None:
    from tutormax_cli.pipeline.stream import PipelineConfig, pipeline_consumer
    from tutormax_cli.stream import heartbeat

    engine = open_engine(sqlite_url)
    upgrade(engine)
    rclient.xadd(keys.SESSIONS_STREAM, {"message": "{oops"})
    consumer = pipeline_consumer(rclient, engine, PipelineConfig(consumer="p1", block_ms=5))
    consumer.setup()
    consumer.run_once()
    consumer.heartbeat(force=True)
    (beat,) = heartbeat.live_workers(rclient, keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)
    assert beat.state == "ok" and beat.info["last_flush_at"] is not None
    assert beat.info["dead_lettered"] == 1


def test_a_failing_pipeline_flush_is_recorded_by_the_reader(
    sqlite_url: str, rclient: redis.Redis
) -> None:
    """The pipeline's failures and successes go through the reader's bookkeeping, as the metrics
    worker's do: errors counted, `retrying` with the cause, nothing acked or read meanwhile; then
    `ok`, the entry acked, a flush counted and reported as the heartbeat's last flush."""
    import sqlalchemy as sa

    from tests.test_worker import FakeClock
    from tutormax_cli.pipeline.stream import PipelineConfig, pipeline_consumer

    engine, completion = _tutors_and_a_good_completion(sqlite_url)
    good = {**completion, "session_id": "F-1"}
    add(rclient, keys.SESSIONS_STREAM, events.envelope(good, channel=keys.SESSIONS_STREAM))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE sessions RENAME TO moved_away"))
    clock = FakeClock()
    consumer = pipeline_consumer(
        rclient, engine, PipelineConfig(consumer="p1", block_ms=5), clock=clock
    )
    consumer.setup()
    consumer.run_once()
    status = consumer.status()
    assert status["state"] == "retrying" and "sessions" in status["retrying"]["message"], status
    assert consumer.counts.errors == 1 and status["last_flush_at"] is None
    assert rclient.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 1
    add(rclient, keys.SESSIONS_STREAM, events.envelope(good, channel=keys.SESSIONS_STREAM))
    consumer.run_once()  # still backing off: no flush, and nothing new read
    assert consumer.counts.errors == 1 and consumer.counts.entries == 1
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE moved_away RENAME TO sessions"))
    clock.advance(1)  # past the backoff
    consumer.run_once()
    status = consumer.status()
    assert status["state"] == "ok" and status["retrying"] is None
    assert status["last_flush_at"] == clock.now().isoformat()
    assert consumer.counts.flushes == 1 and consumer.counts.tutors == 1
    assert rclient.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 0
    assert count_rows(engine, "sessions") == 1


def test_dead_letters_a_flush_could_not_write_are_written_next_pass(tmp_path: Path) -> None:
    """The pipeline's rejects are dead-lettered by the reader after the handler's commit; when
    that write fails (here a Redis ACL refuses it), the entry stays pending and held, nothing new
    is read, and the next pass after the backoff writes the dead letter and resumes."""
    from tests import topologies
    from tests.test_worker import FakeClock
    from tutormax_cli.pipeline.stream import PipelineConfig, pipeline_consumer

    if topologies.MISSING:  # a server of its own: ACL users are global to a server
        pytest.skip(topologies.MISSING)
    (port,) = topologies.free_ports(1)
    node = topologies._start(topologies._base(port), tmp_path, port)
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    try:
        # may read every key, write only tutormax:* (the dead letters go elsewhere here)
        admin.acl_setuser(
            "p", enabled=True, passwords=["+pw"], categories=["+@all"], keys=["tutormax:*", "%R~*"]
        )
        client = redis.Redis.from_url(url.replace("redis://", "redis://p:pw@"))
        engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        upgrade(engine)
        admin.xadd(keys.SESSIONS_STREAM, {"message": "{oops"})
        clock = FakeClock()
        config = PipelineConfig(consumer="p1", block_ms=5, dead_letter_stream="dlq:pipeline")
        consumer = pipeline_consumer(client, engine, config, clock=clock)
        consumer.setup()
        consumer.run_once()
        assert consumer.counts.errors == 1 and consumer.status()["state"] == "retrying"
        assert consumer.buffered() == 1 and admin.xlen("dlq:pipeline") == 0
        assert admin.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 1
        admin.xadd(keys.SESSIONS_STREAM, {"message": "{oops again"})
        clock.advance(0.2)  # still backing off: nothing written, nothing new read
        consumer.run_once()
        assert consumer.counts.entries == 1 and consumer.counts.errors == 1
        admin.acl_setuser("p", enabled=True, keys=["*"])
        clock.advance(1)
        consumer.run_once()  # the dead letter is written, then the new entry is read
        consumer.run_once()
        assert admin.xlen("dlq:pipeline") == 2 and consumer.counts.dead_lettered == 2
        assert admin.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 0
        assert consumer.status()["state"] == "ok" and consumer.buffered() == 0
        client.close()
    finally:
        admin.close()
        node.kill()


def _tutors_and_a_good_completion(sqlite_url: str) -> tuple[sa.Engine, dict[str, object]]:
    """A migrated database with two tutors and their students, and a raw completion of T0001
    two hours ago that the pipeline persists (tests vary it, one field at a time)."""
    engine = open_engine(sqlite_url)
    upgrade(engine)
    tables = recent_sample(tutors=2)
    save_tables(engine, {k: v for k, v in tables.items() if k in ("tutors", "students")})
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0).isoformat()
    good = {
        "tutor_id": "T0001", "student_id": "S00001", "session_number": 1,
        "scheduled_start": start, "actual_start": start, "duration_minutes": 60,
        "subject": "Math", "session_type": "1-on-1", "tutor_initiated_reschedule": False,
        "no_show": False, "late_start_minutes": 0, "technical_issues": False,
    }  # fmt: skip
    return engine, good


def test_a_lone_surrogate_dead_letters_its_entry_alone(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    """`"subject": "\\ud800"` is valid JSON but no UTF-8 text: it failed every flush of the
    burst (13 still buffered, then all 13 dead-lettered); it is dead-lettered by itself, named."""
    engine, good = _tutors_and_a_good_completion(sqlite_url)
    rows = [{**good, "session_id": f"SUR-{n}"} for n in range(12)]
    rows.insert(5, {**good, "session_id": "SUR-BAD", "subject": "\ud800"})
    for row in rows:  # json.dumps escapes the surrogate: the checksum matches
        add(rclient, keys.SESSIONS_STREAM, events.envelope(row, channel=keys.SESSIONS_STREAM))
    env = dict(os.environ, TUTORMAX_DATABASE_URL=sqlite_url, TUTORMAX_REDIS_URL=redis_url)
    result = CliRunner().invoke(app, ["pipeline", "run", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    assert count_rows(engine, "sessions") == 12
    dead = read(rclient, keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1
    assert json.loads(dead[0][1][b"message"])["data"]["session_id"] == "SUR-BAD"
    assert dead[0][1][b"reason"].decode() == (
        "subject: is not valid UTF-8 text (an unpaired surrogate escape)"
    )
    assert rclient.xlen(keys.ENRICHMENT_STREAM) == 12
    assert rclient.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)["pending"] == 0
    # the metrics worker reads only the ids of an envelope, and refuses a surrogate in them
    bad_tutor = events.envelope({**good, "tutor_id": "T\ud800"}, channel=keys.SESSIONS_STREAM)
    assert events.decode({"message": bad_tutor["message"]}) == events.Malformed(
        "tutor_id has non-printable characters"
    )
    engine.dispose()


def test_a_field_sessions_do_not_have_dead_letters_its_entry_naming_it(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    """A `feedback` object (the API takes one, the stream does not) or a misspelt field was
    ignored: the session stored, the feedback lost without a word. Such an entry is refused as
    the API's body model refuses it, naming the field; `events complete` says so up front."""
    engine, good = _tutors_and_a_good_completion(sqlite_url)
    rows = [
        {**good, "session_id": "UF-1"},
        {**good, "session_id": "UF-FB", "feedback": {"overall_rating": 5}},
        {**good, "session_id": "UF-TYPO", "subjcet": "Math"},
        {**good, "session_id": "UF-2"},
    ]
    for row in rows:
        add(rclient, keys.SESSIONS_STREAM, events.envelope(row, channel=keys.SESSIONS_STREAM))
    env = dict(os.environ, TUTORMAX_DATABASE_URL=sqlite_url, TUTORMAX_REDIS_URL=redis_url)
    result = CliRunner().invoke(app, ["pipeline", "run", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    assert count_rows(engine, "sessions") == 2
    dead = {
        json.loads(f[b"message"])["data"]["session_id"]: f[b"reason"].decode()
        for _, f in read(rclient, keys.DEAD_LETTER_STREAM)
    }
    assert dead["UF-TYPO"] == "subjcet: not a field of sessions"
    assert dead["UF-FB"].startswith("feedback: not a field of sessions (the stream takes")
    assert len(dead) == 2
    refused = CliRunner().invoke(
        app, ["events", "complete", json.dumps({**good, "session_id": "UF-3", "feedback": {}}),
              "--validate-only"], env=env,
    )  # fmt: skip
    assert refused.exit_code == 1 and "feedback: not a field of sessions" in refused.output
    engine.dispose()
