"""The deployment files agree with the code they deploy.

An alert on a metric nobody exports never fires, a unit with a misspelt option crash-loops at
3 a.m., a runbook command that no longer parses wastes the on-call's first minutes. So: the
alert rules are run through promtool (syntax and unit tests that feed series), every metric
name the rules and the dashboard use is looked up in a real scrape of the processes, every
`tutormax` command in the systemd units and the runbook is parsed by the real CLI, and every
runbook link the alerts carry lands on a heading.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tutormax_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "tutormax-rules.yml"
RULES_TESTS = DEPLOY / "prometheus" / "tutormax-rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "tutormax-dashboard.json"
UNITS = DEPLOY / "systemd"
RUNBOOK = ROOT / "docs" / "operations.md"
IN_CI = os.environ.get("CI", "").lower() == "true"

DESIGN_ALERTS = {
    "MetricsWorkerHighErrorRate": ("5m", "warning"),
    "MetricsWorkerLag": ("10m", "critical"),
    "MetricsWorkerDown": ("2m", "critical"),
}
"""The design document's alerts ("Alerting Rules"): name, `for:` and severity."""

SYNTHESISED = {"up", "ALERTS", "ALERTS_FOR_STATE"}
"""Series Prometheus makes itself (scrape health, alert state): the only names no process of
ours has to export."""

runner = CliRunner()


# -- rules ------------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def test_rules_have_the_design_alerts() -> None:
    found = alerts()
    for name, (duration, severity) in DESIGN_ALERTS.items():
        assert name in found, name
        rule = found[name]
        assert rule["for"] == duration, name
        assert rule["labels"]["severity"] == severity, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "$value" in annotations["description"], f"{name}: description without the value"
        assert annotations["runbook_url"].startswith("docs/operations.md#"), name
    assert len(found) <= len(DESIGN_ALERTS) + 3, "at most three alerts beyond the design's"
    for name, rule in found.items():
        assert {"for", "labels", "annotations"} <= set(rule), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name


