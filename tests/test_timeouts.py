"""The timeouts that the operator gave the proxy's database (or role): the
statements that take as long as the table is large and hold up no write run
past a statement_timeout, and a concurrent index build past a lock_timeout,
so the migrations finish; DDL stays under them, and one cut short ends in one
line that says how to lift it for a run."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations
from nexus_migrate.proxy.verify import verify
from nexus_migrate.steps.autovacuum import ANALYZE
from nexus_migrate.steps.lock_retries import run_with_lock_retries
from nexus_migrate.steps.timeouts import STATEMENT_TIMEOUTS

from .conftest import assert_one_line_error, run_script, wait_until
from .history import history, store
from .migrations import ALL
from .test_backfill import UP_TO_002, add_later_columns
from .test_busy_table import invalid_indexes
from .traffic import WAITING_BUILD, hold_old_snapshot, hold_read_lock, start_migrate

TIMEOUT_S = 0.5
# Long enough past TIMEOUT_S that a statement still under it would have been cancelled.
PAST_IT_S = 3 * TIMEOUT_S

WAITING = "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s)"


@contextmanager
def lock_held(url: str, table: str, mode: str):
    """Another session holding table locked in mode while the block runs."""
    holder = psycopg2.connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(table), sql.SQL(mode)))
        yield
    finally:
        holder.close()


def waited_past_the_timeout(db, query_like: str, what: str) -> None:
    """Once a statement like query_like waits for a lock: well past the timeout."""
    with db.cursor() as cur:
        wait_until(lambda: cur.execute(WAITING, (query_like,)) or cur.fetchone()[0], what)
    time.sleep(PAST_IT_S)


def timeout_for_new_sessions(db, setting: str = "statement_timeout") -> None:
    """setting (a timeout) for every session that connects from now on, as
    ALTER DATABASE (or ALTER ROLE) sets it on a production server."""
    with db.cursor() as cur:
        cur.execute("SELECT current_database()")
        cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(cur.fetchone()[0]), sql.Identifier(setting), sql.Literal(f"{TIMEOUT_S * 1000:g}ms")))


@pytest.mark.parametrize("setting", ["statement_timeout", "lock_timeout"])
def test_an_index_build_waiting_past_the_databases_timeout_finishes(yoyo, db, database_url, setting):
    """CREATE INDEX CONCURRENTLY waits for an old snapshot well past the
    database's statement_timeout or lock_timeout, then builds: 002 is
    applied."""
    yoyo("apply", "-r", ALL[1])
    old_snapshot = hold_old_snapshot(database_url)
    timeout_for_new_sessions(db, setting)
    try:
        apply = start_migrate("apply", "--batch", "-r", ALL[2], DATABASE_URL=database_url)
        with db.cursor() as cur:
            wait_until(lambda: cur.execute(WAITING_BUILD) or cur.fetchone(), "002's first index build to wait")
        time.sleep(PAST_IT_S)
    finally:
        old_snapshot.close()
    out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, err
    assert applied_migrations(db) == ALL[:3]
    assert invalid_indexes(db) == 0 and verify(db) == []


@pytest.mark.parametrize("setting", STATEMENT_TIMEOUTS)
def test_a_backfills_analyze_waiting_past_the_databases_timeout_finishes(yoyo, db, database_url, setting):
    """The ANALYZE after a backfill waits for a lock (a long VACUUM's, say)
    well past the statement_timeout (or, from PostgreSQL 17 on, the
    transaction_timeout, whose expiry ends the session), then runs: the
    backfill reports it analyzed the table and succeeds."""
    skip_before_17(db, setting)
    yoyo("apply", "-r", UP_TO_002)
    add_later_columns(db)
    store(db, history())
    first = run_script(PROJECT_ROOT, "migrate", "apply", "--batch", "-r", ALL[3], DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    with db.cursor() as cur:  # links for the backfill to give again
        cur.execute("UPDATE api_requests SET parent_task_request_id = NULL WHERE parent_task_request_id IS NOT NULL")
    with lock_held(database_url, "api_requests", "SHARE UPDATE EXCLUSIVE"):  # as a long VACUUM holds it
        timeout_for_new_sessions(db, setting)
        backfill = start_migrate("backfill", "003", DATABASE_URL=database_url)
        waited_past_the_timeout(db, f"%{ANALYZE}%", "the backfill's ANALYZE to wait for the lock")
    out, err = backfill.communicate(timeout=300)
    assert backfill.returncode == 0, err
    assert re.search(r"^003 sub-task links: analyzed public\.api_requests in [\d.]+ s$", out, re.M), out


def skip_before_17(db, setting: str) -> None:
    if setting == "transaction_timeout" and db.server_version < 170000:
        pytest.skip("transaction_timeout is new in PostgreSQL 17")


def sessions(db, setting: str) -> str:
    with db.cursor() as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting)))
        return cur.fetchone()[0]


@pytest.mark.parametrize("setting", STATEMENT_TIMEOUTS)
def test_a_statement_marked_long_runs_past_the_sessions_timeout_in_transactions_with_lock_retries(db, setting):
    """As a constraint's validation runs: past the session's statement_timeout
    or transaction_timeout, which are in force again afterwards."""
    skip_before_17(db, setting)
    with db.cursor() as cur:
        cur.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), sql.Literal(f"{TIMEOUT_S * 1000:g}ms")))
    before = sessions(db, setting)
    run_with_lock_retries(db, f"SELECT pg_sleep({PAST_IT_S})", past_statement_timeout=True)
    assert sessions(db, setting) == before


def test_ddl_in_transactions_with_lock_retries_stays_under_the_sessions_statement_timeout(db):
    with db.cursor() as cur:
        cur.execute(f"SET statement_timeout = '{TIMEOUT_S * 1000:g}ms'")
    before = sessions(db, "statement_timeout")
    with pytest.raises(psycopg2.errors.QueryCanceled):
        run_with_lock_retries(db, f"SELECT pg_sleep({PAST_IT_S})")
    assert sessions(db, "statement_timeout") == before


def test_ddl_cut_short_by_the_statement_timeout_says_how_to_lift_it_and_a_rerun_finishes(yoyo, db, database_url):
    """003's ADD COLUMN waits for a reader's lock (the lock_timeout raised
    past the statement_timeout): the server cancels it at the statement
    timeout, and scripts/migrate says so in one line; once the reader is
    gone, the same command applies 003."""
    yoyo("apply", "-r", UP_TO_002)
    timeout_for_new_sessions(db)
    reader = hold_read_lock(database_url)
    try:
        cut = run_script(PROJECT_ROOT, "migrate", "apply", "--batch", "-r", ALL[3], DATABASE_URL=database_url,
                         NEXUS_LOCK_TIMEOUT_MS=str(int(10 * TIMEOUT_S * 1000)), NEXUS_LOCK_ATTEMPTS="1")
    finally:
        reader.close()
    assert_one_line_error(cut, "statement timeout", "PGOPTIONS='-c statement_timeout=0'")
    assert applied_migrations(db) == ALL[:3]
    again = run_script(PROJECT_ROOT, "migrate", "apply", "--batch", "-r", ALL[3], DATABASE_URL=database_url)
    assert again.returncode == 0, again.stderr
    assert applied_migrations(db) == ALL[:4]


def test_the_rollback_guards_look_at_a_table_waiting_past_the_statement_timeout_finishes(yoyo, db, database_url):
    """Before 011's rollback drops conversation_analyses, the guard looks
    for rows in it; kept waiting there (by a session that holds the table
    locked) well past the statement_timeout, it looks, finds none, and the
    rollback goes on."""
    assert yoyo("apply") == 0
    assert yoyo("rollback", "-r", ALL[-1]) == 0
    with lock_held(database_url, "conversation_analyses", "ACCESS EXCLUSIVE"):
        timeout_for_new_sessions(db)
        rollback = start_migrate("rollback", "--batch", "-r", ALL[-2], DATABASE_URL=database_url)
        waited_past_the_timeout(db, "%conversation_analyses%", "the guard's look at the table to wait for the lock")
    out, err = rollback.communicate(timeout=300)
    assert rollback.returncode == 0, err
    assert applied_migrations(db) == ALL[:-2]


def test_the_rollback_guard_kept_waiting_past_the_databases_lock_timeout_says_how_to_lift_it(yoyo, db,
                                                                                              database_url):
    """The guard's look is a read, under the role's or database's lock_timeout
    like any read of the proxy's: held up past it, the rollback stops with
    one line, and the same command finishes once the holder is gone."""
    assert yoyo("apply") == 0
    assert yoyo("rollback", "-r", ALL[-1]) == 0
    timeout_for_new_sessions(db, "lock_timeout")
    with lock_held(database_url, "conversation_analyses", "ACCESS EXCLUSIVE"):
        cut = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[-2], DATABASE_URL=database_url)
    assert_one_line_error(cut, "lock timeout", "PGOPTIONS='-c lock_timeout=0'")
    assert applied_migrations(db) == ALL[:-1]
    again = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[-2], DATABASE_URL=database_url)
    assert again.returncode == 0, again.stderr
    assert applied_migrations(db) == ALL[:-2]
