"""Autovacuum kept off the table a backfill changes, for as long as the
backfill runs, and not a moment longer than its process lives.

The batches commit every 0.1 s, so the row versions they leave dead start
autovacuums of the table while they run; upstream's one UPDATE, committed at
its end, never met one midway. An autovacuum reads the table and every index
of it, and writes and logs what it cleans, on the disk the proxy's commits
flush to: beside 007's batches at 1,000,000 requests that kept the proxy's
writes at p99 64 to 375 ms, and with no autovacuum 9 to 14 ms, the writer's
own floor (docs/design.md, "Autovacuum beside the batches").

So another session of the backfill holds SHARE UPDATE EXCLUSIVE on the table
in an open transaction: the lock a vacuum takes, which an autovacuum (other
than one against wraparound) does not wait for but skips the table. The
proxy's reads and writes do not conflict with it, and the open transaction
has no transaction id and no snapshot, so it holds back no vacuum of anything
else. It gives way to anyone who waits for it (an autovacuum against
wraparound, an operator's ANALYZE, VACUUM or index build): every CHECK_SECONDS
it looks for a session its lock blocks, and if there is one it lets go, to
take the lock again once the table is free. It ends with the backfill, or
with the process: the server ends a killed apply's sessions and their locks
with it.

An autovacuum may already hold the table when the guard asks: one begun
between two steps, on the dead rows the last backfill left, would otherwise
run beside the whole of the next. So the guard waits for the lock a little
longer than deadlock_timeout: the server cancels an autovacuum (other than
one against wraparound) that keeps a lock request waiting that long, for any
role. The proxy's reads and writes never queue behind that request (their
locks do not conflict with it); an operator's VACUUM, ANALYZE or index build
would, for at most that wait.

Autovacuum's ANALYZE is kept off with it, and the planner needs one after a
backfill: the statistics still describe the columns as they were before it
(a column 003 added, all NULL then, or none at all). So a backfill that
changed rows analyzes the table itself before it lets go (analyze_changed):
008's batches, planned on the statistics of before 003, moved 174 rows a
second instead of 1,309 (docs/design.md, "Autovacuum beside the batches").
The dead row versions are left for autovacuum once the backfill is over, as
after upstream's statement: vacuumed here, at autovacuum's pace, they kept
the proxy's writes at p99 67 ms for 160 s.

Nothing here may stop a backfill: a guard that cannot lock or loses its
session just lets autovacuum be.
"""

from __future__ import annotations

import threading

import psycopg2
from psycopg2 import sql

from ..database.connection import session_parameters
from .statement import labelled
from .timeouts import LIFTED, lifted

CHECK_SECONDS = 0.1
APPLICATION_NAME_BYTES = 63  # what PostgreSQL keeps

# The table, named so that any session finds it whatever its search_path.
QUALIFIED = """
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = to_regclass(%s)"""

# A session waiting for a lock on the table that this session's lock keeps from it.
SOMEONE_WAITS = """
    SELECT EXISTS (SELECT FROM pg_locks
                    WHERE locktype = 'relation' AND relation = %s::regclass AND NOT granted
                      AND pg_backend_pid() = ANY (pg_blocking_pids(pid)))"""

# How long the guard's request waits: past deadlock_timeout, so that an
# autovacuum in its way is cancelled by the server.
GUARD_LOCK_TIMEOUT = """
    SELECT set_config('lock_timeout',
                      (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000 + 1000)::int::text,
                      false)"""

# What a backfill's ANALYZE says it is (statement.labelled).
ANALYZE = "statistics for the rows it changed"

# How long the backfill's ANALYZE waits for the table: for this guard to let
# go (CHECK_SECONDS) and an autovacuum in its way to be cancelled (the server
# does that after deadlock_timeout, 1 s by default); not for a vacuum,
# ANALYZE or index build of someone else's to end.
ANALYZE_LOCK_TIMEOUT = "5s"


class AutovacuumKeptOff:
    """with AutovacuumKeptOff(conn, table): ... keeps autovacuum off table."""

    def __init__(self, conn, table: str):
        with conn.cursor() as cur:
            cur.execute(QUALIFIED, (table,))
            row = cur.fetchone()
        self.table = row[0] if row else None
        self.params = session_parameters(conn)
        self.done = threading.Event()
        self.session = None
        self.thread = threading.Thread(target=self._keep, daemon=True)

    def __enter__(self):
        if self.table:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        try:  # a request still waiting for the lock need wait no longer
            if self.session is not None:
                self.session.cancel()
        except psycopg2.Error:
            pass  # already closed
        if self.thread.is_alive():
            self.thread.join()

    def _keep(self) -> None:
        session = None
        try:
            name = f"nexus-migrate: autovacuum kept off {self.table}".encode()[:APPLICATION_NAME_BYTES]
            session = self.session = psycopg2.connect(**{**self.params,
                                                         "application_name": name.decode(errors="ignore")})
            session.autocommit = True
            with session.cursor() as cur:
                cur.execute(GUARD_LOCK_TIMEOUT)
                cur.execute(LIFTED)
            session.autocommit = False
            lock = sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(
                sql.SQL(self.table))  # quoted by the server (QUALIFIED)
            held = False
            while not self.done.is_set():
                with session.cursor() as cur:
                    if not held:
                        try:
                            cur.execute(lock)
                            held = True
                        except psycopg2.errors.LockNotAvailable:
                            session.rollback()  # an operator's vacuum, say, still has it: try again later
                    else:
                        cur.execute(SOMEONE_WAITS, (self.table,))
                        if cur.fetchone()[0]:
                            session.rollback()  # let it go first
                            held = False
                            self.done.wait(CHECK_SECONDS)  # before asking again
                self.done.wait(CHECK_SECONDS)
        except psycopg2.Error:
            pass  # a courtesy to the proxy, never a reason to stop the backfill
        finally:
            if session is not None:
                session.close()  # the lock goes with the session


def analyze_changed(conn, table: str, name: str) -> str:
    """ANALYZE of table by conn, an autocommit session (while
    AutovacuumKeptOff holds the table, it gives way to it), labelled with the
    backfill's name as its batches are, for pg_stat_activity. Returns what
    happened, in a few words."""
    with conn.cursor() as cur:
        cur.execute(QUALIFIED, (table,))
        row = cur.fetchone()
        if row is None:
            return "no table to analyze"
        cur.execute("SELECT set_config('lock_timeout', %s, false)", (ANALYZE_LOCK_TIMEOUT,))
        try:
            with lifted(cur):
                cur.execute(labelled(name, ANALYZE, f"ANALYZE {row[0]}"))  # quoted by the server (QUALIFIED)
            return f"analyzed {row[0]}"
        except psycopg2.errors.LockNotAvailable:
            return f"left {row[0]} to autovacuum's ANALYZE: another session holds the lock it takes"
        finally:
            if not conn.closed:  # (a session the server ended: its own error says why)
                cur.execute("RESET lock_timeout")