def balanced(expr: str) -> bool:
    """Brackets pair up outside string literals: the least a PromQL expression must do."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for char in expr:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and quote is None


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those folded inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    """The dashboard's queries, its `$window` variable given a value Prometheus would see."""
    return [
        target["expr"].replace("$window", "30day")
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def test_every_expression_is_plausible_promql() -> None:
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    assert len(exprs) > 10
    assert not [e for e in exprs if not e.strip() or not balanced(e)]
    assert not balanced("sum(rate(x[5m])") and not balanced('x{a="("}[5m]]')


# -- promtool -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool from `TUTORMAX_PROMTOOL` or PATH (.ci/run fetches Debian's); required in CI."""
    path = os.environ.get("TUTORMAX_PROMTOOL") or shutil.which("promtool")
    if not path or not Path(path).is_file():
        if IN_CI:
            pytest.fail("promtool is required in CI: set TUTORMAX_PROMTOOL or put it on PATH")
        pytest.skip("promtool not found (TUTORMAX_PROMTOOL or PATH)")
    return path


def run_promtool(promtool: str, *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_rules_and_config(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in output
    run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_unit_tests_fire_and_hold_each_alert(promtool: str) -> None:
    doc = yaml.safe_load(RULES_TESTS.read_text())
    tested = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", [])}
    assert tested == set(alerts())
    run_promtool(promtool, "test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)


def test_dashboard_queries_parse_in_promtool(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline "check this expression": recording rules are parsed in full
    records = [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())
    ]
    as_rules = tmp_path / "dashboard-rules.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run_promtool(promtool, "check", "rules", str(as_rules))


# -- metric names against real scrapes --------------------------------------------------------

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords,
    grouping labels, label matchers, strings or durations."""
    text = re.sub(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'", '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", text):
        if re.match(r"\s*\(", text[match.end() :]) or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_what_the_expression_selects() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{x="y z"}[5m]))) / '
        "(sum without (kind) (b_total offset 5m) > 0) or on (job) absent(up) * 26 * 3600"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exported_names(exposition: str) -> set[str]:
    """Sample names of a scrape. A labelled family with no label values yet has no sample, only
    its `# HELP`/`# TYPE` lines (the worker's `errors` and `entries_read` until first use);
    those lines count as the names its samples will have."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if not family.samples:
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def scrape(command: list[str], db_path: Path, redis_url: str) -> str:
    """Start `tutormax … --metrics-port P` on a fresh SQLite database and a stream of its own,
    return its `/metrics` once its loop runs; then SIGTERM it and require a clean exit."""
    database_url = f"sqlite:///{db_path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUTORMAX_", "PROMETHEUS_"))}
    tutormax = [sys.executable, "-m", "tutormax_cli", "--database-url", database_url]
    subprocess.run([*tutormax, "db", "init"], env=env, check=True, capture_output=True)
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    proc = subprocess.Popen(
        [*tutormax, "--redis-url", redis_url, *command, "--metrics-port", str(port),
         "--stream", f"test:deploy:{suffix}", "--group", f"deploy-{suffix}",
         "--consumer", "deploy-test"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body: str = r.read().decode()
                if re.search(r"^tutormax_\w+_up 1\.0$", body, re.MULTILINE):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "no /metrics with the loop running in 60 s"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, stderr
    return body


def needed_names() -> set[str]:
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    return set().union(*(metric_names(e) for e in exprs))


def test_every_metric_name_in_rules_and_dashboard_is_exported(
    tmp_path: Path, redis_url: str
) -> None:
    from tutormax_cli.api.observe import API_METRIC_NAMES

    worker = exported_names(scrape(["worker", "run"], tmp_path / "w.db", redis_url))
    pipeline = exported_names(scrape(["pipeline", "run"], tmp_path / "p.db", redis_url))
    # the API's set names families; its one histogram adds the usual sample suffixes
    api = {n + s for n in API_METRIC_NAMES for s in ("", "_bucket", "_count", "_sum")}
    needed = needed_names()
    assert {
        "tutormax_worker_errors_total", "tutormax_worker_dead_lettered_total",
        "tutormax_worker_entries_read_total", "tutormax_stream_pending_entries",
        "tutormax_stream_lag_entries", "tutormax_worker_up", "tutormax_pipeline_up",
        "tutormax_worker_end_to_end_latency_seconds_bucket", "tutormax_metrics_tutors",
        "tutormax_metrics_freshness_seconds", "tutormax_api_requests_total", "up",
    } <= needed  # fmt: skip
    assert needed - worker - pipeline - api - SYNTHESISED == set()


# -- dashboard ----------------------------------------------------------------------------------


def test_dashboard_loads_with_a_query_on_every_panel() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 38
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    everything = list(panels(board))
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in everything:
        if panel["type"] == "row":  # a row only groups panels: no query of its own
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"])["uid"] == "${DS_PROMETHEUS}"


# -- systemd units --------------------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]

SPECIFIERS = {"i": "1", "I": "1", "H": "host", "d": "/run/credentials/unit", "t": "/run",
              "n": "unit.service", "%": "%"}  # fmt: skip
"""What the units' specifiers stand for here; `%i` (the instance: a metrics port) becomes 1."""


def parse_unit(path: Path) -> Unit:
    """Sections of (key, value) pairs in file order, repeated keys kept (configparser would
    merge or refuse them); `\\` continues a line, `#` and `;` start comments."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{key}= in [{section}]: {found}"
    return found[0]


def defaults(unit: Unit) -> dict[str, str]:
    """The unit's own `Environment=` assignments (env files may override them at run time)."""
    env = {}
    for assignment in values(unit, "Service", "Environment"):
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def argv(command: str, env: dict[str, str]) -> list[str]:
    """A unit's command line as systemd would run it: prefixes dropped, specifiers resolved,
    split into words, `${VAR}` replaced inside a word and a lone `$VAR` by its words; a
    `sh -c` wrapper is looked through (`$(…)` becomes a date)."""
    command = command.lstrip("-@:+!")
    command = re.sub(r"%(.)", lambda m: SPECIFIERS[m.group(1)], command)
    words: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words.extend(env.get(whole.group(1), "x").split())
            continue
        word = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), "x"), word)
        words.append(word.replace("$$", "$"))
    if len(words) == 3 and Path(words[0]).name == "sh" and words[1] == "-c":
        inner = shlex.split(re.sub(r"\$\([^()]*\)", "2026-01-01", words[2]))
        return inner[1:] if inner[0] == "exec" else inner
    return words


def parses(args: list[str]) -> tuple[bool, str]:
    """Whether the CLI accepts these arguments: `--help` last makes it stop after parsing
    (an unknown option or command still fails first), before connecting to anything."""
    result = runner.invoke(app, [*args, "--help"])
    return result.exit_code == 0, result.output


def test_an_unknown_option_fails_even_before_help() -> None:
    assert parses(["worker", "run", "--debounce", "5"])[0]
    assert not parses(["worker", "run", "--debounse", "5"])[0]
    assert not parses(["wroker", "run"])[0]


def unit_files() -> list[Path]:
    return sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.timer"))


def test_unit_commands_parse_and_hold_no_secrets() -> None:
    services = sorted(UNITS.glob("*.service"))
    assert {p.name for p in services} == {
        "tutormax-worker@.service", "tutormax-pipeline@.service", "tutormax-api.service",
        "tutormax-recompute.service",
    }  # fmt: skip
    for path in services:
        unit = parse_unit(path)
        env = defaults(unit)
        commands = [v for k, v in unit["Service"] if k.startswith(("ExecStart", "ExecStop"))]
        assert commands, path.name
        for command in commands:
            assert "://" not in command, f"{path.name}: a URL on a command line"
            words = argv(command, env)
            assert Path(words[0]).name == "tutormax", f"{path.name}: {command}"
            ok, output = parses(words[1:])
            assert ok, f"{path.name}: {' '.join(words)}\n{output}"
        for name, value in env.items():
            assert "://" not in value, f"{path.name}: {name} holds a URL"
            assert not re.fullmatch(r"TUTORMAX_(DATABASE_URL|REDIS_URL|API_TOKEN)", name), name


def test_units_run_hardened_as_tutormax_and_stop_gently() -> None:
    for path in sorted(UNITS.glob("*.service")):
        unit = parse_unit(path)
        for key, expected in {
            "User": "tutormax", "Restart": "on-failure", "KillSignal": "SIGTERM",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes",
        }.items():  # fmt: skip
            assert one(unit, "Service", key) == expected, f"{path.name}: {key}"
        timeout = one(unit, "Service", "TimeoutStopSec")
        assert int(timeout) >= 30, f"{path.name}: TimeoutStopSec={timeout}"
        # every credential a *_FILE variable names is loaded from /etc/tutormax
        credentials = dict(c.split(":", 1) for c in values(unit, "Service", "LoadCredential"))
        for name, value in defaults(unit).items():
            if name.endswith("_FILE"):
                assert value.startswith("%d/"), f"{path.name}: {name}"
                assert value[3:] in credentials, f"{path.name}: {value[3:]} not loaded"
        assert all(src.startswith("/etc/tutormax/") for src in credentials.values())
    worker = parse_unit(UNITS / "tutormax-worker@.service")
    # the worker drains for up to 30 s after SIGTERM before systemd may SIGKILL it
    assert int(one(worker, "Service", "TimeoutStopSec")) > 30


def test_timer_runs_nightly_and_catches_up() -> None:
    timer = parse_unit(UNITS / "tutormax-recompute.timer")
    assert one(timer, "Timer", "OnCalendar")
    assert one(timer, "Timer", "Persistent") == "true"
    target = one(timer, "Timer", "Unit")
    assert (UNITS / target).is_file()
    commands = values(parse_unit(UNITS / target), "Service", "ExecStart")
    assert all("--quiet" in c for c in commands)


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # instances of the templates, with the installed path replaced by this environment's
    executable = Path(sys.executable).parent / "tutormax"
    names = []
    for path in unit_files():
        name = path.name.replace("@.", "@9108.")
        text = path.read_text().replace("/opt/tutormax/venv/bin/tutormax", str(executable))
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert done.returncode == 0 and complaints == [], done.stderr


# -- runbook ------------------------------------------------------------------------------------


def runbook_commands() -> list[str]:
    """`tutormax …` commands of the runbook's code blocks and inline code."""
    text = RUNBOOK.read_text()
    lines = [
        line
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    commands = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segment: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("|", "||", "&&", ";", "&"):
                if segment and segment[0] == "tutormax":
                    commands.append(shlex.join(segment))
                segment = []
            else:
                segment.append(token)
    return commands


def test_every_runbook_command_parses() -> None:
    commands = runbook_commands()
    assert len(commands) > 20
    for command in commands:
        ok, output = parses(shlex.split(command)[1:])
        assert ok, f"docs/operations.md: {command}\n{output}"


def github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_runbook_anchors_exist() -> None:
    text = RUNBOOK.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose, re.MULTILINE)}
    assert github_anchor("Alert: MetricsWorkerLag") == "alert-metricsworkerlag"
    linked = {r["annotations"]["runbook_url"].split("#", 1)[1] for r in alerts().values()}
    linked |= set(re.findall(r"\]\(#([^)]+)\)", prose))  # the runbook's own links
    assert linked - anchors == set()
