"""Which tutor ids a database knows: the guard of write paths that take tutor ids by hand.

`recompute --tutor T9999` or `events publish --tutor T9999` used to succeed silently; a typo
then recomputes nothing and the operator believes it did. One query for the whole list, and a
case-insensitive match to suggest the spelling the database uses (`t0001` → `T0001`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from tutormax_cli.errors import UnknownTutor
from tutormax_cli.store import schema


def unknown_tutors(conn: sa.Connection, tutor_ids: Iterable[str]) -> list[str]:
    """The ids among `tutor_ids` that are not in the `tutors` table, in the order given."""
    wanted = list(dict.fromkeys(tutor_ids))
    if not wanted:
        return []
    t = schema.tutors.c.tutor_id
    known = set(conn.execute(sa.select(t).where(t.in_(wanted))).scalars())
    return [tid for tid in wanted if tid not in known]


def suggestions(conn: sa.Connection, unknown: Sequence[str]) -> dict[str, str]:
    """For each unknown id, the stored id that differs from it only by case, if there is one."""
    if not unknown:
        return {}
    t = schema.tutors.c.tutor_id
    lowered = {u.lower(): u for u in unknown}
    rows = conn.execute(sa.select(t).where(sa.func.lower(t).in_(list(lowered)))).scalars()
    return {lowered[r.lower()]: r for r in rows}


def require_known(conn: sa.Connection, tutor_ids: Iterable[str], option: str = "--tutor") -> None:
    """Raise a one-line `UnknownTutor` (exit 1) naming every unknown tutor, with spelling hints."""
    unknown = unknown_tutors(conn, tutor_ids)
    if not unknown:
        return
    hints = suggestions(conn, unknown)
    named = ", ".join(f"{u} (did you mean {hints[u]}?)" if u in hints else u for u in unknown)
    noun = "tutor" if len(unknown) == 1 else "tutors"
    raise UnknownTutor(f"{option}: unknown {noun} {named} (--allow-unknown to go ahead anyway)")
