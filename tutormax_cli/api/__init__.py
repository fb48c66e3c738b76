"""The HTTP API: session completions in, metrics out, live updates over WebSockets.

It is a thin layer over the library the CLI uses: a completion goes through the ingest stage's
`validate → enrich → persist → publish` (`tutormax_cli.pipeline`), metrics are read with
`tutormax_cli.store.query`, and live updates are the `tutormax:metrics:updated` feed the worker
writes after each commit. FastAPI and uvicorn come with the `api` extra
(`pip install 'tutormax-cli[api]'`); nothing here is imported by the rest of the package.
"""

from __future__ import annotations

from tutormax_cli.errors import UsageError


def require_api() -> None:
    """A one-line usage error naming the extra when FastAPI or uvicorn is not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the API needs {' and '.join(missing)}: pip install 'tutormax-cli[api]'")
