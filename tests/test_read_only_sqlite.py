"""A SQLite database in a directory this user cannot write (#17 item 7): read commands work
(opened with SQLite's `mode=ro`), write commands fail with one line that says why, where it
used to be "unable to open database file" for everything.

Root ignores permissions, so as root the directory is made read-only by a read-only bind mount
in a private mount namespace (`unshare -m`, gone with the process); as anyone else by chmod."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tutormax_cli.store.db import READ_ONLY_HINT

pytestmark = pytest.mark.slow


def tutormax(
    url: str, *args: str, read_only: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`tutormax --database-url URL ARGS`; with `read_only`, while that directory is read-only
    for the process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    env["TUTORMAX_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never needed by these commands
    command = [sys.executable, "-m", "tutormax_cli", "--database-url", url, *args]
    if read_only is not None and os.geteuid() == 0:
        mount = f"mount --bind {read_only} {read_only} && mount -o remount,ro,bind {read_only}"
        command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def steady(doc: Any) -> Any:
    """A JSON document without its ages (`age_s`, `…_age_s`), which move between two runs."""
    if isinstance(doc, dict):
        return {k: steady(v) for k, v in doc.items() if not k.endswith("age_s")}
    if isinstance(doc, list):
        return [steady(v) for v in doc]
    return doc


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding a database with sample data and its metrics, and nothing else."""
    if os.geteuid() == 0 and (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip("running as root without `unshare -m`: no way to make a directory read-only")
    directory = tmp_path_factory.mktemp("ro")
    url = f"sqlite:///{directory / 't.db'}"
    for args in (
        ["db", "init"],
        ["sample", "generate", "--tutors", "6", "--seed", "3", "--end", "2026-03-01"],
        ["recompute", "--as-of", "2026-03-01T00:00:00Z"],
    ):
        done = tutormax(url, *args)
        assert done.returncode == 0, done.stderr
    (directory / "t.db.recompute.lock").unlink()
    assert sorted(p.name for p in directory.iterdir()) == ["t.db"]
    if os.geteuid() != 0:
        (directory / "t.db").chmod(0o444)
        directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)


def test_read_commands_read_a_read_only_directory(database: Path) -> None:
    url = f"sqlite:///{database / 't.db'}"
    for args in (["show", "tutors", "--json"], ["show", "tutor", "T0001", "--json"]):
        # as root the same directory is readable and writable outside the namespace: compare
        # with a plain run there only after the read-only one, which must not have changed it
        seen = tutormax(url, *args, read_only=database)
        assert seen.returncode == 0, seen.stderr
        assert json.loads(seen.stdout), seen.stdout
        if os.geteuid() == 0:
            assert steady(json.loads(seen.stdout)) == steady(
                json.loads(tutormax(url, *args).stdout)
            )
    status = tutormax(url, "db", "status", read_only=database)
    assert status.returncode == 0, status.stderr
    assert "tutor_performance_metrics" in status.stdout
    assert sorted(p.name for p in database.iterdir()) == ["t.db"]  # nothing created beside it


def test_write_commands_say_the_directory_is_read_only(database: Path) -> None:
    url = f"sqlite:///{database / 't.db'}"
    recompute = tutormax(url, "recompute", read_only=database)
    assert recompute.returncode == 1
    lock = database / "t.db.recompute.lock"
    assert recompute.stderr.startswith(f"Error: cannot open the recompute lock file {lock}: ")
    assert recompute.stderr.endswith(f" ({READ_ONLY_HINT})\n")
    assert recompute.stderr.count("\n") == 1
    written = tutormax(url, "sample", "generate", "--tutors", "2", read_only=database)
    assert written.returncode == 1
    assert written.stderr == (
        f"Error: database error: attempt to write a readonly database ({READ_ONLY_HINT})\n"
    )


def test_rows_a_writer_has_not_checkpointed_are_read(database: Path, tmp_path: Path) -> None:
    """A writer elsewhere keeps the database open in WAL mode (its -wal and -shm files exist): a
    read-only reader must read through them, not the stale main file."""
    if os.geteuid() != 0:
        pytest.skip("needs the writer outside a read-only view of the same directory (root)")
    url = f"sqlite:///{database / 't.db'}"

    def tutors_shown() -> str:
        status = tutormax(url, "db", "status", read_only=database)
        assert status.returncode == 0, status.stderr
        return next(line for line in status.stdout.splitlines() if " tutors " in line)

    before = tutors_shown()
    writer = sqlite3.connect(database / "t.db", isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        columns = [row[1] for row in writer.execute("PRAGMA table_info(tutors)")]
        unique = {"tutor_id": "'TWAL'", "email": "'twal@example.com'"}
        copied = ", ".join(unique.get(c, f'"{c}"') for c in columns)
        writer.execute(f"INSERT INTO tutors SELECT {copied} FROM tutors WHERE tutor_id = 'T0001'")
        assert (database / "t.db-wal").exists()
        after = tutors_shown()
        writer.execute("DELETE FROM tutors WHERE tutor_id = 'TWAL'")
    finally:
        writer.close()
    assert (before.split()[-4], after.split()[-4]) == ("6", "7"), (before, after)
    assert sorted(p.name for p in database.iterdir()) == ["t.db"]
