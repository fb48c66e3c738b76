"""Deterministic synthetic TutorMax data.

Demos, benchmarks and tests need realistic tables without a production database. Nothing
depends on the wall clock or on process state, so a spec always yields the same frames on every
run and machine: metrics computed from them can be asserted on and compared.

Tutors follow behavioural archetypes (high performer, steady, new, at risk, churner) so that the
metrics and tiers computed from the data spread over the whole range instead of clustering.

How: the few per-tutor and per-student values come from a `random.Random` seeded with the spec
seed. The bulk (sessions, feedback, events) is vectorised in polars: each random column is
splitmix64 of (seed, stream, row number) in wrapping UInt64 arithmetic, turned into [0, 1)
floats and shaped with +, ×, sqrt and comparisons only (no log/exp/cos, whose last bits may
differ between math libraries). That keeps 5,000 tutors × 120 days (~700k sessions) at seconds.
"""

from __future__ import annotations

import math
import random
import tempfile
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, auto
from pathlib import Path

import polars as pl

from tutormax_cli.contract import input_schemas
from tutormax_cli.errors import UsageError
from tutormax_cli.instants import EARLIEST_TIME, LATEST_DAY
from tutormax_cli.metrics.frames import TS
from tutormax_cli.metrics.partials import (
    LOGIN,
    MESSAGE_RESPONSE,
    first_session,
    on_time,
    successful,
)

__all__ = [
    "ARCHETYPES",
    "MAX_DAYS",
    "TABLE_SCHEMAS",
    "Archetype",
    "SampleSpec",
    "batches",
    "check_span",
    "generate",
]

_STR = pl.String()  # instances, not classes: keeps the schema dicts one type for mypy
_INT = pl.Int64()
_FLOAT = pl.Float64()
_BOOL = pl.Boolean()
_STRS = pl.List(pl.String)

TABLE_SCHEMAS: dict[str, pl.Schema] = input_schemas()
"""The contract's columns of each generated table, in order, with their dtypes."""


@dataclass(frozen=True)
class SampleSpec:
    """What to generate: `tutors` tutors with sessions scheduled in `[end - days, end)`.

    `end` must be timezone-aware; it is the only notion of "now" the generator has, so the
    output never depends on when it runs.
    """

    tutors: int
    days: int
    seed: int
    end: datetime

    def __post_init__(self) -> None:
        if self.tutors < 0:
            raise ValueError(f"tutors must be >= 0, got {self.tutors}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.end.tzinfo is None or self.end.utcoffset() is None:
            raise ValueError("end must be a timezone-aware datetime (UTC)")


@dataclass(frozen=True, slots=True)
class Archetype:
    """Base behaviour of a kind of tutor; each tutor jitters it a little."""

    name: str
    share: float
    sessions_per_week: tuple[float, float]
    tenure_days: tuple[float, float]  # onboarded this long before the period starts
    no_show: float
    reschedule: float
    on_time: float  # P(late_start = 0)
    slightly_late: float  # P(1..5 minutes); P(16..60) is `very_late`, the rest 6..15
    very_late: float
    engagement: float
    objectives: float
    rating: float
    feedback: float
    logins_per_session: tuple[float, float]
    messages_per_session: float
    response_median_minutes: float
    new_student: float  # P(a session is with a student new to this tutor)
    technical: float
    trend: float  # "badness" added at the end of the tutor's activity (<0: improves)


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "high_performer", 0.20, (10, 16), (365, 1460), 0.005, 0.03, 0.80, 0.18, 0.0,
        0.88, 0.94, 4.75, 0.80, (1.1, 2.0), 0.7, 12, 0.06, 0.02, 0.0,
    ),
    Archetype(
        "steady", 0.35, (8, 12), (180, 1100), 0.02, 0.07, 0.65, 0.28, 0.01,
        0.76, 0.86, 4.25, 0.75, (0.9, 1.5), 0.55, 30, 0.08, 0.03, 0.0,
    ),
    Archetype(
        "new", 0.15, (3, 7), (0, 0), 0.04, 0.08, 0.60, 0.30, 0.02,
        0.68, 0.80, 3.9, 0.75, (1.2, 2.5), 0.7, 25, 0.35, 0.04, -0.5,
    ),
    Archetype(
        "at_risk", 0.20, (5, 10), (120, 900), 0.10, 0.20, 0.35, 0.30, 0.12,
        0.55, 0.66, 3.3, 0.70, (0.4, 0.9), 0.4, 150, 0.12, 0.08, 0.0,
    ),
    Archetype(
        "churner", 0.10, (6, 10), (200, 1200), 0.03, 0.08, 0.60, 0.30, 0.03,
        0.72, 0.82, 4.0, 0.72, (0.6, 1.2), 0.4, 45, 0.08, 0.04, 1.0,
    ),
)  # fmt: skip
"""Tutor kinds and their shares. `churner` fades out and worsens; `new` starts mid-range and
improves; `at_risk` is consistently poor; the values put each kind in a distinct tier band."""

_STUDENT_DAYS = 720
"""Students were created up to this many days before the period starts."""
LEAD_DAYS = max(_STUDENT_DAYS, *(int(a.tenure_days[1]) for a in ARCHETYPES))
"""How many days before the period (`end - days`) the generated rows reach: the longest
tenure's onboarding dates, or the students' creation."""
MAX_DAYS = 3650
"""The longest history generated (ten years, against the 90 days the widest window reads):
rows grow with the days, and a span of a million days would run for hours before failing."""
_LATEST_END = datetime.combine(LATEST_DAY, datetime.min.time(), UTC)
"""The latest `end`: a session ends up to 5 hours after it starts, and every stamp must stay
within `instants.LATEST_TIME` to be read back."""


def check_span(days: int, end: datetime) -> None:
    """Refuse, as a usage error naming the options, a spec whose rows would fall outside the
    years 1-9999 (they would be written, then break every reader of the database) or whose
    history is longer than `MAX_DAYS`; checked before anything is generated."""
    if days > MAX_DAYS:
        raise UsageError(f"--days {days:,} is more than {MAX_DAYS:,} days (ten years) of history")
    stamp = end.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if end > _LATEST_END:
        raise UsageError(f"--end {stamp} is after {_LATEST_END.date()}, the latest end")
    reach = timedelta(days=days + LEAD_DAYS + 1)  # +1: onboarding dates round down a minute
    first = EARLIEST_TIME
    if end - first < reach:
        raise UsageError(
            f"--end {stamp} with --days {days:,} would date rows before year 1 (tutors are "
            f"onboarded up to {LEAD_DAYS:,} days before the history starts): use --end "
            f"{(first + reach).date()} or later"
        )


