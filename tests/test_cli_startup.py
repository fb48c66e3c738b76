"""`tutormax --help` must answer in well under a second: the CLI's import path stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import recent_sample
from tests.test_api_reads import metric_rows
from tutormax_cli import views
from tutormax_cli.store import query
from tutormax_cli.store.save import save_metrics
from tutormax_cli.store.seed import save_tables

HEAVY = ("polars", "sqlalchemy", "redis", "alembic", "prometheus_client", "pyarrow")


def test_cli_import_path_has_no_heavy_modules() -> None:
    code = (
        "import sys, tutormax_cli.cli.app; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at CLI start-up: {out.stdout.strip()}"


def test_help_answers() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tutormax_cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "recompute" in out.stdout and "worker" in out.stdout


# -- the operator's read commands at start-up: no polars, no pydantic ---------------------------

SKIPPED = ("polars", "pydantic", "pyarrow", "sqlalchemy")
"""What the quick read commands must not import: polars (0.15-0.2 s) for a handful of rows,
pydantic (Typer's coercion, 0.1-0.2 s with its adapters) for a few strings, SQLAlchemy
(0.11-0.17 s) for a few statements (on PostgreSQL they read through `store.reader`)."""

QUICK = (
    ["show", "tutor", "{tutor}"],
    ["show", "tutor", "{tutor}", "--json", "--window", "7day"],
    ["show", "tutors", "--limit", "20"],
    ["show", "tutors", "--limit", "5", "--tier", "strong", "--json"],
    ["show", "tiers"],
    ["show", "tiers", "--json"],
    ["status"],
    ["status", "--json"],
)


def load_tutors_with_metrics(engine: sa.Engine) -> str:
    """Twelve tutors with metric rows in `engine`'s database; the first tutor's id."""
    tables = recent_sample(tutors=12)
    save_tables(engine, {"tutors": tables["tutors"]})
    tutors = tables["tutors"]["tutor_id"].to_list()
    with engine.begin() as conn:
        save_metrics(conn, metric_rows(tutors))
    return str(tutors[0])


@pytest.fixture
def loaded(engine: sa.Engine) -> tuple[sa.Engine, str]:
    return engine, load_tutors_with_metrics(engine)


def _imported(args: list[str], env: dict[str, str], out: Path) -> tuple[int, list[str]]:
    """Run `tutormax ARGS` as the console script does; the heavy modules it had imported."""
    code = (
        "import atexit, sys; "
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(','.join("
        f"m for m in {SKIPPED!r} if m in sys.modules))); "
        f"sys.argv = ['tutormax', *{args!r}]; "
        "from tutormax_cli.cli.entry import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return done.returncode, [m for m in out.read_text().split(",") if m]


def test_quick_read_commands_import_neither_polars_nor_pydantic_nor_sqlalchemy(
    loaded: tuple[sa.Engine, str], db_url: str, redis_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL (SQLite's ISO text is parsed by polars, its one definition), `show tutor`,
    `show tutors` (default order), `show tiers` and `status` read, convert and render their
    few rows without polars or SQLAlchemy, and Typer converts their options without
    pydantic."""
    _engine, tutor = loaded
    env = {**os.environ, "TUTORMAX_DATABASE_URL": db_url, "TUTORMAX_REDIS_URL": redis_url}
    for words in QUICK:
        args = [w.format(tutor=tutor) for w in words]
        code, heavy = _imported(args, env, tmp_path / "modules.txt")
        assert code in (0, 1), args  # status: 1 = unhealthy (no stream on this Redis)
        if db_url.startswith("postgresql"):
            assert heavy == [], f"tutormax {' '.join(args)} imported {heavy}"
        else:
            assert "pydantic" not in heavy, f"tutormax {' '.join(args)} imported pydantic"


def _json(rows: Any) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat())


def test_dict_reads_equal_the_frames_they_replace(loaded: tuple[sa.Engine, str]) -> None:
    """Each `store.query.*_dicts` gives `to_dicts()` of its frame read, with the same types
    and time zones (the CLI's output is built from them), and a board read in its order and
    `views.numbered` is `views.leaderboard` of the same rows."""
    engine, tutor = loaded
    with engine.connect() as conn:
        pairs = [
            (query.latest_for_tutor_dicts(conn, tutor), query.latest_for_tutor(conn, tutor)),
            (query.history_for_tutor_dicts(conn, tutor, 30), query.history_for_tutor(conn, tutor)),
            (query.active_freshness_dicts(conn), query.active_freshness(conn)),
        ]
        boards = []
        for window in ("7day", "30day"):
            for tiers in (None, ["Strong"], ["Legendary", "At Risk"]):
                got = query.leaderboard_dicts(conn, window, tiers=tiers, limit=9)
                frame = query.leaderboard(conn, window, tiers=tiers, limit=9)
                boards.append((got, frame.to_dicts()))
                assert views.numbered(got) == views.leaderboard(frame).to_dicts()
    unordered = [(sorted(d, key=_key), sorted(f.to_dicts(), key=_key)) for d, f in pairs]
    for got, want in [*unordered, *boards]:
        assert got == want
        assert [list(r) for r in got] == [list(r) for r in want]
        assert [[type(v) for v in r.values()] for r in got] == [
            [type(v) for v in r.values()] for r in want
        ]
        assert _json(got) == _json(want)
        for r, w in zip(got, want, strict=True):
            for k, v in r.items():
                if isinstance(v, datetime):
                    assert v.tzinfo == w[k].tzinfo, k


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k)) for k in ("window", "metric_date", "tutor_id"))


def test_direct_coercion_equals_typers() -> None:
    """Every value the CLI converts without pydantic comes out as Typer's own adapter would
    convert it, for every parameter of every command; values it is not sure of (out of
    range, not a choice, another type) are left to Typer."""
    import typer.main
    from typer._coercion import build_runtime_param
    from typer.core import _TyperParameter

    from tutormax_cli.cli import coercion
    from tutormax_cli.cli.app import app

    samples = ["", "x", "T0001", "30day", "7DAY", "0", "1", "20", "007", "-3", "1e3", " 5"]
    samples.append("9" * 30)
    lists: list[Any] = [(), ("Strong",), ("at risk", "Strong"), ["a", "b"]]
    group = typer.main.get_command(app)
    ctx = group.make_context("tutormax", ["--help"], resilient_parsing=True)
    checked = direct = 0

    def walk(cmd: Any) -> None:
        nonlocal checked, direct
        for param in cmd.params:
            if not isinstance(param, _TyperParameter):
                continue
            desc = param.type_descriptor
            for value in lists if param.multiple else samples:
                done, got = coercion._convert(desc.annotation, value, desc.parameter_info, ctx)
                checked += 1
                if not done or desc.parameter_info.parser is not None:
                    continue
                direct += 1
                want = build_runtime_param(desc).coerce(value, param=param, ctx=ctx)
                assert (type(got), got) == (type(want), want), (cmd.name, param.name, value)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(group)
    assert direct > 100 and checked > direct
