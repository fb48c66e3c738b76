"""Which tutor ids a database knows: the guard of write paths that take tutor ids by hand.

`recompute --tutor T9999` or `events publish --tutor T9999` used to succeed silently; a typo
then recomputes nothing and the operator believes it did. One query for the whole list, and a
case-insensitive match to suggest the spelling the database uses (`t0001` → `T0001`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tutormax_cli.errors import UnknownTutor
from tutormax_cli.store.query import known_tutors
from tutormax_cli.store.reader import rows

if TYPE_CHECKING:
    from tutormax_cli.store.reader import Conn


def unknown_tutors(conn: Conn, tutor_ids: Iterable[str]) -> list[str]:
    """The ids among `tutor_ids` that are not in the `tutors` table, in the order given."""
    wanted = list(dict.fromkeys(tutor_ids))
    if not wanted:
        return []
    known = known_tutors(conn, wanted)
    return [tid for tid in wanted if tid not in known]


def suggestions(conn: Conn, unknown: Sequence[str]) -> dict[str, str]:
    """For each unknown id, the stored id that differs from it only by case, if there is one."""
    if not unknown:
        return {}
    lowered = {u.lower(): u for u in unknown}
    sql = "SELECT tutor_id FROM tutors WHERE lower(tutor_id) IN :ids"
    found = rows(conn, sql, {"ids": list(lowered)}, expanding=("ids",))
    return {lowered[r[0].lower()]: r[0] for r in found}


def require_known(conn: Conn, tutor_ids: Iterable[str], option: str = "--tutor") -> None:
    """Raise a one-line `UnknownTutor` (exit 1) naming every unknown tutor, with spelling hints."""
    unknown = unknown_tutors(conn, tutor_ids)
    if not unknown:
        return
    hints = suggestions(conn, unknown)
    named = ", ".join(f"{u} (did you mean {hints[u]}?)" if u in hints else u for u in unknown)
    noun = "tutor" if len(unknown) == 1 else "tutors"
    raise UnknownTutor(f"{option}: unknown {noun} {named} (--allow-unknown to go ahead anyway)")
