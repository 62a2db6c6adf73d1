"""The statements that take as long as the table is large, and block none of
the proxy's reads or writes meanwhile, run past the session's
statement_timeout: a concurrent index build or drop, a constraint's
validation, a backfill's count of the rows it will visit and its closing
ANALYZE, the rollback guard's look for stored values. Operators often give
the proxy's role a statement_timeout (30 s, say); over a table of tens of GB
such a statement would overrun it on every attempt, and the migration could
never finish. So does the session that keeps autovacuum off a backfill's
table, whose one wait, for its lock, is bounded by its own lock_timeout.

Everything else stays under the operator's timeout, where it still guards
the proxy: DDL, which holds its lock for as long as it runs, and a
backfill's batches, each meant to take a fraction of a second."""

from __future__ import annotations

from contextlib import contextmanager

from psycopg2.extensions import TRANSACTION_STATUS_INERROR

# Inside a transaction: gone with it.
LIFTED_IN_TRANSACTION = "SET LOCAL statement_timeout = 0"
# For the rest of a session.
LIFTED = "SET statement_timeout = 0"


@contextmanager
def lifted(cur):
    """statement_timeout off for cur's session while the block runs, then
    back to what it was."""
    cur.execute("SELECT current_setting('statement_timeout')")
    before = cur.fetchone()[0]
    cur.execute(LIFTED)
    try:
        yield
    finally:  # (an aborted transaction's ROLLBACK puts it back itself)
        conn = cur.connection
        if not conn.closed and conn.get_transaction_status() != TRANSACTION_STATUS_INERROR:
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (before,))
