"""`tutormax --help` must answer in well under a second: the CLI's import path stays light."""

from __future__ import annotations

import subprocess
import sys

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
