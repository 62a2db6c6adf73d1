"""Short transactions under a lock_timeout, tried again with backoff: how a
ddl step and a backfill batch take their locks without queueing the proxy's
writes behind them for longer than the timeout."""

from __future__ import annotations

import re
import time

import psycopg2
import psycopg2.errors

from ..errors import OperatorError
from .settings import backoff_seconds, lock_attempts, lock_timeout_ms
from .statement import first_line
from .timeouts import LIFTED_IN_TRANSACTION


class LockNotGranted(OperatorError):
    """A ddl step never got its lock within the bounded attempts."""


def set_lock_timeout(timeout_ms: int) -> str:
    return f"SET LOCAL lock_timeout = '{timeout_ms}ms'"


# Sessions that have held a lock on a relation the statement names for longer
# than a proxy's write takes: an autovacuum, a long report, a transaction left
# open. Asking for the lock while one is there would only queue the proxy's
# writes behind the request until lock_timeout, attempt after attempt.
# The last column: an autovacuum that may be cancelled (not one that keeps the
# table from transaction ID wraparound).
LONG_HOLDERS = """
    SELECT DISTINCT a.pid, CASE WHEN a.backend_type = 'client backend' THEN coalesce(nullif(a.application_name, ''),
                                    'a session') ELSE a.backend_type END, c.relname,
           a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%%(to prevent wraparound)%%'
      FROM pg_locks l
      JOIN pg_class c ON c.oid = l.relation
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.granted AND l.pid <> pg_backend_pid()
       AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)
       AND a.xact_start < now() - make_interval(secs => %s)
     ORDER BY 1"""


def _long_holders(cur, sql: str, timeout_ms: int) -> list[tuple]:
    cur.execute(LONG_HOLDERS, (sorted(set(re.findall(r"\w+", sql))), timeout_ms / 1000))
    return cur.fetchall()


def _cancelled(cur, pid: int) -> bool:
    """Cancel an autovacuum, as the server itself does to one that blocks a
    lock request for deadlock_timeout (a request we never let wait that
    long); it runs again later. Needs superuser or, on 18, a member of
    pg_signal_autovacuum_worker: without that, False."""
    try:
        cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
        return cur.fetchone()[0]
    except psycopg2.errors.InsufficientPrivilege:
        return False


def _await_long_holders(cur, sql: str, timeout_ms: int, patience: float, told: set[int]) -> None:
    """Wait, without asking for any lock, up to patience seconds for the long
    holders of the statement's relations to be gone, cancelling an autovacuum
    where allowed; say once for each (told: the pids said so far) what it does."""
    deadline = time.monotonic() + patience
    while holders := _long_holders(cur, sql, timeout_ms):
        for pid, who, relation, autovacuum in holders:
            if pid in told:
                continue
            told.add(pid)
            if autovacuum and _cancelled(cur, pid):
                print(f"«{first_line(sql)}»: cancelled the autovacuum of {relation} (pid {pid}) that held up its "
                      "lock, as PostgreSQL does for any statement kept waiting by one; it will run again", flush=True)
            else:
                print(f"«{first_line(sql)}»: waiting for {who} (pid {pid}) to finish with {relation} before asking "
                      "for its lock", flush=True)
        if time.monotonic() >= deadline:
            return
        time.sleep(min(0.1, patience))


def in_transactions_with_lock_retries(conn, work, *, what: str, wait_for: str | None = None,
                                      nothing_changed: str = "nothing of that statement was changed",
                                      committed=None):
    """work(cursor) inside BEGIN ... COMMIT under the lock_timeout, tried again
    with backoff while a lock is not had in time; its result once it commits.
    Before each attempt, while a session has long held a lock on a relation
    that wait_for (SQL) names, it waits without asking for any (an autovacuum
    it cancels where allowed). After the last attempt, one line:
    LockNotGranted saying what it could not get (and nothing_changed).
    committed(seconds), if given, hears how long the COMMIT took."""
    timeout, attempts = lock_timeout_ms(), lock_attempts()
    told: set[int] = set()
    with conn.cursor() as cur:
        for attempt in range(1, attempts + 1):
            if wait_for:
                _await_long_holders(cur, wait_for, timeout, backoff_seconds(attempt), told)
            try:
                cur.execute("BEGIN")
                cur.execute(set_lock_timeout(timeout))
                result = work(cur)
                started = time.monotonic()
                cur.execute("COMMIT")
                if committed:
                    committed(time.monotonic() - started)
                return result
            except psycopg2.errors.LockNotAvailable:
                cur.execute("ROLLBACK")
                if attempt < attempts:
                    time.sleep(backoff_seconds(attempt))
            except BaseException:
                if not conn.closed:
                    cur.execute("ROLLBACK")
                raise
    raise LockNotGranted(
        f"gave up after {attempts} attempts to get {what}, "
        f"each waiting {timeout} ms: another session holds a conflicting lock "
        f"(see pg_locks and pg_stat_activity); {nothing_changed}, "
        "run the same command again once it is gone"
    )


def run_with_lock_retries(conn, sql: str, *, past_statement_timeout: bool = False) -> None:
    """sql in transactions with lock retries; past_statement_timeout: one
    that takes as long as the table is large and blocks no write (a
    constraint's validation), free of the session's statement timeouts."""

    def work(cur) -> None:
        if past_statement_timeout:
            cur.execute(LIFTED_IN_TRANSACTION)
        cur.execute(sql)

    in_transactions_with_lock_retries(conn, work, what=f"the lock for «{first_line(sql)}»", wait_for=sql)
