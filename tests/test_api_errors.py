"""Error answers a client can provoke or an outage causes, against a real `tutormax api serve`:
NaN and Infinity, JSON nested too deeply, a locked SQLite database, Redis gone, each a
one-line 4xx or a 503 with `Retry-After`, never a 500 or a traceback in the log."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.api_server import ClientFor, api_server, free_port
from tests.test_api import AUTH, completion, seed
from tutormax_cli.api.batch import NESTED_TOO_DEEPLY
from tutormax_cli.api.config import OUTAGE_RETRY_AFTER_SECONDS, SQLITE_BUSY_SECONDS
from tutormax_cli.stream.connection import embedded_dir, embedded_socket

JSON = {**AUTH, "content-type": "application/json"}
FINITE = {"loc": ["body", "engagement_score"], "msg": "Input should be a finite number",
          "type": "finite_number"}  # fmt: skip


def raw(**changes: Any) -> str:
    """A completion as JSON text, `changes` spliced in verbatim (`NaN` is not a Python JSON
    value `json.dumps` would write unasked)."""
    body = completion(1)
    for name in changes:
        body[name] = f"@{name}@"
    text = json.dumps(body)
    for name, literal in changes.items():
        text = text.replace(f'"@{name}@"', literal)
    return text


def no_traceback(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text and "RecursionError" not in text, text


def test_nan_infinity_and_deep_json_are_client_errors(
    sqlite_url: str, redis_url: str, tmp_path: Path, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    log = tmp_path / "api.log"
    with api_server(sqlite_url, redis_url, log=log) as base:
        http = client_for(base)
        for literal in ("NaN", "1e400", "Infinity", "-Infinity"):
            single = http.post("/api/sessions/NAN-1/complete", headers=JSON,
                               content=raw(engagement_score=literal))  # fmt: skip
            assert single.status_code == 422, (literal, single.text)
            assert single.json() == {"detail": [FINITE]}
            item = json.loads(raw(engagement_score=literal))  # Python reads NaN back
            item["session_id"] = "NAN-2"
            batch = http.post("/api/sessions:batch", headers=JSON,
                              content=json.dumps(item, allow_nan=True).join("[]"))  # fmt: skip
            assert batch.status_code == 200, batch.text
            (answer,) = batch.json()["items"]
            assert answer["status"] == 422
            assert answer["errors"] == [{**FINITE, "loc": ["engagement_score"]}]
        # NaN in a body FastAPI echoes whole (a missing field's `input`): still a 422
        body = json.loads(raw(engagement_score="NaN"))
        del body["tutor_id"]
        missing = http.post("/api/sessions/NAN-3/complete", headers=JSON,
                            content=json.dumps(body, allow_nan=True))  # fmt: skip
        assert missing.status_code == 422, missing.text
        locs = [e["loc"] for e in missing.json()["detail"]]
        assert ["body", "tutor_id"] in locs and ["body", "engagement_score"] in locs

        # deeper than json.loads recurses, under the 64 KiB limit: a one-line 400
        deep_array = "[" * 20_000 + "]" * 20_000
        for path, text in (
            ("/api/sessions:batch", deep_array),
            ("/api/sessions/DEEP-1/complete", '{"a":' * 10_000 + "1" + "}" * 10_000),
            ("/api/sessions/DEEP-2/complete", deep_array),
        ):
            deep = http.post(path, headers=JSON, content=text)
            assert deep.status_code == 400, (path, deep.text)
            assert deep.json() == {"detail": NESTED_TOO_DEEPLY}
        ndjson = http.post("/api/sessions:batch", content=deep_array,
                           headers={**AUTH, "content-type": "application/x-ndjson"})  # fmt: skip
        assert ndjson.status_code == 400 and ndjson.json() == {"detail": NESTED_TOO_DEEPLY}
        # deep enough to parse, too deep to echo back: FastAPI's 422 for the unknown field
        nested = raw(a='{"a":' * 900 + "1" + "}" * 900)
        echoed = http.post("/api/sessions/DEEP-3/complete", headers=JSON, content=nested)
        assert echoed.status_code == 422, echoed.text
        assert [e["loc"] for e in echoed.json()["detail"]] == [["body", "a"]]
    no_traceback(log)


def test_a_locked_sqlite_database_is_a_503_with_retry_after(
    sqlite_url: str, redis_url: str, tmp_path: Path, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    log = tmp_path / "api.log"
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    with api_server(sqlite_url, redis_url, log=log) as base:
        http = client_for(base)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for path, body in (("/api/sessions/LOCK-1/complete", completion(1)),
                               ("/api/sessions:batch", [{**completion(1),
                                                         "session_id": "LOCK-2"}])):  # fmt: skip
                started = time.monotonic()
                reply = http.post(path, headers=AUTH, json=body, timeout=60)
                took = time.monotonic() - started
                if path.endswith(":batch"):
                    assert reply.status_code == 200, reply.text
                    (item,) = reply.json()["items"]
                    status, detail = item["status"], item["detail"]
                else:
                    assert reply.status_code == 503, reply.text
                    assert reply.headers["retry-after"] == str(OUTAGE_RETRY_AFTER_SECONDS)
                    status, detail = 503, reply.json()["detail"]
                assert status == 503
                assert detail == "database unavailable: database is locked"
                assert SQLITE_BUSY_SECONDS - 0.5 < took < SQLITE_BUSY_SECONDS + 10
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert http.post("/api/sessions/LOCK-1/complete", headers=AUTH,
                         json=completion(1)).status_code == 202  # fmt: skip
    text = log.read_text()
    assert text.count("database error: database is locked") == 2, text
    no_traceback(log)


def test_every_outage_503_says_when_to_retry(
    sqlite_url: str, tmp_path: Path, client_for: ClientFor
) -> None:
    """Redis down: the completion's "saved but was not published" and `/readyz`; the full
    queue keeps its own 1 s (`tests/test_api_batch.py`). `/api/status` stays a 200 report."""
    seed(sqlite_url)
    down = f"redis://127.0.0.1:{free_port()}/0"
    with api_server(sqlite_url, down) as base:
        http = client_for(base)
        saved = http.post("/api/sessions/RA-1/complete", headers=AUTH, json=completion(1))
        assert saved.status_code == 503 and "saved but was not published" in saved.text
        assert saved.headers["retry-after"] == str(OUTAGE_RETRY_AFTER_SECONDS)
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == str(OUTAGE_RETRY_AFTER_SECONDS)
        status = http.get("/api/status")
        assert status.status_code == 200 and status.json()["healthy"] is False
        assert "retry-after" not in status.headers


def test_a_missing_embedded_socket_is_reported_at_once(
    sqlite_url: str, tmp_path: Path, client_for: ClientFor
) -> None:
    """redis-py retries a connection for ~4 s; a socket file that is gone cannot answer."""
    seed(sqlite_url)
    sock = embedded_socket(sqlite_url)
    try:
        with api_server(sqlite_url, "embedded") as base:
            http = client_for(base)
            deadline = time.monotonic() + 60  # the first client starts the embedded server
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the embedded Redis did not start"
                time.sleep(0.2)
            sock.unlink()  # the server runs on, unreachable: a new connection finds nothing
            for path, status in (("/readyz", 503), ("/api/status", 200)):
                started = time.monotonic()
                reply = http.get(path)
                assert time.monotonic() - started < 1.5, path
                assert reply.status_code == status, reply.text
                assert f"no socket {sock}" in reply.text
    finally:
        pid = embedded_dir(sqlite_url) / "redis.pid"  # the server this test started
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