_SUBJECTS = (
    "Algebra", "Geometry", "Calculus", "Statistics", "Physics", "Chemistry", "Biology",
    "English", "Essay Writing", "Spanish", "French", "History", "Computer Science", "SAT Prep",
)  # fmt: skip
_FIRST = (
    "Alex", "Maria", "James", "Priya", "Chen", "Fatima", "Liam", "Sofia", "Noah", "Aisha",
    "Lucas", "Mei", "Omar", "Elena", "Kenji", "Zoe", "Diego", "Hannah", "Ravi", "Grace",
)  # fmt: skip
_LAST = (
    "Smith", "Garcia", "Nguyen", "Patel", "Kim", "Müller", "Rossi", "Okafor", "Silva", "Cohen",
    "Johnson", "Tanaka", "Ali", "Novak", "Brown", "López", "Ivanova", "Dubois", "Singh", "Park",
)  # fmt: skip
_EDUCATION = ("Bachelor's", "Master's", "PhD", "Teaching Certificate", "Undergraduate")
_LOCATIONS = (
    "New York, US", "Austin, US", "Toronto, CA", "London, UK", "Dublin, IE", "Berlin, DE",
    "Madrid, ES", "Mumbai, IN", "Manila, PH", "Sydney, AU", "Mexico City, MX", "Remote",
)  # fmt: skip
_AREAS = (
    "punctuality", "explanations", "patience", "pacing", "engagement",
    "technical setup", "preparation", "communication",
)  # fmt: skip
_TEXTS_GOOD = (
    "Great session, everything was explained very clearly.",
    "My tutor was patient and I finally understand this topic.",
    "Really helpful, looking forward to the next one!",
)
_TEXTS_MID = (
    "Good session overall, but it felt a bit rushed.",
    "Helpful, though some explanations were hard to follow.",
)
_TEXTS_BAD = (
    "The tutor started late and seemed unprepared.",
    "I didn't get much out of this session.",
    "Connection problems and not enough time for my questions.",
)
_OTHER_EVENTS = (
    ("profile_update", '{"fields": ["bio"]}'),
    ("availability_update", '{"slots_added": 3}'),
    ("logout", None),
)

_MIN = 60_000_000
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR
_SLOTS_PER_DAY = 8  # sessions start at 07:00, 09:00, …, 21:00 UTC (plus 0/15/30 minutes)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_U64 = pl.UInt64()
_MASK = (1 << 64) - 1
_SQRT3 = math.sqrt(3.0)
_SESSION_COLUMNS = [
    c
    for c in TABLE_SCHEMAS["sessions"]
    if c not in {"session_id", "student_id", "created_at", "updated_at"}
]
_FEEDBACK_INPUTS = ["_s", "t", "sidx", "feedback_p", "rating", "bad", "eng_mean", "u_feedback"]
_SEP = "|"  # joins improvement areas before they are split into a list
_SUB_RATINGS = (
    "subject_knowledge_rating", "communication_rating", "patience_rating",
    "engagement_rating", "helpfulness_rating",
)  # fmt: skip
_RECOMMEND = {1: 0.05, 2: 0.15, 3: 0.5, 4: 0.9, 5: 0.98}  # P(would_recommend) by rating
_TEXTS = {
    10 * band + i: text
    for band, texts in enumerate((_TEXTS_GOOD, _TEXTS_MID, _TEXTS_BAD))
    for i, text in enumerate(texts)
}


class _S(IntEnum):
    """Random streams: one per use, so a new draw somewhere never shifts the others."""

    SLOT = auto()
    NEW_STUDENT = auto()
    NEW_PICK = auto()
    RETURNING = auto()
    OFFSET = auto()
    KIND = auto()
    NO_SHOW = auto()
    LATE_BAND = auto()
    LATE_VALUE = auto()
    ENG_NULL = auto()
    ENG_1 = auto()
    ENG_2 = auto()
    ENG_3 = auto()
    ENG_4 = auto()
    OBJ_NULL = auto()
    OBJ = auto()
    TECH = auto()
    SUBJECT = auto()
    RESCHEDULE = auto()
    FEEDBACK = auto()
    DELAY = auto()
    RATING_1 = auto()
    RATING_2 = auto()
    RATING_3 = auto()
    RATING_4 = auto()
    SUB_1 = auto()
    SUB_2 = auto()
    SUB_3 = auto()
    SUB_4 = auto()
    SUB_5 = auto()
    REC_NULL = auto()
    REC = auto()
    AREA_MODE = auto()
    AREA_1 = auto()
    AREA_2 = auto()
    AREA_TWO = auto()
    TEXT_ON = auto()
    TEXT_PICK = auto()
    LOGIN_EXTRA = auto()
    MSG_SCALE = auto()
    OTHER_N = auto()
    LOGIN_TIED = auto()
    LOGIN_SESSION = auto()
    LOGIN_BEFORE = auto()
    LOGIN_AT = auto()
    MSG_AT = auto()
    MSG_META = auto()
    MSG_MINUTES = auto()
    OTHER_KIND = auto()
    OTHER_AT = auto()


Progress = Callable[[str, int, int], None]
"""`progress(phase, done, total)`: "generating" counts tutors, "writing" counts rows handed on."""

CHUNK_SESSIONS = 200_000
"""About this many sessions are generated at once: the chunk of tutors is sized to it, so the
memory a run needs does not grow with `--tutors`."""

BUCKET_ROWS = 250_000
"""About this many rows of a table are numbered and handed on at once."""


def generate(spec: SampleSpec, *, chunk_tutors: int | None = None) -> dict[str, pl.DataFrame]:
    """Generate the five tables for `spec`, in memory (see `batches` for any size).

    Keys: "tutors", "students", "sessions", "student_feedback", "tutor_events". Each frame has
    exactly the columns of `TABLE_SCHEMAS[key]`, in order. IDs are numbered chronologically
    (sessions by scheduled_start, feedback by submitted_at, events by event_timestamp), and
    rows are in ID order.
    """
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in TABLE_SCHEMAS}
    for name, df in batches(spec, chunk_tutors=chunk_tutors):
        parts[name].append(df)
    return {
        name: pl.concat(dfs) if dfs else pl.DataFrame(schema=TABLE_SCHEMAS[name])
        for name, dfs in parts.items()
    }


