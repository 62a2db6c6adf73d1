"""What scripts/migrate checks around a yoyo command, so that operators running
it at the same time, a killed run or a role without the rights get a plain
answer instead of yoyo's 10-second lock timeout or a raw database error.

- One run at a time: each run holds a PostgreSQL advisory lock on its own
  session for as long as yoyo works. A second run waits in PostgreSQL for the
  first to finish, then finds nothing left to do; yoyo's own lock (a row in
  yoyo_lock, given up on after 10 s) is never contended between our runs.
- A dead run is visible: the server frees a session's advisory locks when the
  session ends, so a yoyo_lock row seen while we hold the advisory lock was
  left by a process that was killed (or by a plain `yoyo` run, which takes no
  advisory lock).
- yoyo creates its own tables quietly ignoring a failure, then waits 10 s for
  a lock table that is not there; the rights are checked first instead.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import psycopg2
from psycopg2 import sql

from ..errors import OperatorError
from .connection import LEAST_PRIVILEGE, connect, explain
from .settings import database_url, migration_table

# The advisory lock's key (any constant; the key space is per database). In
# pg_locks it shows as locktype 'advisory', classid 0, objid LOCK_KEY, objsubid 1.
LOCK_KEY = 0x6E657875  # 'nexu'

WAIT_SECONDS = 0.5  # between tries for the lock that another run holds

LOCK_TABLE = "yoyo_lock"
LOG_TABLE = "_yoyo_log"
VERSION_TABLE = "_yoyo_version"



def application_name(command: str) -> str:
    """How this run's sessions show in pg_stat_activity (PostgreSQL keeps 63 bytes)."""
    return f"scripts/migrate {command} pid {os.getpid()} on {socket.gethostname()}"[:63]


def turn_holder(cur) -> str | None:
    """Who holds the migrations' turn (the advisory lock), as far as this role
    may see; None when no session does."""
    cur.execute("""
        SELECT a.pid, a.application_name, date_trunc('second', a.backend_start)
          FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s
           AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                (LOCK_KEY,))
    row = cur.fetchone()
    if row is None:
        return None
    pid, name, since = row
    if pid is None:
        return "another session"
    return f"session {pid}" + (f" '{name}'" if name else "") + (f" since {since}" if since else "")


def _holder(cur) -> str:
    return turn_holder(cur) or "another session"


@contextmanager
def one_run_at_a_time(conn, command: str):
    """Hold the advisory lock while the block runs, waiting for another run to
    finish first. The wait is a try every half second, not a statement that
    waits in the server: a waiting statement holds a snapshot, and every
    CREATE INDEX CONCURRENTLY of the run that is working would wait for it to
    end, phase after phase. (Sleeping here also keeps Ctrl-C working.)
    break-lock does not wait: a run that holds the lock is alive, so its
    yoyo_lock row is not stale."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if not cur.fetchone()[0]:
            if command == "break-lock":
                raise OperatorError(
                    f"a migration is running ({_holder(cur)}), so its lock is not stale: let it finish; "
                    "break-lock is for a lock left by a killed process")
            print(f"scripts/migrate {command}: another migration is running ({_holder(cur)}); "
                  "waiting for it to finish (Ctrl-C to give up)", file=sys.stderr, flush=True)
            while True:
                time.sleep(WAIT_SECONDS)
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                if cur.fetchone()[0]:
                    break
    try:
        yield
    finally:
        if not conn.closed:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def check_rights(conn) -> None:
    """The connected role can create yoyo's tables that are missing and use
    those that exist; otherwise one line saying which right is missing."""
    needed = {LOCK_TABLE: ("SELECT", "INSERT", "DELETE"), migration_table(): ("SELECT", "INSERT", "DELETE"),
              LOG_TABLE: ("INSERT",), VERSION_TABLE: ("SELECT",)}
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, current_schema(), current_database(), "
                    "has_schema_privilege(current_schema(), 'CREATE')")
        user, schema, dbname, can_create = cur.fetchone()
        missing, lacking = [], []
        for table, privileges in needed.items():
            cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table))
            if cur.fetchone()[0] is None:
                missing.append(table)
                continue
            without = []
            for privilege in privileges:
                cur.execute("SELECT has_table_privilege(format('%%I.%%I', %s::text, %s::text), %s)",
                            (schema, table, privilege))
                if not cur.fetchone()[0]:
                    without.append(privilege)
            if without:
                lacking.append(f"{', '.join(without)} on {table}")
    if missing and not can_create:
        raise OperatorError(
            f"role {user} may not create tables in schema {schema} of database {dbname}, and yoyo needs to "
            f"create its own there ({', '.join(missing)}): run scripts/migrate as the schema's owner, "
            f"or GRANT CREATE ON SCHEMA {schema} TO {user} ({LEAST_PRIVILEGE})")
    if lacking:
        raise OperatorError(
            f"role {user} lacks {'; '.join(lacking)} in database {dbname} (yoyo's bookkeeping): "
            f"run scripts/migrate as the role that owns the schema ({LEAST_PRIVILEGE})")


def left_lock(conn, command: str) -> OperatorError | None:
    """The error for a yoyo_lock row found while we hold the advisory lock,
    or None when there is no row."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(format('%%I.%%I', current_schema(), %s::text))", (LOCK_TABLE,))
        if cur.fetchone()[0] is None:
            return None
        cur.execute(sql.SQL("SELECT pid, ctime FROM {} LIMIT 1").format(sql.Identifier(LOCK_TABLE)))
        row = cur.fetchone()
    if row is None:
        return None
    pid, taken = row
    when = f" at {taken:%Y-%m-%d %H:%M:%S} UTC" if isinstance(taken, datetime) else ""
    return OperatorError(
        f"yoyo's lock was taken by process {pid}{when}, and no scripts/migrate run holds this database "
        "any more: that process was killed or stopped. Unless a plain `yoyo` command is migrating this "
        f"database right now, run scripts/migrate break-lock, then scripts/migrate {command} again")


@contextmanager
def guarded_session(command: str):
    """For a command of scripts/migrate that changes DATABASE_URL: a connection
    (yielded with the URL) that holds this run's turn, once the rights are
    checked and no stale yoyo lock is found; a database error inside becomes
    one line with its fix where there is one."""
    url = database_url()  # fails with one line when it is missing or malformed
    # Every session of this run, yoyo's too, is named in pg_stat_activity; and an
    # address that swallows packets fails in seconds, not in TCP's two minutes.
    os.environ.setdefault("PGAPPNAME", application_name(command))
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    conn = connect(url)
    try:
        with one_run_at_a_time(conn, command):
            check_rights(conn)
            if command != "break-lock":
                stale = left_lock(conn, command)
                if stale:
                    raise stale
            try:
                yield conn, url
            except psycopg2.Error as exc:
                explained = explain(exc, url)
                if explained:
                    raise explained from None
                raise
    finally:
        conn.close()
