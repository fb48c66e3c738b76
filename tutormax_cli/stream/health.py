"""What `status` concludes from the group reports, the live workers and the dead letters:
problems (exit 1) and warnings (exit 0, someone should look)."""

from __future__ import annotations

from collections.abc import Sequence

from tutormax_cli.stream.dead_letters import DeadLetterSummary
from tutormax_cli.stream.groups import GroupReport
from tutormax_cli.stream.heartbeat import Worker

STALE_PENDING_S = 300.0
"""A pending entry older than this while workers are alive is a warning (a stuck entry)."""


def worker_state(worker: Worker) -> str:
    """The state a worker's heartbeat carries (`ok`, `retrying`, `draining`)."""
    return worker.state


def assess(
    groups: Sequence[GroupReport],
    workers: Sequence[Worker],
    dead: DeadLetterSummary,
    where: str = "Redis",
) -> tuple[list[str], list[str]]:
    """(problems, warnings). A problem makes `status` exit 1: a stream that does not exist on
    the Redis read (`where`: a wrong server, or nothing ever started), a group with lag or
    pending entries and no live worker to take them, a worker whose heartbeat says it is not
    `ok` (e.g. retrying a database that is down). Dead letters arriving, an old pending entry
    and lag in seconds are warnings: the system is moving, someone should look."""
    problems, warnings = [], []
    for g in groups:
        alive = [w for w in workers if w.serves(g.stream, g.group)]
        backlog = f"lag {g.lag}, pending {g.pending}"
        if not g.stream_exists:
            problems.append(
                f"stream {g.stream} not found on {where}: nothing was published there and no "
                "worker has started on it (is this the Redis the workers use?)"
            )
        elif not alive and (g.lag or g.pending):
            problems.append(
                f"no live worker for {g.group} on {g.stream} ({backlog}): start one with "
                "`tutormax worker run`"
            )
        elif g.oldest_pending_age_s is not None and g.oldest_pending_age_s > STALE_PENDING_S:
            warnings.append(
                f"{g.group}: oldest pending entry is {g.oldest_pending_age_s:.0f}s old "
                "(max deliveries "
                f"{g.max_deliveries}): `tutormax pending --entries` shows it"
            )
    problems.extend(
        f"worker {w.consumer} is {w.describe()}" for w in workers if w.state == "retrying"
    )
    if dead.last_hour:
        warnings.append(
            f"{dead.last_hour} dead letter(s) in the last hour ({dead.length} in all): "
            "`tutormax dlq list` shows why"
        )
    return problems, warnings
