"""Ctrl-C during `tutormax sample generate` (#17): exit 130, say what was committed (nothing:
one transaction) or left (incomplete CSV files) and what to do next. Real processes at a real
terminal (a pseudo-terminal, so the progress bars are drawn and Ctrl-C lands mid-write), real
SIGINT, and the database compared with its state before the run."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import sample
from tutormax_cli.contract import INPUT_KEYS
from tutormax_cli.settings import redact_url
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.seed import save_tables

pytestmark = pytest.mark.slow

TUTORS = 1500
"""Big enough that writing takes seconds, so the interrupt lands while rows are being sent."""

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
WRITING = re.compile(rb"writing\s.*?(\d+)/(\d+)")


def interrupt_while_writing(args: list[str], env: dict[str, str], after_rows: int) -> str:
    """Run `tutormax ARGS` with stderr on a pseudo-terminal, send SIGINT once its writing bar
    shows more than `after_rows` rows, and return its stderr as text (escapes removed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutormax_cli", *args],
        env={**env, "COLUMNS": "200", "TERM": "xterm"},
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
            bars = WRITING.findall(ANSI.sub(b"", seen))
            if bars and int(bars[-1][0]) > after_rows:
                break
        assert proc.poll() is None, f"finished before the interrupt: {seen[-500:]!r}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        while True:
            try:
                if not select.select([master], [], [], 0.2)[0]:
                    break
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 130, seen[-800:]
    assert out == b""
    return ANSI.sub(b"", seen).decode(errors="replace")


def snapshot(engine: sa.Engine) -> dict[str, str]:
    """An MD5 of each input table's rows in key order, and of its indexes' definitions."""
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for table, key in INPUT_KEYS.items():
            order = ", ".join(f'"{c}"' for c in key)
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY {order}')).all()
            out[table] = hashlib.md5(repr(rows).encode()).hexdigest()
        if engine.dialect.name == "postgresql":
            indexes = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
            ).scalars()
            out["indexes"] = hashlib.md5(repr(list(indexes)).encode()).hexdigest()
    return out


def test_ctrl_c_while_writing_to_a_database_commits_nothing_and_says_so(
    db_url: str, tmp_path: Path
) -> None:
    """Tutors and students already there (upserted again), sessions empty (on PostgreSQL a plain
    COPY with its indexes dropped first): after Ctrl-C every table and index is as it was."""
    engine = open_engine(db_url)
    before_tables = sample(tutors=20, seed=3)
    save_tables(engine, {name: before_tables[name] for name in ("tutors", "students")})
    before = snapshot(engine)
    spill = tmp_path / "tmp"
    spill.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    env.update(TUTORMAX_DATABASE_URL=db_url, TMPDIR=str(spill))
    args = ["sample", "generate", "--tutors", str(TUTORS), "--seed", "5", "--end", "2026-03-01"]
    students = TUTORS * 4  # the writing bar counts tutors and students first
    text = interrupt_while_writing(args, env, after_rows=TUTORS + students)
    label = redact_url(db_url)
    match = re.search(
        r"Interrupted while writing \(([\d,]+) of ([\d,]+) rows sent\): nothing was committed\. "
        rf"The rows are written in one transaction, rolled back, so {re.escape(label)} is as it "
        r"was\. Run the same command again to write them\.\r?\n",
        text,
    )
    assert match, text[-800:]
    sent, total = (int(g.replace(",", "")) for g in match.groups())
    assert TUTORS < sent < total
    assert snapshot(engine) == before
    assert list(spill.iterdir()) == []  # the generator's spill directory is removed
    engine.dispose()


def test_ctrl_c_while_writing_csv_files_says_they_are_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    args = ["sample", "generate", "--tutors", str(TUTORS), "--end", "2026-03-01", "--out", str(out)]
    text = interrupt_while_writing(args, env, after_rows=TUTORS)
    assert re.search(
        rf"Interrupted while writing \([\d,]+ of [\d,]+ rows written\): the CSV files in "
        rf"{re.escape(str(out))} are incomplete\. Run the same command again to rewrite them, or "
        rf"delete {re.escape(str(out))}\.\r?\n",
        text,
    ), text[-800:]
    assert (out / "tutors.csv").exists()


def test_a_sample_colliding_with_stored_rows_writes_nothing_and_says_why(db_url: str) -> None:
    """Sample IDs are the same for every seed (T0001…): a second sample of another seed collides
    with the first on student_feedback's unique session_id. The one transaction keeps nothing of
    it, and the error says so and what to do, in one line — not the bare constraint name."""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    env = {"TUTORMAX_DATABASE_URL": db_url}
    args = ["sample", "generate", "--tutors", "3", "--days", "10", "--end", "2026-03-01"]
    assert CliRunner().invoke(app, [*args, "--seed", "1"], env=env).exit_code == 0
    engine = open_engine(db_url)
    before = snapshot(engine)
    again = CliRunner().invoke(app, [*args, "--seed", "1"], env=env)
    assert again.exit_code == 0 and "Nothing changed" in again.output  # its own rows: upserted
    other = CliRunner().invoke(app, [*args, "--seed", "2"], env=env)
    assert other.exit_code == 1
    lines = other.output.strip().splitlines()
    assert len(lines) == 1 and "already holds rows this sample collides with" in lines[0]
    assert "student_feedback" in lines[0] and "nothing was written" in lines[0]
    assert snapshot(engine) == before
    engine.dispose()
