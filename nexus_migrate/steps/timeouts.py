"""The session's timeouts, lifted for the statements that take as long as
the table is large, and whose work and waits hold up none of the proxy's
reads or writes: a concurrent index build or drop, a constraint's
validation, a backfill's count of the rows it will visit and its closing
ANALYZE, the rollback guard's look for stored values. Operators often give
the proxy's role a statement_timeout (30 s, say); over a table of tens of GB
such a statement would overrun it on every attempt, and the migration could
never finish. The session that keeps autovacuum off a backfill's table
lifts it too: its one wait, for its lock, is bounded by its own
lock_timeout.

A concurrent build or drop also lifts lock_timeout: it waits for every
transaction that was open when it began (a dashboard's long report, a
pg_dump), and a role's lock_timeout of a few seconds would fail it whenever
one runs longer. Its lock, SHARE UPDATE EXCLUSIVE, holds up no write while
it waits. (The steps that do hold up writes set a lock_timeout of their own.)

Everything else stays under the operator's timeouts, where they still guard
the proxy: DDL, which holds its lock for as long as it runs, and a
backfill's batches, each meant to take a fraction of a second."""

from __future__ import annotations

from contextlib import contextmanager

from psycopg2.extensions import TRANSACTION_STATUS_INERROR

STATEMENT_TIMEOUT, LOCK_TIMEOUT = "statement_timeout", "lock_timeout"

# Inside a transaction: gone with it.
LIFTED_IN_TRANSACTION = "SET LOCAL statement_timeout = 0"
# For the rest of a session.
LIFTED = "SET statement_timeout = 0"


@contextmanager
def lifted(cur, *timeouts: str):
    """The timeouts (statement_timeout when none is named) off for cur's
    session while the block runs, then back to what they were."""
    before = {}
    for name in timeouts or (STATEMENT_TIMEOUT,):
        cur.execute("SELECT current_setting(%s)", (name,))
        before[name] = cur.fetchone()[0]
        cur.execute("SELECT set_config(%s, '0', false)", (name,))
    try:
        yield
    finally:  # (an aborted transaction's ROLLBACK puts them back itself)
        conn = cur.connection
        if not conn.closed and conn.get_transaction_status() != TRANSACTION_STATUS_INERROR:
            for name, value in before.items():
                cur.execute("SELECT set_config(%s, %s, false)", (name, value))
