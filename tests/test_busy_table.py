"""Migrating a table the proxy is writing: the writes go on, a lock that cannot
be had makes the migration stop rather than queue, and an interrupted index
build is repaired by the next run. (How long writes wait is measured by
scripts/benchmark, not here.)"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

from nexus_migrate.catalog import applied_migrations
from nexus_migrate.localpg import LocalServer
from nexus_migrate.schema import verify

from .conftest import FAST_SETTINGS, wait_until
from .migrations import ALL
from .traffic import WAITING_BUILD, Writer, checksum, hold_old_snapshot, hold_read_lock, seed, start_migrate

INVALID_INDEXES = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"


def invalid_indexes(db) -> int:
    with db.cursor() as cur:
        cur.execute(INVALID_INDEXES)
        return cur.fetchone()[0]


def test_apply_on_a_populated_table_while_the_proxy_writes_leaves_every_index_valid(yoyo, db, database_url):
    yoyo("apply", "-r", ALL[0])
    seed(db, 20_000)
    before = checksum(db)
    with Writer(database_url) as writer:
        apply = start_migrate("apply", "--batch", DATABASE_URL=database_url)
        out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, err
    assert writer.failed == [] and writer.done, "the proxy's inserts went on"
    assert applied_migrations(db) == ALL
    assert verify(db) == [] and invalid_indexes(db) == 0
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_requests WHERE domain <> 'writer.example.com'")
        assert cur.fetchone()[0] == before[0]
        cur.execute("SELECT count(*) FROM api_requests WHERE domain = 'writer.example.com'")
        assert cur.fetchone()[0] == len(writer.done)


def test_a_lock_held_elsewhere_makes_the_migration_give_up_without_blocking_writers(yoyo, db, database_url):
    """A long report holds ACCESS SHARE on api_requests; 001's ALTER needs ACCESS
    EXCLUSIVE. Queueing for it would stall every insert behind it; instead each
    attempt waits 100 ms, and after the last one the apply stops and says so."""
    yoyo("apply", "-r", ALL[0])
    report = hold_read_lock(database_url)
    with Writer(database_url) as writer:
        started = time.monotonic()
        apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_LOCK_ATTEMPTS="4")
        out, err = apply.communicate(timeout=120)
        ended = time.monotonic()
    assert apply.returncode == 2
    assert "Traceback" not in out + err
    [line] = err.strip().splitlines()
    assert "gave up after 4 attempts to get the lock for «ALTER TABLE api_requests ADD COLUMN" in line
    assert "run the same command again" in line
    # it saw the report's lock and waited without asking for its own, so as
    # not to queue the inserts behind its request
    assert re.search(r"«ALTER TABLE api_requests ADD COLUMN .*»: waiting for .* \(pid \d+\) to finish with "
                     r"api_requests before asking for its lock", out), out
    assert writer.failed == [] and writer.completed_between(started, ended) > 0
    assert applied_migrations(db) == ALL[:1]

    report.rollback()  # the report ends; the same command now goes through
    report.close()
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url)
    assert again.wait(timeout=300) == 0
    assert applied_migrations(db) == ALL and verify(db) == []


def test_an_interrupted_concurrent_build_is_repaired_on_rerun(yoyo, db, database_url):
    """kill -9 of the apply while CREATE INDEX CONCURRENTLY waits for an old
    snapshot to go: the server stops the build and leaves an INVALID index."""
    yoyo("apply", "-r", ALL[1])
    seed(db, 2_000)
    old_snapshot = hold_old_snapshot(database_url)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url)
    with db.cursor() as cur:
        [builder] = wait_until(lambda: cur.execute(WAITING_BUILD) or cur.fetchone(), "002's first index build to wait")
    os.killpg(apply.pid, signal.SIGKILL)
    apply.wait()
    wait_until(lambda: not _backend_alive(db, builder), "the server to stop the build")
    old_snapshot.close()
    assert invalid_indexes(db) == 1

    yoyo("break-lock")  # the killed apply could not remove yoyo's lock row
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "idx_requests_conversation_timestamp: dropping the INVALID index" in out
    assert invalid_indexes(db) == 0 and verify(db) == []


def _backend_alive(db, pid: int) -> bool:
    with db.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,))
        return cur.fetchone()[0]


def test_a_long_index_build_reports_its_phase_while_it_runs(yoyo, db, database_url):
    """The build waits for an old snapshot until the test lets it go; meanwhile
    the apply prints what pg_stat_progress_create_index says."""
    yoyo("apply", "-r", ALL[1])
    old_snapshot = hold_old_snapshot(database_url)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_PROGRESS_SECONDS="0.2")
    let_go = threading.Timer(60, old_snapshot.close)  # should no line come, the test still ends
    let_go.start()
    line = apply.stdout.readline()  # blocks until the first progress line
    let_go.cancel()
    old_snapshot.close()
    out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, err
    assert line.startswith("idx_requests_conversation_timestamp: waiting for old snapshots"), line


def test_an_autovacuum_holding_the_table_is_cancelled_not_waited_out(server):
    """After a backfill, autovacuum may hold api_requests for minutes. The
    server cancels an autovacuum that blocks a lock request for
    deadlock_timeout, but our requests give up long before that, and waiting
    without asking would outlast our retries. So the step cancels it, says so,
    and goes on; the writes never queue behind a request."""
    # a server of its own: autovacuum comes round every second, not every minute
    own = LocalServer(Path(tempfile.mkdtemp(prefix="nexus-test-autovacuum-")), server.binaries, {**FAST_SETTINGS, "autovacuum_naptime": "1s"}, tcp=True)
    own.start()
    try:
        url = own.ensure_database("busy")
        assert start_migrate("apply", "--batch", "-r", ALL[0], DATABASE_URL=url).wait(timeout=300) == 0
        conn = psycopg2.connect(url)
        conn.autocommit = True
        seed(conn, 5_000)
        with conn.cursor() as cur:
            # an autovacuum that sleeps 100 ms a page: it would hold the table for minutes
            cur.execute("""ALTER TABLE api_requests SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                                                          autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)""")
            cur.execute("UPDATE api_requests SET model = model")
        vacuum = AUTOVACUUM_OF_API_REQUESTS
        wait_until(lambda: _one(conn, vacuum), "an autovacuum of api_requests running for a while", deadline=60)
        pid = _one(conn, vacuum)
        apply = start_migrate("apply", "--batch", "-r", ALL[1], DATABASE_URL=url, NEXUS_LOCK_ATTEMPTS="3")
        out, err = apply.communicate(timeout=120)
        assert apply.returncode == 0, err
        assert re.search(rf"«ALTER TABLE api_requests ADD COLUMN .*»: cancelled the autovacuum of api_requests "
                         rf"\(pid {pid}\)", out), out
        assert applied_migrations(conn) == ALL[:2]
        conn.close()
    finally:
        own.remove()


AUTOVACUUM_OF_API_REQUESTS = """
    SELECT pid FROM pg_stat_activity
     WHERE backend_type = 'autovacuum worker' AND query LIKE '%api_requests%' AND xact_start < now() - interval '1 s'"""


def _one(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row and row[0]
