"""Conventions every command keeps: help text with an example, `--json` on read commands,
one-line errors with the right exit code, no colour where there is no terminal, and shell
completions that match the CLI."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
from typer.testing import CliRunner

from tutormax_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent

WRITE_COMMANDS = {
    "db init", "db partials enable", "db partials disable", "sample generate", "dlq replay",
    "dlq purge", "groups delete",
}  # fmt: skip
WRITE_GROUPS = ("events",)
"""Commands (and groups of them) that change state and print only messages; `... run` commands
are long-running workers. The rest are read commands and must have `--json`."""
NOT_VIEWS = {"api serve", "api openapi"}
"""A server, and a command whose only output is a JSON document."""


def commands(command: Any = None, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, command) of every group and command under the root."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(sub, f"{path} {name}".strip())


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def test_every_command_has_help_and_an_example() -> None:
    missing_help = [p for p, c in commands() if not (c.help or "").strip()]
    assert missing_help == []
    missing_example = [
        p for p, c in commands() if not is_group(c) and "Example: tutormax " not in c.help
    ]
    assert missing_example == []


def test_every_read_command_has_json() -> None:
    def options(c: Any) -> set[str]:
        return {o for p in c.params for o in getattr(p, "opts", [])}

    lacking = [
        p
        for p, c in commands()
        if not is_group(c)
        and p not in WRITE_COMMANDS
        and p.split()[0] not in WRITE_GROUPS
        and not p.endswith(" run")
        and p not in NOT_VIEWS
        and "--json" not in options(c)
    ]
    assert lacking == []


def test_help_renders_for_every_command() -> None:
    runner = CliRunner()
    for path, _ in commands():
        result = runner.invoke(app, [*path.split(), "--help"])
        assert result.exit_code == 0, path
        assert "Usage:" in result.stdout
        # types an operator can type: a flag takes none, a repeatable option one at a time
        assert "<bool>" not in result.stdout and "list[" not in result.stdout, path
        assert "METRICS.md" not in result.stdout, path  # a file a clone does not have


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "completions_generate", ROOT / "completions" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_completions_match_the_cli() -> None:
    generated = _generator().scripts()
    assert sorted(generated) == ["tutormax.bash", "tutormax.fish", "tutormax.zsh"]
    stale = [
        name
        for name, text in generated.items()
        if (ROOT / "completions" / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `python completions/generate.py` and commit the files"
    for path, _ in commands():
        if path:
            assert f"'{path.split()[-1]}'" in generated["tutormax.bash"], path


def _bash_complete(words: list[str]) -> list[str]:
    script = (
        f"source {ROOT / 'completions' / 'tutormax.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _tutormax\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script, "bash", *words], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def test_bash_completion_completes_commands_options_and_choices() -> None:
    assert "pending" in _bash_complete(["tutormax", ""])
    assert _bash_complete(["tutormax", "show", "tu"]) == ["tutor", "tutors"]
    assert _bash_complete(["tutormax", "show", "tutors", "--window", ""]) == [
        "7day",
        "30day",
        "90day",
    ]
    assert _bash_complete(["tutormax", "show", "tutors", "--tier", "At"]) == ["At\\ Risk"]
    assert "--entries" in _bash_complete(["tutormax", "pending", "--"])
    assert _bash_complete(["tutormax", "--redis-url", "x", "dlq", "re"]) == ["replay"]


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_redis_down_is_one_line_and_exit_1() -> None:
    for args in (["pending"], ["dlq", "list"], ["watch", "--count", "1"]):
        result = cli("--redis-url", "redis://127.0.0.1:1/0", *args)
        assert result.exit_code == 1, args
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "Error: cannot connect to Redis at redis://127.0.0.1:1/0: "
        )


def test_database_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli("--database-url", url, "show", "tutors")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: database sqlite:///{tmp_path / 'empty.db'} has no tutormax schema: "
        "run `tutormax db init`\n"
    )


def test_a_mistyped_sqlite_path_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "tutormx.db"
    message = (
        f"SQLite database {missing} does not exist: check --database-url, or create it with "
        "`tutormax db init`"
    )
    for command in (["show", "tutors"], ["recompute"], ["status"]):
        result = cli("--database-url", f"sqlite:///{missing}", *command)
        assert result.exit_code == 1, command
        if command == ["status"]:  # the report names every check; one line each off a terminal
            assert f"✗ {message}\n" in result.stdout
        else:
            assert result.stderr == f"Error: {message}\n", command
        assert not missing.exists(), command


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    nowhere = ["--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--redis-url", "redis://:1/0"]
    sort = cli(*nowhere, "show", "tutors", "--sort", "nope")
    assert sort.exit_code == 2
    assert sort.stderr.startswith("Error: cannot sort by 'nope': use one of sessions_scheduled")
    assert cli(*nowhere, "show", "tutors", "--window", "1day").exit_code == 2
    assert cli(*nowhere, "pending", "--limit", "0").exit_code == 2
    assert cli(*nowhere, "watch", "--tier", "Great").exit_code == 2
    assert not (tmp_path / "x.db").exists()


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "tutormax"), *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "100", **env},
        check=True,
    )


def _colours(text: str) -> set[int]:
    """The foreground/background colour codes among the SGR escapes of `text`."""
    found = set()
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                found.add(int(p))
    return found


def test_no_colour_without_terminal_or_with_no_color() -> None:
    assert "\x1b[" not in _run("tiers", "show").stdout  # a pipe is not a terminal
    assert "\x1b[" not in _run("tiers", "show", "--help").stdout
    assert _colours(_run("tiers", "show", FORCE_COLOR="1").stdout)
    assert not _colours(_run("tiers", "show", FORCE_COLOR="1", NO_COLOR="1").stdout)


def test_help_does_not_import_the_data_stack() -> None:
    code = (
        "import sys, tutormax_cli.cli.app; "
        "print(sorted({'polars', 'sqlalchemy'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_tables_to_stdout_messages_to_stderr(tmp_path: Path) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(open_engine(url))
    result = cli("--database-url", url, "show", "tiers")
    assert result.exit_code == 0
    assert "Exemplary" in result.stdout and "No metrics yet" not in result.stdout
    assert result.stderr == "No metrics yet: run `tutormax recompute`.\n"


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"tutormax {version('tutormax-cli')}\n"


def test_a_busy_metrics_port_is_named_in_one_line(tmp_path: Path) -> None:
    import socket

    from tutormax_cli.cli.metrics_server import DEFAULT_METRICS_HOST

    with socket.socket() as busy:
        busy.bind((DEFAULT_METRICS_HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"TUTORMAX_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
        CliRunner().invoke(app, ["db", "init"], env=env)
        for command in (["worker", "run"], ["pipeline", "run"]):
            result = CliRunner().invoke(
                app, [*command, "--burst", "--metrics-port", str(port)], env=env
            )
            assert result.exit_code == 2, result.output
            assert result.output == (
                f"Error: --metrics-port {port}: {DEFAULT_METRICS_HOST}:{port} is already in use "
                "by another process\n"
            )


def test_a_port_outside_1_to_65535_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    env = {"TUTORMAX_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    CliRunner().invoke(app, ["db", "init"], env=env)
    for command, option in (
        (["worker", "run", "--burst"], "--metrics-port"),
        (["pipeline", "run", "--burst"], "--metrics-port"),
        (["api", "serve"], "--port"),
    ):
        for port in ("0", "-1", "65536", "99999"):
            result = CliRunner().invoke(app, [*command, option, port], env=env)
            assert result.exit_code == 2, (command, port, result.output)
            assert f"Invalid value for '{option}'" in result.stderr, (command, port)


def test_api_serve_names_a_busy_port_or_an_unknown_host_in_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    import socket

    env = {"TUTORMAX_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    CliRunner().invoke(app, ["db", "init"], env=env)  # so that only the address can fail
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for workers in ("1", "2"):  # uvicorn binds in its event loop, or here for its workers
            result = CliRunner().invoke(
                app, ["api", "serve", "--port", str(port), "--workers", workers], env=env
            )
            assert result.exit_code == 2, result.output
            assert result.output == (
                f"Error: --port {port}: 127.0.0.1:{port} is already in use by another process\n"
            )
    unknown = CliRunner().invoke(app, ["api", "serve", "--host", "999.1.1.1"], env=env)
    assert unknown.exit_code == 2, unknown.output
    lines = unknown.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --host 999.1.1.1: "), lines
    worker = ["--redis-url", redis_url, "worker", "run", "--burst", "--metrics-port", "9"]
    metrics = CliRunner().invoke(app, [*worker, "--metrics-host", "999.1.1.1"], env=env)
    # the same rule for the metrics server: the host it could not resolve, alone
    assert metrics.exit_code == 2, metrics.output
    assert metrics.output.startswith("Error: --metrics-host 999.1.1.1: "), metrics.output
