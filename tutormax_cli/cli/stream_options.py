"""Options every stream consumer (`worker run`, `pipeline run`) takes for bounding its streams,
defined once so both spell and document them alike."""

from __future__ import annotations

from typing import Any

import typer

from tutormax_cli import keys


def retention_option() -> Any:
    """`--stream-retention SECONDS`."""
    return typer.Option(
        keys.STREAM_RETENTION,
        "--stream-retention",
        min=0,
        metavar="SECONDS",
        help="Keep this much acknowledged history on the input stream; older entries that "
        "every group has read and acknowledged are trimmed (0: as soon as all are done).",
    )


def trim_option() -> Any:
    """`--trim/--no-trim`."""
    return typer.Option(
        True,
        "--trim/--no-trim",
        help="Trim the input stream and cap the dead-letter stream (every few seconds).",
    )


def dead_letter_maxlen_option() -> Any:
    """`--dead-letter-maxlen N`."""
    return typer.Option(
        keys.DEAD_LETTER_MAXLEN,
        "--dead-letter-maxlen",
        min=0,
        metavar="N",
        help="Keep about this many dead letters, dropping the oldest (counted; 0: no cap).",
    )