def batches(
    spec: SampleSpec,
    *,
    chunk_tutors: int | None = None,
    bucket_rows: int = BUCKET_ROWS,
    progress: Progress | None = None,
) -> Generator[tuple[str, pl.DataFrame], None, None]:
    """The five tables for `spec` as `(table, frame)` batches, tables in `TABLE_SCHEMAS` order
    and rows in ID order; the same rows as `generate`, whatever the chunk and batch sizes.

    Tutors are generated a chunk at a time (`chunk_tutors`, by default sized to
    `CHUNK_SESSIONS`) and their rows spilled to a temporary directory, partitioned by time;
    IDs are numbered chronologically over all tutors afterwards, one time range of a table at
    a time. Memory stays flat whatever the tutor count: a chunk, or a time range, at a time.
    The caller consumes a batch (writes it) before asking for the next one, which is when
    "writing" progress is reported.
    """
    report: Progress = progress or (lambda phase, done, total: None)
    gen = _Generator(spec)
    plan = gen.plan()
    wanted = int(plan.params["n"].sum())
    if chunk_tutors is None:
        chunk_tutors = max(1, -(-spec.tutors * CHUNK_SESSIONS // max(wanted, 1)))
    spans = _Buckets(gen.start_us, gen.end_us, max(1, -(-2 * wanted // bucket_rows)))
    with tempfile.TemporaryDirectory(prefix="tutormax-sample-") as tmp:
        spill = _Spill(Path(tmp), spans)
        at = _Offsets()
        report("generating", 0, spec.tutors)
        for c, lo in enumerate(range(0, spec.tutors, chunk_tutors)):
            hi = min(spec.tutors, lo + chunk_tutors)
            roster = plan.roster.filter(pl.col("t").is_between(lo, hi - 1))
            spill.add(c, gen.chunk(plan.params.slice(lo, hi - lo), roster, at))
            report("generating", hi, spec.tutors)
        total = plan.tutors.height + plan.students.height + sum(spill.rows.values())
        done = 0
        for name, df in spill.numbered(plan.tutors, plan.students):
            yield name, df
            done += df.height
            report("writing", done, total)


# --- random numbers ----------------------------------------------------------------------------


def _u64(value: int) -> pl.Expr:
    return pl.lit(value & _MASK, dtype=_U64)


def _with_uniforms(df: pl.DataFrame, base: int, row: str, streams: Iterable[_S]) -> pl.DataFrame:
    """Add one uniform [0, 1) column per stream (named `u_<stream>`).

    Column value = splitmix64(seed base + stream << 40 + row): integer arithmetic that wraps
    the same way everywhere, so every machine computes the same bits.
    """
    names = {"u_" + s.name.lower(): s for s in streams}
    key = pl.col(row).cast(_U64)
    df = df.with_columns(
        [(key + _u64(base + (s << 40) + 0x9E3779B97F4A7C15)).alias(n) for n, s in names.items()]
    )
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        df = df.with_columns(
            [((pl.col(n) ^ (pl.col(n) // _u64(1 << shift))) * _u64(mult)).alias(n) for n in names]
        )
    top53 = [((pl.col(n) ^ (pl.col(n) // _u64(1 << 31))) // _u64(1 << 11)) for n in names]
    return df.with_columns(
        [(z.cast(pl.Float64) * 2.0**-53).alias(n) for z, n in zip(top53, names, strict=True)]
    )


def _u(stream: _S) -> pl.Expr:
    return pl.col("u_" + stream.name.lower())


def _normal(*streams: _S) -> pl.Expr:
    """Approximately standard normal from a few uniforms (Irwin–Hall): no libm involved."""
    total = _u(streams[0])
    for s in streams[1:]:
        total = total + _u(s)
    return (total - len(streams) / 2) * (_SQRT3 * 2 / math.sqrt(len(streams)))


def _index(u: pl.Expr, n: pl.Expr | int) -> pl.Expr:
    """A uniform integer in [0, n)."""
    return (u * n).floor().cast(_INT)


def _pick(u: pl.Expr, options: Sequence[str]) -> pl.Expr:
    return _index(u, len(options)).replace_strict(
        list(range(len(options))), list(options), return_dtype=_STR
    )


def _position_in_run(*keys: str) -> pl.Expr:
    """0, 1, 2, … within each run of equal `keys`, for a frame sorted by them."""
    row = pl.int_range(pl.len(), dtype=_INT)
    starts = pl.any_horizontal([pl.col(k) != pl.col(k).shift(1) for k in keys]).fill_null(True)
    return row - pl.when(starts).then(row).forward_fill()


def _rows(df: pl.DataFrame, count: str, first: int) -> pl.DataFrame:
    """Repeat each row `count` times, numbering the copies `i` (0-based) and every row `_r`
    from `first` on (the rows earlier chunks of tutors produced come before)."""
    return (
        df.filter(pl.col(count) > 0)
        .with_columns(i=pl.int_ranges(0, pl.col(count)))
        .explode("i")
        .with_row_index("_r", offset=first)
        .with_columns(pl.col("_r").cast(_INT))
    )


# --- per-tutor plan (plain Python: a few thousand rows) ----------------------------------------


def _to_us(ts: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _archetype_plan(n: int) -> list[Archetype]:
    """Exact shares by largest remainder, so proportions hold for any tutor count."""
    raw = [a.share * n for a in ARCHETYPES]
    counts = [int(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return [a for a, c in zip(ARCHETYPES, counts, strict=True) for _ in range(c)]


def _shuffle(r: Callable[[], float], items: list[Archetype]) -> None:
    """Fisher–Yates on `random()` alone: unlike `Random.shuffle`, fixed across Python versions."""
    for i in range(len(items) - 1, 0, -1):
        j = int(r() * (i + 1))
        items[i], items[j] = items[j], items[i]


def _choose(r: Callable[[], float], items: Sequence[str], k: int) -> list[str]:
    pool = list(items)
    return [pool.pop(int(r() * len(pool))) for _ in range(k)]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What is drawn per tutor and per student, before any session exists."""

    tutors: pl.DataFrame
    students: pl.DataFrame
    params: pl.DataFrame  # one row per tutor, in tutor order: see `_params`
    roster: pl.DataFrame  # (t, j, sidx, prior): the students a tutor already has


@dataclass(slots=True)
class _Offsets:
    """Rows the chunks before produced: each row-keyed random stream continues from there."""

    slot_draws: int = 0
    sessions: int = 0
    logins: int = 0
    messages: int = 0
    others: int = 0


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A chunk of tutors' rows, times as epoch microseconds, IDs not yet numbered."""

    sessions: pl.DataFrame
    feedback: pl.DataFrame
    events: pl.DataFrame


@dataclass(frozen=True, slots=True)
class _Buckets:
    """`count` equal time ranges over [start, end): rows are numbered one range at a time."""

    start: int
    end: int
    count: int

    def of(self, ts: pl.Expr) -> pl.Expr:
        width = -(-(self.end - self.start) // self.count)
        return ((ts - self.start) // width).clip(0, self.count - 1)


_SPILLED = {
    "sessions": [
        *(c for c in TABLE_SCHEMAS["sessions"] if c != "session_id"), "_s", "_tie",
    ],
    "student_feedback": [
        *(c for c in TABLE_SCHEMAS["student_feedback"] if c not in ("feedback_id", "session_id")),
        "scheduled_start", "_s", "_tie",
    ],
    "tutor_events": [
        *(c for c in TABLE_SCHEMAS["tutor_events"] if c != "event_id"), "_part", "_r",
    ],
}  # fmt: skip
"""Columns kept of each chunk's rows: the contract's but the IDs, plus what numbers them."""

_TIME = {
    "sessions": "scheduled_start",
    "student_feedback": "submitted_at",
    "tutor_events": "event_timestamp",
}
_ORDER = {
    # the order IDs follow; the tie-breakers keep the generator's historical numbering
    "sessions": ["_rank"],
    "student_feedback": ["submitted_at", "_rank"],
    "tutor_events": ["event_timestamp", "_part", "_r"],
}
_PREFIX = {"sessions": ("SES", 6), "student_feedback": ("FB", 6), "tutor_events": ("EV", 7)}


class _Spill:
    """Chunk rows on disk as Arrow IPC files, one per (table, time range, chunk)."""

    def __init__(self, root: Path, spans: _Buckets) -> None:
        self.root = root
        self.spans = spans
        self.rows = dict.fromkeys(_SPILLED, 0)
        self.instants: list[pl.DataFrame] = []  # sessions per (chunk, scheduled_start)

    def add(self, c: int, chunk: _Chunk) -> None:
        frames = zip(_SPILLED, (chunk.sessions, chunk.feedback, chunk.events), strict=True)
        for table, df in frames:
            self.rows[table] += df.height
            df = df.select(_SPILLED[table]).with_columns(
                _c=pl.lit(c, dtype=_INT), _b=self.spans.of(pl.col(_TIME[table]))
            )
            for (b,), part in df.partition_by("_b", as_dict=True, include_key=False).items():
                part.write_ipc(self.root / f"{table}.{b:06d}.{c:06d}.arrow")
        self.instants.append(
            chunk.sessions.group_by("scheduled_start")
            .agg(n=pl.len().cast(_INT))
            .with_columns(_c=pl.lit(c, dtype=_INT))
        )

    def numbered(
        self, tutors: pl.DataFrame, students: pl.DataFrame
    ) -> Iterator[tuple[str, pl.DataFrame]]:
        yield "tutors", tutors
        yield "students", students
        first = self._session_ranks()
        for table in _SPILLED:
            after = 0
            for b in range(self.spans.count):
                paths = sorted(self.root.glob(f"{table}.{b:06d}.*.arrow"))
                if not paths:
                    continue
                df = pl.concat([pl.read_ipc(p) for p in paths])
                for p in paths:
                    p.unlink()
                if table != "tutor_events":
                    df = df.join(first, on=["_c", "scheduled_start"], how="left").with_columns(
                        _rank=pl.col("_first") + pl.col("_tie")
                    )
                    df = df.with_columns(session_id=_ids("SES", 6, pl.col("_rank")))
                prefix, width = _PREFIX[table]
                df = df.sort(_ORDER[table]).with_columns(
                    _ids(prefix, width, pl.int_range(after, after + pl.len())).alias(
                        TABLE_SCHEMAS[table].names()[0]
                    )
                )
                after += df.height
                yield table, _conform(df, table)

    def _session_ranks(self) -> pl.DataFrame:
        """Sessions are numbered by (scheduled_start, `_s`), and chunks hold ascending `_s`: so
        the rank of a chunk's first session at an instant is the number of sessions at earlier
        instants plus those of earlier chunks at that instant; `_tie` adds the rest."""
        if not self.instants:
            schema = {"_c": _INT, "scheduled_start": _INT, "_first": _INT}
            return pl.DataFrame(schema=schema)
        return (
            pl.concat(self.instants)
            .sort("scheduled_start", "_c")
            .select("_c", "scheduled_start", _first=pl.col("n").cum_sum() - pl.col("n"))
        )


@dataclass(slots=True)
class _Tutor:
    """One tutor's jittered behaviour and where its activity lies."""

    t: int
    tutor_id: str
    arch: Archetype
    rate: float
    no_show: float
    reschedule: float
    engagement: float
    objectives: float
    rating: float
    logins_per_session: float
    response_median: float
    subjects: list[str]
    onboarding_us: int
    fade: float  # churners: activity reaches zero at this share of the span (1.0: no fade)
    lo: int = 0  # first slot the tutor can be booked in
    span: int = 0  # number of bookable slots
    n: int = 0  # sessions wanted
    events_from: int = 0
    events_to: int = 0


class _Generator:
    """The spec's time grid and seed, and the steps that turn them into tables."""

    def __init__(self, spec: SampleSpec) -> None:
        self.spec = spec
        # A string seed is hashed with SHA-512 by `random`: stable everywhere, and unlike an
        # int seed it keeps negative seeds distinct from their absolute value.
        self.rng = random.Random(f"tutormax-sample:{spec.seed}")
        self.base = self.rng.getrandbits(64)
        self.end_us = _to_us(spec.end.astimezone(UTC))
        self.start_us = self.end_us - spec.days * _DAY
        self.midnight_us = self.start_us - self.start_us % _DAY
        self.slot_lo = self._slots_before(self.start_us)
        self.slot_hi = self._slots_before(self.end_us)
        self.n_students = 4 * spec.tutors

    def _slots_before(self, t_us: int) -> int:
        """Number of slots (counted from the first day's midnight) that start before t."""
        day, rem = divmod(t_us - self.midnight_us, _DAY)
        hours = (7 + 2 * i for i in range(_SLOTS_PER_DAY))
        return day * _SLOTS_PER_DAY + sum(1 for h in hours if h * _HOUR < rem)

    def plan(self) -> _Plan:
        """Everything drawn from `self.rng`, in its fixed order: a few values per tutor."""
        tutors = [self._tutor(i, arch) for i, arch in enumerate(self._plan())]
        roster = self._rosters(tutors)
        params = _params(tutors, roster)
        students = self._students()
        return _Plan(_tutors_frame(tutors, self.rng), students, params, roster)

    def chunk(self, params: pl.DataFrame, roster: pl.DataFrame, at: _Offsets) -> _Chunk:
        """The sessions, feedback and events of a run of consecutive tutors, before numbering.

        Every random draw is keyed by a global row number, and `at` says where this chunk's
        numbers start, so a tutor's rows are the same whichever chunk it falls in.
        """
        sessions = self._sessions(params, roster, at)
        feedback = self._feedback(sessions)
        events = self._events(params, sessions, at)
        at.sessions += sessions.height
        done = pl.col("scheduled_start") + pl.col("duration_minutes") * _MIN
        return _Chunk(sessions.with_columns(created_at=done, updated_at=done), feedback, events)

    def _plan(self) -> list[Archetype]:
        plan = _archetype_plan(self.spec.tutors)
        _shuffle(self.rng.random, plan)
        return plan

    def _tutor(self, i: int, arch: Archetype) -> _Tutor:
        r = self.rng.random
        if arch.name == "new":
            recent = min(self.spec.days, 60) * (0.2 + 0.7 * r())
            onboarding = self.end_us - int(recent * _DAY)
        else:
            lo, hi = arch.tenure_days
            onboarding = self.start_us - int((lo + (hi - lo) * r()) * _DAY)
        onboarding -= onboarding % _MIN
        lps_lo, lps_hi = arch.logins_per_session
        spw_lo, spw_hi = arch.sessions_per_week
        tutor = _Tutor(
            t=i,
            tutor_id=f"T{i + 1:04d}",
            arch=arch,
            rate=spw_lo + (spw_hi - spw_lo) * r(),
            no_show=arch.no_show * (0.6 + 0.8 * r()),
            reschedule=arch.reschedule * (0.6 + 0.8 * r()),
            engagement=arch.engagement + 0.1 * (r() - 0.5),
            objectives=arch.objectives + 0.08 * (r() - 0.5),
            rating=arch.rating + 0.4 * (r() - 0.5),
            logins_per_session=lps_lo + (lps_hi - lps_lo) * r(),
            response_median=arch.response_median_minutes * (0.6 + r()),
            subjects=_choose(r, _SUBJECTS, 1 + int(r() * 3)),
            onboarding_us=onboarding,
            fade=0.45 + 0.65 * r() if arch.trend > 0 else 1.0,
        )
        self._schedule(tutor)
        return tutor

    def _schedule(self, tutor: _Tutor) -> None:
        """How many sessions, in which slots, and the window its events fall in.

        Churners' booking rate falls linearly to zero at `fade` × span (past the end when
        fade > 1: still fading when the period ends), so they book half as much or less.
        """
        tutor.lo = max(self.slot_lo, self._slots_before(tutor.onboarding_us))
        tutor.span = max(0, self.slot_hi - tutor.lo)
        fade = tutor.fade
        within = min(1.0, fade)
        share = within - within * within / (2 * fade) if tutor.arch.trend > 0 else 1.0
        weeks = tutor.span / (7 * _SLOTS_PER_DAY)
        wanted = tutor.rate * weeks * share * (0.85 + 0.3 * self.rng.random())
        tutor.n = min(math.floor(wanted + 0.5), int(tutor.span * within) // 3)
        tutor.events_from = max(self.start_us, tutor.onboarding_us)
        tutor.events_to = self.end_us
        if tutor.arch.trend > 0:
            faded = self.start_us + int(fade * (self.end_us - self.start_us)) + 3 * _DAY
            tutor.events_to = min(self.end_us, faded)

    def _rosters(self, tutors: list[_Tutor]) -> pl.DataFrame:
        """Established tutors already teach some students: their counts start above zero."""
        r = self.rng.random
        rows: list[tuple[int, int, int, int]] = []
        for tutor in tutors:
            if tutor.arch.name == "new" or not self.n_students:
                continue
            prior: dict[int, int] = {}
            for _ in range(2 + int(r() * 5)):
                prior.setdefault(int(r() * self.n_students), 1 + int(r() * 25))
            rows.extend((tutor.t, j, s, c) for j, (s, c) in enumerate(prior.items()))
        schema = {"t": _INT, "j": _INT, "sidx": _INT, "prior": _INT}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _students(self) -> pl.DataFrame:
        r = self.rng.random
        rows: list[tuple[object, ...]] = []
        for i in range(self.n_students):
            name = f"{_FIRST[int(r() * len(_FIRST))]} {_LAST[int(r() * len(_LAST))]}"
            age = 8 + int(r() * 15) if r() < 0.85 else 18 + int(r() * 30)
            grade = None if r() < 0.1 else _grade(age)
            t = self.start_us - int((1 + (_STUDENT_DAYS - 1) * r()) * _DAY)
            rows.append((f"S{i + 1:05d}", name, None if r() < 0.05 else age, grade, t - t % _MIN))
        schema = {
            "student_id": _STR,
            "name": _STR,
            "age": _INT,
            "grade_level": _STR,
            "created_at": _INT,
        }
        df = pl.DataFrame(rows, schema=schema, orient="row")
        return _conform(df.with_columns(updated_at=pl.col("created_at")), "students")

    # --- sessions (vectorised) ------------------------------------------------------------------

    def _slots(self, params: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        """Each tutor's `n` distinct booked slots: first distinct ones among 2n + 8 draws."""
        cand = params.select("t", "n", "lo", "span", "fade", "fading").with_columns(
            m=2 * pl.col("n") + 8
        )
        cand = _rows(cand.filter(pl.col("n") > 0), "m", at.slot_draws)
        at.slot_draws += cand.height
        cand = _with_uniforms(cand, self.base, "_r", [_S.SLOT])
        u = _u(_S.SLOT)
        span = pl.col("span").cast(pl.Float64)
        x = (
            pl.when("fading")
            .then(span * pl.col("fade") * (1.0 - (1.0 - u).sqrt()))
            .otherwise(span * u)
        )
        # Sorts on one integer key rather than hash-based unique/over: several times faster at
        # this size. Rows start in (tutor, draw) order and the sorts are stable.
        tk = pl.col("t") * (self.slot_hi + 1) + pl.col("k")
        return (
            cand.filter(x < span)
            .select("t", "n", "_r", k=pl.col("lo") + x.floor().cast(_INT))
            .with_columns(tk=tk)
            .sort("tk", maintain_order=True)
            .filter(_position_in_run("tk") == 0)  # earliest draw of each slot
            .sort("_r")
            .filter(_position_in_run("t") < pl.col("n"))
            .sort("tk")
            .select("t", "k")
            .with_row_index("_s", offset=at.sessions)
            .with_columns(pl.col("_s").cast(_INT))
        )

    def _sessions(self, params: pl.DataFrame, roster: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        """One row per session, in `_s` order: sessions numbered by (tutor, slot)."""
        df = self._slots(params, at).join(params, on="t", how="left", maintain_order="left")
        streams = [s for s in _S if _S.NEW_STUDENT <= s <= _S.FEEDBACK]
        df = _with_uniforms(df, self.base, "_s", streams)
        df = self._students_of(df, roster)
        bad = pl.col("trend") * pl.min_horizontal(
            1.0, (pl.col("k") - pl.col("lo")) / (pl.col("span") * pl.col("fade"))
        )
        k = pl.col("k")
        slot = (
            self.midnight_us + (k // _SLOTS_PER_DAY) * _DAY + (7 + 2 * (k % _SLOTS_PER_DAY)) * _HOUR
        )
        offset = _u(_S.OFFSET)
        booked = slot + pl.when(offset < 0.6).then(0).when(offset < 0.8).then(15 * _MIN).otherwise(
            30 * _MIN
        )
        kind = _u(_S.KIND)
        df = df.with_columns(
            bad=bad,
            scheduled_start=pl.when(booked < self.end_us).then(booked).otherwise(slot),
            session_type=pl.when(kind < 0.80)
            .then(pl.lit("1-on-1"))
            .when(kind < 0.95)
            .then(pl.lit("group"))
            .otherwise(pl.lit("workshop")),
            duration_minutes=pl.when(kind < 0.16)
            .then(30)
            .when(kind < 0.36)
            .then(45)
            .when(kind < 0.72)
            .then(60)
            .when(kind < 0.80)
            .then(90)
            .when(kind < 0.89)
            .then(60)
            .when(kind < 0.98)
            .then(90)
            .otherwise(60)
            .cast(_INT),
        )
        df = df.with_columns(
            no_show=_u(_S.NO_SHOW) < pl.col("no_show_p") + 0.12 * pl.col("bad"),
            eng_mean=pl.col("engagement") - 0.2 * pl.col("bad"),
        )
        df = df.with_columns(late_start_minutes=_late())
        df = df.with_columns(
            engagement_score=_engagement(),
            technical_issues=~pl.col("no_show") & (_u(_S.TECH) < pl.col("technical")),
            actual_start=pl.when(~pl.col("no_show")).then(
                pl.col("scheduled_start") + pl.col("late_start_minutes") * _MIN
            ),
            subject=pl.col("subjects").list.get(
                _index(_u(_S.SUBJECT), pl.col("subjects").list.len())
            ),
            tutor_initiated_reschedule=_u(_S.RESCHEDULE)
            < pl.col("reschedule") + 0.15 * pl.col("bad"),
        )
        return (
            df.with_columns(learning_objectives_met=_objectives())
            .select(*_SESSION_COLUMNS, *_FEEDBACK_INPUTS)
            .with_columns(
                student_id=_student_ids(),
                # rank among this chunk's sessions at the same instant: see `_session_ids`
                _tie=pl.int_range(pl.len(), dtype=_INT).over("scheduled_start"),
            )
        )

    def _students_of(self, df: pl.DataFrame, roster: pl.DataFrame) -> pl.DataFrame:
        """Student and session_number of each session.

        A session is with a new student (drawn from the shared pool) with the archetype's
        probability, or always when the tutor has nobody yet; otherwise with a uniformly drawn
        member of the tutor's roster so far (initial roster, then new students in order).
        """
        pos = _position_in_run("t")  # rows are sorted by (tutor, slot)
        is_new = (_u(_S.NEW_STUDENT) < pl.col("new_student")) | (
            (pl.col("init_n") == 0) & (pos == 0)
        )
        df = df.with_columns(is_new=is_new)
        new_before = pl.col("is_new").cast(_INT).cum_sum() - pl.col("is_new").cast(_INT)
        df = df.with_columns(
            # roster size before this session = position in the roster of a new student
            j=pl.col("init_n") + new_before - pl.when(pos == 0).then(new_before).forward_fill(),
            new_sidx=_index(_u(_S.NEW_PICK), self.n_students),
        )
        df = df.with_columns(
            j_pick=pl.when(~pl.col("is_new")).then(_index(_u(_S.RETURNING), pl.col("j")))
        )
        grown = df.filter("is_new").select("t", "j", sidx="new_sidx")
        members = pl.concat([roster.select("t", "j", "sidx"), grown])
        picked = members.rename({"j": "j_pick", "sidx": "picked"})
        df = df.join(picked, on=["t", "j_pick"], how="left", maintain_order="left")
        df = df.with_columns(sidx=pl.when("is_new").then("new_sidx").otherwise("picked")).join(
            roster.select("t", "sidx", "prior"), on=["t", "sidx"], how="left", maintain_order="left"
        )
        # running count per (tutor, student) in slot order, on top of the sessions before;
        # computed on a narrow copy (rows are in `_s` order, so it lines up when sorted back)
        number = (
            df.select("_s", "prior", pair=pl.col("t") * max(1, self.n_students) + pl.col("sidx"))
            .sort("pair", maintain_order=True)
            .select("_s", n=pl.col("prior").fill_null(0) + _position_in_run("pair") + 1)
            .sort("_s")
        )
        return df.with_columns(session_number=number["n"])

    # --- feedback (vectorised) ------------------------------------------------------------------

    def _feedback(self, sessions: pl.DataFrame) -> pl.DataFrame:
        """Feedback for most attended sessions and a few no-shows.

        Feedback not yet submitted by `spec.end` is left out, as it would be in production.
        """
        chance = pl.when("no_show").then(0.03).otherwise(pl.col("feedback_p"))
        df = sessions.filter(_u(_S.FEEDBACK) < chance)
        streams = [s for s in _S if _S.DELAY <= s <= _S.TEXT_PICK]
        df = _with_uniforms(df, self.base, "_s", streams)
        ended = (
            pl.col("scheduled_start")
            + (pl.col("late_start_minutes") + pl.col("duration_minutes")) * _MIN
        )
        d = _u(_S.DELAY)
        delay = (2.0 + 1440.0 * d * d * d) * _MIN  # median 3 h, at most a day (no libm pow)
        df = df.with_columns(submitted_at=ended + delay.floor().cast(_INT)).filter(
            pl.col("submitted_at") < self.end_us
        )
        mean = (
            pl.col("rating")
            - 0.9 * pl.col("bad")
            + pl.when("no_show").then(-2.8).otherwise(_rating_shift())
        )
        overall = (
            (mean + 0.55 * _normal(_S.RATING_1, _S.RATING_2, _S.RATING_3, _S.RATING_4) + 0.5)
            .floor()
            .clip(1, 5)
            .cast(_INT)
        )
        df = df.with_columns(overall_rating=overall)
        o = pl.col("overall_rating")
        subs = {
            name: _sub_rating(o, _u(s))
            for name, s in zip(
                _SUB_RATINGS, [_S.SUB_1, _S.SUB_2, _S.SUB_3, _S.SUB_4, _S.SUB_5], strict=True
            )
        }
        recommend = _u(_S.REC) < o.replace_strict(_RECOMMEND, return_dtype=_FLOAT)
        return df.with_columns(
            **subs,
            is_first_session=first_session(),
            would_recommend=pl.when(_u(_S.REC_NULL) >= 0.1).then(recommend),
            improvement_areas=_improvement_areas(),
            free_text_feedback=_free_text(),
            created_at=pl.col("submitted_at"),
        )

    # --- events (vectorised) --------------------------------------------------------------------

    def _events(self, params: pl.DataFrame, sessions: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        """Logins (mostly shortly before a session), message responses, a few others."""
        held = sessions.group_by("t").agg(held=pl.len().cast(_INT))
        per = (
            params.join(held, on="t", how="left", maintain_order="left")
            .with_columns(pl.col("held").fill_null(0))
            .with_columns(first_s=at.sessions + pl.col("held").cum_sum() - pl.col("held"))
        )
        per = _with_uniforms(per, self.base, "t", [_S.LOGIN_EXTRA, _S.MSG_SCALE, _S.OTHER_N])
        active = pl.col("ev_to") > pl.col("ev_from")
        held_f = pl.col("held").cast(pl.Float64)
        logins = (held_f * pl.col("lps") + 0.5).floor().cast(_INT) + (_u(_S.LOGIN_EXTRA) < 0.5)
        messages = (held_f * pl.col("mps") * (0.8 + 0.4 * _u(_S.MSG_SCALE)) + 0.5).floor()
        others = pl.col("held") // 25 + _index(_u(_S.OTHER_N), 3)
        per = per.with_columns(
            n_login=pl.when(active).then(logins).otherwise(0),
            n_msg=pl.when(active).then(messages.cast(_INT)).otherwise(0),
            n_other=pl.when(active).then(others).otherwise(0),
        )
        parts = [
            self._logins(per, sessions, at),
            self._messages(per, at),
            self._others(per, at),
        ]
        events = pl.concat(
            [part.with_columns(_part=pl.lit(i, dtype=_INT)) for i, part in enumerate(parts)]
        )
        return events.join(
            params.select("t", "tutor_id"), on="t", how="left", maintain_order="left"
        ).with_columns(created_at=pl.col("event_timestamp"))

    def _at(self, u: pl.Expr) -> pl.Expr:
        """A uniform instant in the tutor's event window."""
        width = (pl.col("ev_to") - pl.col("ev_from")).cast(pl.Float64)
        return pl.col("ev_from") + (u * width).floor().cast(_INT)

    def _logins(self, per: pl.DataFrame, sessions: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        streams = [_S.LOGIN_TIED, _S.LOGIN_SESSION, _S.LOGIN_BEFORE, _S.LOGIN_AT]
        df = _rows(per, "n_login", at.logins)
        at.logins += df.height
        df = _with_uniforms(df, self.base, "_r", streams)
        tied = (pl.col("held") > 0) & (_u(_S.LOGIN_TIED) < 0.75)
        df = df.with_columns(
            _s=pl.when(tied).then(pl.col("first_s") + _index(_u(_S.LOGIN_SESSION), pl.col("held")))
        ).join(sessions.select("_s", "scheduled_start"), on="_s", how="left", maintain_order="left")
        before = pl.col("scheduled_start") - 5 * _MIN - _index(_u(_S.LOGIN_BEFORE), 85 * _MIN)
        ts = pl.when(before >= pl.col("ev_from")).then(before).otherwise(self._at(_u(_S.LOGIN_AT)))
        return _event_rows(df, LOGIN, ts, pl.lit(None, dtype=_STR))

    def _messages(self, per: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        streams = [_S.MSG_AT, _S.MSG_META, _S.MSG_MINUTES]
        df = _rows(per, "n_msg", at.messages)
        at.messages += df.height
        df = _with_uniforms(df, self.base, "_r", streams)
        df = df.with_columns(ts=self._at(_u(_S.MSG_AT)))
        width = (pl.col("ev_to") - pl.col("ev_from")).cast(pl.Float64)
        drift = (
            pl.when("fading")
            .then(1.0 + 2.0 * (pl.col("ts") - pl.col("ev_from")) / width)
            .otherwise(1.0)
        )
        v = _u(_S.MSG_MINUTES)
        # log-logistic (shape 2) around the tutor's median: sqrt keeps it libm-free
        minutes = (
            (pl.col("response_median") * drift * (v / (1.0 - v)).sqrt())
            .clip(upper_bound=10080.0)
            .round(1)
        )
        x = _u(_S.MSG_META)
        meta = (
            pl.when(x < 0.01)
            .then(pl.lit(None, dtype=_STR))
            .when(x < 0.04)
            .then(pl.lit("{}"))
            .when(x < 0.05)
            .then(pl.lit('{"response_time_minutes": "n/a"}'))
            .when(x < 0.06)
            .then(pl.lit('{"response_time_minutes": null}'))
            .otherwise(pl.concat_str([pl.lit('{"response_time_minutes": '), minutes, pl.lit("}")]))
        )
        return _event_rows(df, MESSAGE_RESPONSE, pl.col("ts"), meta)

    def _others(self, per: pl.DataFrame, at: _Offsets) -> pl.DataFrame:
        df = _rows(per, "n_other", at.others)
        at.others += df.height
        df = _with_uniforms(df, self.base, "_r", [_S.OTHER_KIND, _S.OTHER_AT])
        kinds = [kind for kind, _ in _OTHER_EVENTS]
        which = _index(_u(_S.OTHER_KIND), len(_OTHER_EVENTS))
        meta: pl.Expr = pl.lit(None, dtype=_STR)
        for i, (_, m) in enumerate(_OTHER_EVENTS):
            meta = pl.when(which == i).then(pl.lit(m, dtype=_STR)).otherwise(meta)
        df = df.with_columns(event_type=_pick(_u(_S.OTHER_KIND), kinds))
        return _event_rows(df, None, self._at(_u(_S.OTHER_AT)), meta)


# --- expressions -------------------------------------------------------------------------------


def _params(tutors: list[_Tutor], roster: pl.DataFrame) -> pl.DataFrame:
    """Per-tutor numbers the vectorised steps join onto their rows."""
    cols: dict[str, list[object]] = {
        "t": [t.t for t in tutors],
        "tutor_id": [t.tutor_id for t in tutors],
        "n": [t.n for t in tutors],
        "lo": [t.lo for t in tutors],
        "span": [t.span for t in tutors],
        "fade": [t.fade for t in tutors],
        "fading": [t.arch.trend > 0 for t in tutors],
        "trend": [t.arch.trend for t in tutors],
        "no_show_p": [t.no_show for t in tutors],
        "reschedule": [t.reschedule for t in tutors],
        "engagement": [t.engagement for t in tutors],
        "objectives": [t.objectives for t in tutors],
        "rating": [t.rating for t in tutors],
        "on_time": [t.arch.on_time for t in tutors],
        "slightly_late": [t.arch.slightly_late for t in tutors],
        "very_late": [t.arch.very_late for t in tutors],
        "technical": [t.arch.technical for t in tutors],
        "feedback_p": [t.arch.feedback for t in tutors],
        "new_student": [t.arch.new_student for t in tutors],
        "lps": [t.logins_per_session for t in tutors],
        "mps": [t.arch.messages_per_session for t in tutors],
        "response_median": [t.response_median for t in tutors],
        "subjects": [t.subjects for t in tutors],
        "ev_from": [t.events_from for t in tutors],
        "ev_to": [t.events_to for t in tutors],
    }
    ints = {"t", "n", "lo", "span", "ev_from", "ev_to"}
    special = {"tutor_id": _STR, "fading": _BOOL, "subjects": _STRS}
    df = pl.DataFrame(
        [
            pl.Series(name, values, dtype=_INT if name in ints else special.get(name, _FLOAT))
            for name, values in cols.items()
        ]
    )
    sizes = roster.group_by("t").agg(init_n=pl.len().cast(_INT))
    return df.join(sizes, on="t", how="left", maintain_order="left").with_columns(
        pl.col("init_n").fill_null(0)
    )


def _late() -> pl.Expr:
    """Minutes late: 0, 1–5, 6–15 or 16–60 (never more than the session lasts); 0 for no-shows."""
    band = _u(_S.LATE_BAND)
    value = _u(_S.LATE_VALUE)
    on_time = pl.col("on_time") - 0.3 * pl.col("bad")
    slight = on_time + pl.col("slightly_late")
    very = slight + pl.col("very_late")
    return (
        pl.when(pl.col("no_show") | (band < on_time))
        .then(0)
        .when(band < slight)
        .then(1 + _index(value, 5))
        .when(band < very)
        .then(pl.min_horizontal(pl.col("duration_minutes"), 16 + _index(value, 45)))
        .otherwise(6 + _index(value, 10))
        .cast(_INT)
    )


def _engagement() -> pl.Expr:
    """Engagement in [0, 1] of attended sessions, ~5% unrecorded; lateness drags it down."""
    noise = 0.1 * _normal(_S.ENG_1, _S.ENG_2, _S.ENG_3, _S.ENG_4)
    raw = pl.col("eng_mean") - 0.003 * pl.col("late_start_minutes") + noise
    recorded = ~pl.col("no_show") & (_u(_S.ENG_NULL) >= 0.05)
    return pl.when(recorded).then(raw.clip(0.0, 1.0).round(2))


def _objectives() -> pl.Expr:
    """Objectives met, likelier in engaged sessions; ~10% unrecorded, null for no-shows."""
    lift = 0.5 * (pl.col("engagement_score") - pl.col("eng_mean")).fill_null(0.0)
    chance = pl.col("objectives") - 0.25 * pl.col("bad") + lift
    recorded = ~pl.col("no_show") & (_u(_S.OBJ_NULL) >= 0.10)
    return pl.when(recorded).then(_u(_S.OBJ) < chance)


def _rating_shift() -> pl.Expr:
    """How far this session pulls the rating away from the tutor's usual level."""
    eng = pl.col("engagement_score")
    obj = pl.col("learning_objectives_met")
    return (
        1.5 * (eng - pl.col("eng_mean")).fill_null(0.0)
        + pl.when(obj).then(0.2).when(~obj).then(-0.35).otherwise(0.0)
        - pl.when(~on_time()).then(0.5).otherwise(0.0)
        - pl.when("technical_issues").then(0.4).otherwise(0.0)
    )


def _sub_rating(overall: pl.Expr, u: pl.Expr) -> pl.Expr:
    """Mostly the overall rating, sometimes one off, ~8% missing."""
    v = _index(u, 12)
    return (
        pl.when(v == 0)
        .then((overall - 1).clip(1, 5))
        .when(v <= 8)
        .then(overall)
        .when(v <= 10)
        .then((overall + 1).clip(1, 5))
        .cast(_INT)
    )


def _improvement_areas() -> pl.Expr:
    """Mostly none for good ratings; otherwise what went wrong, plus one or two more.

    Items are distinct by construction and joined then split: far faster than list kernels.
    """
    late = ~on_time()
    tech = pl.col("technical_issues")
    dull = (pl.col("engagement_score") < 0.5).fill_null(False)
    a1 = _pick(_u(_S.AREA_1), _AREAS)
    a2 = _pick(_u(_S.AREA_2), _AREAS)

    def named(area: pl.Expr) -> pl.Expr:
        return (
            ((area == "punctuality") & late)
            | ((area == "technical setup") & tech)
            | ((area == "engagement") & dull)
        )

    parts = [
        pl.when(late).then(pl.lit("punctuality")),
        pl.when(tech).then(pl.lit("technical setup")),
        pl.when(dull).then(pl.lit("engagement")),
        pl.when(~named(a1)).then(a1),
        pl.when((_u(_S.AREA_TWO) < 0.5) & (a2 != a1) & ~named(a2)).then(a2),
    ]
    poor = pl.concat_str(parts, separator=_SEP, ignore_nulls=True).str.split(_SEP)
    mode = _u(_S.AREA_MODE)
    good = (
        pl.when(mode < 0.7)
        .then(pl.lit(None, dtype=_STRS))
        .when(mode < 0.85)
        .then(pl.lit([], dtype=_STRS))
        .otherwise(a1.str.split(_SEP))
    )
    return pl.when(successful(pl.col("overall_rating"))).then(good).otherwise(poor)


def _free_text() -> pl.Expr:
    o = pl.col("overall_rating")
    band = pl.when(o >= 5).then(0).when(o >= 3).then(1).otherwise(2)
    size = (
        pl.when(band == 0)
        .then(len(_TEXTS_GOOD))
        .when(band == 1)
        .then(len(_TEXTS_MID))
        .otherwise(len(_TEXTS_BAD))
    )
    key = 10 * band + _index(_u(_S.TEXT_PICK), size)
    text = key.replace_strict(list(_TEXTS), list(_TEXTS.values()), return_dtype=_STR)
    return pl.when(_u(_S.TEXT_ON) < 0.3).then(text)


def _event_rows(df: pl.DataFrame, kind: str | None, ts: pl.Expr, meta: pl.Expr) -> pl.DataFrame:
    event_type = pl.lit(kind, dtype=_STR) if kind else pl.col("event_type")
    return df.select(
        "t", "_r", event_type=event_type, event_timestamp=ts.cast(_INT), metadata=meta.cast(_STR)
    )


# --- final frames ------------------------------------------------------------------------------


def _student_ids() -> pl.Expr:
    return pl.format("S{}", (pl.col("sidx") + 1).cast(_STR).str.zfill(5))


def _ids(prefix: str, width: int, rank: pl.Expr) -> pl.Expr:
    """Zero-padded numbers from 0-based ranks: `SES000001`, `FB000001`, …"""
    return pl.format(f"{prefix}{{}}", (rank + 1).cast(_STR).str.zfill(width))


def _grade(age: int) -> str:
    if age < 18:
        return f"Grade {max(1, age - 5)}"
    return "College" if age < 23 else "Adult"


def _tutors_frame(tutors: list[_Tutor], rng: random.Random) -> pl.DataFrame:
    """Tutor rows: names, contact and profile details."""
    r = rng.random
    rows: list[tuple[object, ...]] = []
    for t in tutors:
        first, last = _FIRST[int(r() * len(_FIRST))], _LAST[int(r() * len(_LAST))]
        rows.append(
            (
                t.tutor_id,
                f"{first} {last}",
                _email(first, last, t.tutor_id),
                t.onboarding_us,
                _status(r(), t),
                t.subjects,
                None if r() < 0.1 else _EDUCATION[int(r() * len(_EDUCATION))],
                None if r() < 0.1 else _LOCATIONS[int(r() * len(_LOCATIONS))],
                None if r() < 0.05 else round(t.rate, 1),
                t.arch.name,
                t.onboarding_us,
                t.onboarding_us,
            )
        )
    schema = {k: _INT if v == TS else v for k, v in TABLE_SCHEMAS["tutors"].items()}
    return _conform(pl.DataFrame(rows, schema=schema, orient="row"), "tutors")


def _email(first: str, last: str, tutor_id: str) -> str:
    """ASCII and unique: the tutor id is part of it."""
    local = unicodedata.normalize("NFKD", f"{first}.{last}.{tutor_id}").encode("ascii", "ignore")
    return f"{local.decode().lower()}@tutors.example.com"


def _status(x: float, t: _Tutor) -> str:
    if t.arch.trend > 0:
        return "churned" if t.fade < 0.85 else "inactive"
    if t.arch.name == "at_risk" and x < 0.15:
        return "inactive"
    return "active"


def _conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """The contract's columns, in order; Int64 epoch microseconds become UTC timestamps."""
    return df.select([pl.col(c).cast(t) for c, t in TABLE_SCHEMAS[table].items()])
