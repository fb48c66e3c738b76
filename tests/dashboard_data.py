"""Real data for the dashboard tests: a recent sample with ten days of daily snapshots and a
snapshot as of now, so tiers have a week-earlier comparison and tutors have tier changes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from typer.testing import CliRunner

from tests.helpers import recent_sample
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables

HISTORY_DAYS = 10


def cli(db_url: str, *args: str, redis_url: str | None = None) -> Any:
    """Run a tutormax command in-process; returns the Typer result."""
    env = {"TUTORMAX_DATABASE_URL": db_url}
    if redis_url:
        env["TUTORMAX_REDIS_URL"] = redis_url
    return CliRunner().invoke(app, list(args), env=env)


def cli_json(db_url: str, *args: str, redis_url: str | None = None) -> Any:
    result = cli(db_url, *args, "--json", redis_url=redis_url)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def seed_with_history(db_url: str, tutors: int = 20) -> None:
    """Migrate, load a sample ending now, backfill daily snapshots, then one as of now."""
    engine = open_engine(db_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=tutors))
    engine.dispose()
    today = datetime.now(UTC).date()
    since = (today - timedelta(days=HISTORY_DAYS)).isoformat()
    until = (today - timedelta(days=1)).isoformat()
    for args in (("--since", since, "--until", until), ()):
        result = cli(db_url, "recompute", "--quiet", *args)
        assert result.exit_code == 0, result.output


def as_instants(value: Any) -> Any:
    """The document with ISO date-time text parsed (the CLI writes `+00:00`, the API `Z`), so
    two encodings of one document compare equal."""
    if isinstance(value, dict):
        return {k: as_instants(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_instants(v) for v in value]
    if isinstance(value, str) and len(value) > 10 and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


def without(doc: Any, *names: str) -> Any:
    """The document without the keys `names` at any depth (ages depend on the clock)."""
    if isinstance(doc, dict):
        return {k: without(v, *names) for k, v in doc.items() if k not in names}
    if isinstance(doc, list):
        return [without(v, *names) for v in doc]
    return doc
