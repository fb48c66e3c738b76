"""`tutormax events`: put entries on the session streams by hand or from the database."""

from __future__ import annotations

import typer

from tutormax_cli import keys
from tutormax_cli.cli import context, render

app = typer.Typer(
    no_args_is_help=True, help="Put entries on the session streams (publish, replay)."
)


@app.command("publish")
def publish(
    ctx: typer.Context,
    tutor: list[str] = typer.Option(..., "--tutor", help="Tutor to recompute (repeatable)."),
    session: str | None = typer.Option(None, "--session", help="The session that changed."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="Target stream."),
    as_envelope: bool = typer.Option(
        False, "--envelope", help="Write a checksummed envelope instead of flat fields."
    ),
    allow_unknown: bool = typer.Option(
        False, "--allow-unknown", help="Publish tutors the database does not know (no check)."
    ),
) -> None:
    """Add one entry per tutor to the metrics stream, as a producer would.

    The tutors are checked against the database first: a mistyped id is an error naming it,
    not an entry the worker silently computes nothing for.

    Example: tutormax events publish --tutor T0001 --session SES000042
    """
    from tutormax_cli.errors import UsageError
    from tutormax_cli.stream import events
    from tutormax_cli.stream.producer import publish as xadd_all

    given = [("--tutor", "tutor_id", t) for t in tutor]
    given += [] if session is None else [("--session", "session_id", session)]
    for option, field, value in given:
        if (problem := events.id_problem(value, field)) is not None:
            raise UsageError(f"{option} {value!r}: {problem} (the worker would dead-letter it)")
    if not allow_unknown:
        from tutormax_cli.store.known import require_known

        with context.database(ctx).connect() as conn:
            require_known(conn, tutor)
    client = context.redis(ctx)
    entries = [
        events.envelope({"tutor_id": t, "session_id": session}, channel=stream)
        if as_envelope
        else events.flat(t, session)
        for t in tutor
    ]
    ids = xadd_all(client, stream, entries)
    render.err.print(f"Published {render.count(len(ids), 'entry')} to {stream}: {', '.join(ids)}")


@app.command("complete")
def complete(
    ctx: typer.Context,
    completion: str = typer.Argument(
        ..., help="The session as a JSON object, or @FILE holding one."
    ),
    stream: str = typer.Option(keys.SESSIONS_STREAM, "--stream", help="Raw completions stream."),
    validate_only: bool = typer.Option(
        False, "--validate-only", help="Check the completion against the contract; publish nothing."
    ),
) -> None:
    """Put one raw session completion (an envelope) on the pipeline's input stream.

    The completion goes through the pipeline's own validation (types, domain rules, references
    to the database) before it is published, so a bad one is refused here, naming its fields,
    instead of becoming a dead letter later.

    Example: tutormax events complete @session.json && tutormax pipeline run --burst
    """
    import json
    from pathlib import Path

    from tutormax_cli.errors import UsageError
    from tutormax_cli.stream import events
    from tutormax_cli.stream.producer import publish as xadd_all

    source = completion
    if completion.startswith("@"):
        try:
            source = Path(completion[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {completion[1:]}: {exc.strerror}") from None
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"completion is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise UsageError("completion must be a JSON object of session fields")
    _validate_completion(ctx, data)
    if validate_only:
        render.err.print(f"Completion {data.get('session_id')} is valid; nothing published.")
        return
    client = context.redis(ctx)
    ids = xadd_all(client, stream, [events.envelope(data, channel=stream, source="cli")])
    render.err.print(f"Published completion {data.get('session_id')} to {stream}: {ids[0]}")


def _validate_completion(ctx: typer.Context, data: dict[str, object]) -> None:
    """Refuse (exit 1, one line naming the fields) a completion the pipeline would reject."""
    from tutormax_cli.errors import TutormaxError
    from tutormax_cli.pipeline.readers import REASON, records_frame, refuse_unknown_fields
    from tutormax_cli.pipeline.validate import DatabaseReferences, validate

    frame = refuse_unknown_fields(records_frame([data]), "sessions")  # as the pipeline does
    with context.database(ctx).connect() as conn:
        _, rejects = validate("sessions", frame, DatabaseReferences(conn))
    if rejects.height:
        session = data.get("session_id") or "completion"
        raise TutormaxError(f"{session} is not a valid completion: {rejects.item(0, REASON)}")


@app.command("replay")
def replay(
    ctx: typer.Context,
    since: str = typer.Option(..., "--since", help="Sessions created or updated since (ISO-8601)."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="Target stream."),
) -> None:
    """Publish one envelope per session created or updated since a time.

    Example: tutormax events replay --since 2026-03-01T00:00Z
    """
    from tutormax_cli.stream.producer import publish as xadd_all
    from tutormax_cli.stream.producer import session_envelopes

    context.imports_done()

    at = context.parse_instant(since, "--since")
    engine = context.database(ctx)
    client = context.redis(ctx)
    with engine.connect() as conn:
        ids = xadd_all(client, stream, session_envelopes(conn, at, channel=stream))
    render.err.print(f"Replayed {render.count(len(ids), 'session')} onto {stream}.")
