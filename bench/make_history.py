"""A copy of a benchmark database with more history: the same tutors, sessions, feedback and
events re-inserted shifted back by multiples of 120 days (new ids), for the memory figures.

    python bench/make_history.py --admin-url postgresql://root@127.0.0.1:5432/test \
        --template tutormax_bench --name tutormax_hist5m --copies 6 --extra-days 26

`--copies 6 --extra-days 26` turns 693k sessions (120 days) into 5.0M (866 days);
`--copies 0 --extra-days 53` into 1.0M (173 days). The template must have no open connections.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa

END = "2026-03-03 00:00+00"

REPLICATE = """
INSERT INTO sessions SELECT session_id || '~' || :k, tutor_id, student_id, session_number,
  scheduled_start - make_interval(days => 120 * :k), actual_start - make_interval(days => 120 * :k),
  duration_minutes, subject, session_type, tutor_initiated_reschedule, no_show, late_start_minutes,
  engagement_score, learning_objectives_met, technical_issues,
  created_at - make_interval(days => 120 * :k), updated_at - make_interval(days => 120 * :k)
FROM sessions WHERE position('~' in session_id) = 0
  AND scheduled_start >= timestamptz '{end}' - make_interval(days => :cut);
INSERT INTO student_feedback SELECT f.feedback_id || '~' || :k, f.session_id || '~' || :k,
  f.student_id, f.tutor_id, f.overall_rating, f.is_first_session, f.subject_knowledge_rating,
  f.communication_rating, f.patience_rating, f.engagement_rating, f.helpfulness_rating,
  f.would_recommend, f.improvement_areas, f.free_text_feedback,
  f.submitted_at - make_interval(days => 120 * :k), f.created_at - make_interval(days => 120 * :k)
FROM student_feedback f JOIN sessions s ON s.session_id = f.session_id
WHERE position('~' in f.feedback_id) = 0
  AND s.scheduled_start >= timestamptz '{end}' - make_interval(days => :cut);
INSERT INTO tutor_events SELECT event_id || '~' || :k, tutor_id, event_type,
  event_timestamp - make_interval(days => 120 * :k), metadata,
  created_at - make_interval(days => 120 * :k)
FROM tutor_events WHERE position('~' in event_id) = 0
  AND event_timestamp >= timestamptz '{end}' - make_interval(days => :cut);
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--template", default="tutormax_bench")
    parser.add_argument("--name", required=True)
    parser.add_argument("--copies", type=int, default=6, help="full 120-day copies")
    parser.add_argument("--extra-days", type=int, default=0, help="then this many more days")
    args = parser.parse_args()
    admin = sa.create_engine(
        sa.make_url(args.admin_url).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{args.name}" TEMPLATE "{args.template}"'))
    admin.dispose()
    url = sa.make_url(args.admin_url).set(database=args.name, drivername="postgresql+psycopg2")
    engine = sa.create_engine(url)
    plan = [(k, 120) for k in range(1, args.copies + 1)]
    if args.extra_days:
        plan.append((args.copies + 1, args.extra_days))
    for k, cut in plan:
        with engine.begin() as conn:
            for statement in REPLICATE.format(end=END).split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement), {"k": k, "cut": cut})
        print(f"copy {k}: the last {cut} days, shifted back {120 * k} days", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        n = conn.execute(sa.text("SELECT count(*) FROM sessions")).scalar_one()
    print(f"{args.name}: {n:,} sessions")
    engine.dispose()


if __name__ == "__main__":
    main()
