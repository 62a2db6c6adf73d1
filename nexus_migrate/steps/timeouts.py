"""The session's timeouts, lifted for the statements that take as long as the
table is large, and whose work and waits hold up none of the proxy's reads
or writes: a concurrent index build or drop, a constraint's validation, a
backfill's count of the rows it will visit and its closing ANALYZE, the
rollback guard's look for stored values. Operators often give the proxy's
role a statement_timeout (30 s, say), or from PostgreSQL 17 on a
transaction_timeout; over a table of tens of GB such a statement would
overrun it on every attempt, and the migration could never finish. The
session that keeps autovacuum off a backfill's table lifts them too: its
transaction lasts as long as the backfill, and its one wait, for its lock,
is bounded by its own lock_timeout.

A concurrent build or drop also lifts lock_timeout: it waits for every
transaction that was open when it began (a dashboard's long report, a
pg_dump), and a role's lock_timeout of a few seconds would fail it whenever
one runs longer. Its lock, SHARE UPDATE EXCLUSIVE, holds up no write while
it waits. (The steps that do hold up writes set a lock_timeout of their
own.)

Everything else stays under the operator's timeouts, where they still guard
the proxy: DDL, which holds its lock for as long as it runs, and a
backfill's batches, each meant to take a fraction of a second."""

from __future__ import annotations

from contextlib import contextmanager

from psycopg2.extensions import TRANSACTION_STATUS_INERROR

# What cuts a long statement short, where the server has it: transaction_timeout
# (PostgreSQL 17 on) ends the session when it expires.
STATEMENT_TIMEOUTS = ("statement_timeout", "transaction_timeout")
LOCK_TIMEOUT = "lock_timeout"


def lifting(names, *, local: bool) -> str:
    """The statement that sets those of names the server has to 0, for the
    transaction (local) or the rest of the session."""
    listed = ", ".join(f"'{name}'" for name in names)
    return f"SELECT set_config(name, '0', {str(local).lower()}) FROM pg_settings WHERE name IN ({listed})"


LIFTED_IN_TRANSACTION = lifting(STATEMENT_TIMEOUTS, local=True)
LIFTED = lifting(STATEMENT_TIMEOUTS, local=False)


@contextmanager
def lifted(cur, *more: str):
    """The statement timeouts (and more, such as LOCK_TIMEOUT) off for cur's
    session while the block runs, then back to what they were."""
    names = STATEMENT_TIMEOUTS + more
    cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (list(names),))
    before = cur.fetchall()
    cur.execute(lifting(names, local=False))
    try:
        yield
    finally:  # (an aborted transaction's ROLLBACK puts them back itself)
        conn = cur.connection
        if not conn.closed and conn.get_transaction_status() != TRANSACTION_STATUS_INERROR:
            for name, value in before:
                cur.execute("SELECT set_config(%s, %s, false)", (name, value))
