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
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations
from nexus_migrate.database.localpg import LocalServer
from nexus_migrate.proxy.verify import verify

from .conftest import FAST_SETTINGS, as_role, run_script, wait_until
from .history import BACKFILLED, expected, history, read, store
from .migrations import ALL
from .test_backfill import UP_TO_002, add_later_columns, write_map
from .traffic import WAITING_BUILD, Writer, hold_old_snapshot, hold_read_lock, seed, start_migrate

INVALID_INDEXES = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"


def invalid_indexes(db) -> int:
    with db.cursor() as cur:
        cur.execute(INVALID_INDEXES)
        return cur.fetchone()[0]


def test_apply_on_a_populated_table_while_the_proxy_writes_leaves_every_index_valid(yoyo, db, database_url,
                                                                                   tmp_path):
    """On 20,000 seeded rows and the proxy's history (which the backfills
    change), while the proxy inserts: every column of every row afterwards is
    what it was, or, for a backfilled column, the rules' answer computed apart
    in Python; every insert of the proxy's is there."""
    yoyo("apply", "-r", UP_TO_002)
    seed(db, 20_000)
    add_later_columns(db)
    h = history()
    store(db, h)
    kept = [c for c in columns(db) if c not in BACKFILLED]
    before, backfilled_before = contents(db, kept), read(db)
    with Writer(database_url) as writer:
        apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=write_map(tmp_path))
        out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, err
    assert writer.failed == [] and writer.done, "the proxy's inserts went on"
    assert applied_migrations(db) == ALL
    assert verify(db) == [] and invalid_indexes(db) == 0
    after = contents(db, kept)
    assert {rid: after.get(rid) for rid in before} == before, "a column no backfill writes changed"
    want = {**backfilled_before, **expected(h)}  # the seeded rows' backfilled columns stay as they were
    got = read(db)
    assert {rid: got.get(rid) for rid in want} == want
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_requests WHERE domain = 'writer.example.com'")
        assert cur.fetchone()[0] == len(writer.done)


def columns(db) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'api_requests'::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum")
        return [c for [c] in cur.fetchall()]


def contents(db, kept: list[str]) -> dict:
    """Each row's columns kept, as text, by request id."""
    with db.cursor() as cur:
        cur.execute(f"SELECT request_id, ROW({', '.join(kept)})::text FROM api_requests")
        return {uuid.UUID(rid): text for rid, text in cur.fetchall()}


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


@contextmanager
def autovacuum_every_second(server):
    """A server of its own, where autovacuum comes round every second, not
    every minute. Yields (a superuser's url of database busy, an autocommit
    connection to it)."""
    own = LocalServer(Path(tempfile.mkdtemp(prefix="nexus-test-autovacuum-")), server.binaries,
                      {**FAST_SETTINGS, "autovacuum_naptime": "1s"}, tcp=True)
    own.start()
    try:
        superuser_url = own.ensure_database("busy")
        conn = psycopg2.connect(superuser_url)
        conn.autocommit = True
        yield superuser_url, conn
        conn.close()
    finally:
        own.remove()


@contextmanager
def autovacuum_holding_api_requests(server, owner: str = "postgres", applied: str = ALL[0]):
    """autovacuum_every_second, with the migrations up to applied applied by
    owner (who owns the tables), 5,000 requests, and an autovacuum of
    api_requests that sleeps 100 ms a page: it would hold the table for
    minutes. Yields (owner's url, a superuser's connection, the autovacuum's
    pid)."""
    with autovacuum_every_second(server) as (superuser_url, conn):
        url = superuser_url
        if owner != "postgres":
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {owner} LOGIN")
                cur.execute(f"ALTER DATABASE busy OWNER TO {owner}")
            url = as_role(superuser_url, owner)
        assert start_migrate("apply", "--batch", "-r", applied, DATABASE_URL=url).wait(timeout=300) == 0
        seed(conn, 5_000)
        with conn.cursor() as cur:
            cur.execute("""ALTER TABLE api_requests SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                                                          autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)""")
            cur.execute("UPDATE api_requests SET model = model")
        wait_until(lambda: _one(conn, AUTOVACUUM_OF_API_REQUESTS), "an autovacuum of api_requests running for a while",
                   deadline=60)
        yield url, conn, _one(conn, AUTOVACUUM_OF_API_REQUESTS)


def test_an_autovacuum_holding_the_table_is_cancelled_not_waited_out(server):
    """After a backfill, autovacuum may hold api_requests for minutes. The
    server cancels an autovacuum that blocks a lock request for
    deadlock_timeout, but our requests give up long before that, and waiting
    without asking would outlast our retries. So the step cancels it, says so,
    and goes on; the writes never queue behind a request."""
    with autovacuum_holding_api_requests(server) as (url, conn, pid):
        apply = start_migrate("apply", "--batch", "-r", ALL[1], DATABASE_URL=url, NEXUS_LOCK_ATTEMPTS="3")
        out, err = apply.communicate(timeout=120)
        assert apply.returncode == 0, err
        assert re.search(rf"«ALTER TABLE api_requests ADD COLUMN .*»: cancelled the autovacuum of api_requests "
                         rf"\(pid {pid}\)", out), out
        assert applied_migrations(conn) == ALL[:2]


KEEPER = ("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.relation = 'api_requests'::regclass "
          "AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted AND a.application_name LIKE 'nexus-migrate: autovacuum%%'")
VACUUMS = "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'api_requests'::regclass"


def test_a_backfill_keeps_autovacuum_off_its_table_gives_way_to_a_waiter_and_a_killed_one_leaves_nothing(server):
    """Autovacuum beside the batches is what kept the proxy's commits
    waiting, so a session of the backfill's holds the lock a vacuum takes
    while it runs. Someone who waits for that lock gets it; killed, the
    backfill's lock goes with its sessions, and autovacuum works again."""
    with autovacuum_every_second(server) as (url, conn):
        assert start_migrate("apply", "--batch", "-r", ALL[3], DATABASE_URL=url).wait(timeout=300) == 0
        seed(conn, 5_000)
        with conn.cursor() as cur:  # every dead row calls an autovacuum
            cur.execute("ALTER TABLE api_requests SET (autovacuum_vacuum_threshold = 0, "
                        "autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 1000000000)")
        paced = {"NEXUS_BATCH_ROWS": "1", "NEXUS_BATCH_SECONDS": "0.0001", "NEXUS_BATCH_PAUSE_MS": "50"}
        backfill = start_migrate("backfill", "003", DATABASE_URL=url, **paced)
        try:
            keeper = wait_until(lambda: _one(conn, KEEPER), "a session of the backfill holding the vacuum's lock")
            before = _one(conn, VACUUMS)
            with conn.cursor() as cur:
                cur.execute("UPDATE api_requests SET model = model")  # 5,000 dead rows
            time.sleep(4)  # four rounds of the autovacuum launcher
            assert backfill.poll() is None
            assert _one(conn, VACUUMS) == before
            with conn.cursor() as cur:  # waits for the lock, and is let in
                cur.execute("SET lock_timeout = '5s'; ANALYZE api_requests; RESET lock_timeout")
            wait_until(lambda: _one(conn, KEEPER), "the lock taken again once the ANALYZE is done")
            os.killpg(backfill.pid, signal.SIGKILL)
            backfill.wait(timeout=30)
            wait_until(lambda: not _one(conn, KEEPER), "the killed backfill's lock gone", deadline=30)
            wait_until(lambda: _one(conn, VACUUMS) > before, "autovacuum at work again", deadline=60)
            assert _one(conn, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {keeper}") == 0
        finally:
            if backfill.poll() is None:
                os.killpg(backfill.pid, signal.SIGKILL)
        again = run_script(PROJECT_ROOT, "migrate", "backfill", "003", DATABASE_URL=url)
        assert again.returncode == 0, again.stderr
        assert not _one(conn, KEEPER)


def test_an_autovacuum_already_on_the_table_when_a_backfill_starts_is_cancelled_by_the_server(server):
    """An autovacuum begun between two steps, on the dead rows the last
    backfill left, would run beside the whole of the next backfill. Its
    guard asks for the vacuum's lock and waits past deadlock_timeout, so the
    server cancels the autovacuum, for any role: here the tables' owner, who
    may not cancel an autovacuum itself (before 18, only a superuser may)."""
    with autovacuum_holding_api_requests(server, owner="app", applied=ALL[3]) as (url, conn, autovacuum):
        paced = {"NEXUS_BATCH_ROWS": "1", "NEXUS_BATCH_SECONDS": "0.0001", "NEXUS_BATCH_PAUSE_MS": "50"}
        backfill = start_migrate("backfill", "003", DATABASE_URL=url, **paced)
        try:
            wait_until(lambda: _one(conn, KEEPER), "the backfill's guard holding the vacuum's lock", deadline=30)
            assert _one(conn, AUTOVACUUM_OF_API_REQUESTS) is None
            assert backfill.poll() is None
            assert _one(conn, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {autovacuum} "
                              "AND query LIKE '%api_requests%'") == 0
        finally:
            os.killpg(backfill.pid, signal.SIGKILL)
            backfill.wait(timeout=30)


ANALYZES = "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'api_requests'::regclass"


def test_a_backfill_that_changed_rows_analyzes_its_table_and_one_kept_from_it_leaves_that_to_autovacuum(
        yoyo, db, database_url):
    """Autovacuum's ANALYZE is kept off the table with it, so a backfill
    that changed rows analyzes the table itself: the next backfill's batches
    are planned on what the table now holds. One that changed none does not.
    One whose table another session keeps the lock on leaves it to
    autovacuum, and succeeds."""
    yoyo("apply", "-r", UP_TO_002)
    add_later_columns(db)
    store(db, history())
    before = _one(db, ANALYZES)
    first = run_script(PROJECT_ROOT, "migrate", "apply", "--batch", "-r", ALL[3], DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    analyzed = re.findall(r"^003 [^:]+: analyzed public\.api_requests in [\d.]+ s$", first.stdout, re.M)
    assert any(line.startswith("003 sub-task links") for line in analyzed), first.stdout
    counted = before + len(analyzed)  # one ANALYZE a line
    wait_until(lambda: _fresh(db, ANALYZES) >= counted, "the analyzes counted", deadline=10)
    assert _fresh(db, ANALYZES) == counted
    with db.cursor() as cur:
        cur.execute("SELECT attname FROM pg_stats WHERE tablename = 'api_requests' AND attname = 'parent_task_request_id'")
        assert cur.fetchone(), "statistics of the column 003 added and filled"
    again = run_script(PROJECT_ROOT, "migrate", "backfill", "003", DATABASE_URL=database_url)
    assert again.returncode == 0 and "analyzed" not in again.stdout, again.stdout + again.stderr
    with db.cursor() as cur:  # links for the backfill to give again
        cur.execute("UPDATE api_requests SET parent_task_request_id = NULL WHERE parent_task_request_id IS NOT NULL")
    holder = psycopg2.connect(database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE api_requests IN SHARE UPDATE EXCLUSIVE MODE")  # as a long VACUUM would
        kept = run_script(PROJECT_ROOT, "migrate", "backfill", "003", DATABASE_URL=database_url)
    finally:
        holder.close()
    assert kept.returncode == 0, kept.stderr
    assert ("003 sub-task links: left public.api_requests to autovacuum's ANALYZE: another session holds the "
            "lock it takes") in kept.stdout, kept.stdout
    assert re.search(r"^003 sub-task links: done, [1-9][\d,]* rows changed", kept.stdout, re.M), kept.stdout
    assert _one(db, LINKED) > 0
    assert _fresh(db, ANALYZES) == counted


def _fresh(db, query: str):
    with db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
    return _one(db, query)


LINKED = "SELECT count(*) FROM api_requests WHERE parent_task_request_id IS NOT NULL"


# What the role that migrates may do to another role's session: see it in
# pg_stat_activity (pg_read_all_stats), and on 18 cancel an autovacuum.
GRANTS = {"none": (), "see": ("pg_read_all_stats",),
          "see and cancel": ("pg_read_all_stats", "pg_signal_autovacuum_worker")}


@pytest.mark.parametrize("grants", GRANTS)
def test_an_owner_that_is_not_superuser_cancels_waits_for_or_retries_past_an_autovacuum(server, grants):
    """The owner of the tables, not a superuser. pg_stat_activity shows it
    nothing of another role's session: it cannot tell an autovacuum from a
    write, so it asks for its lock under the timeout, attempt after attempt,
    and stops with one line. Allowed to see sessions, it waits for the
    autovacuum without asking, and says so. Allowed to cancel one too (18),
    it does as a superuser does. What it cannot cancel runs on, and 001 is
    not recorded."""
    if "pg_signal_autovacuum_worker" in GRANTS[grants] and server.binaries.major < 18:
        pytest.skip("pg_signal_autovacuum_worker is new in PostgreSQL 18")
    with autovacuum_holding_api_requests(server, owner="migrator") as (url, conn, pid):
        with conn.cursor() as cur:
            for role in GRANTS[grants]:
                cur.execute(f"GRANT {role} TO migrator")
        apply = start_migrate("apply", "--batch", "-r", ALL[1], DATABASE_URL=url, NEXUS_LOCK_ATTEMPTS="2")
        out, err = apply.communicate(timeout=120)
        statement = "«ALTER TABLE api_requests ADD COLUMN .*»"
        if grants == "see and cancel":
            assert apply.returncode == 0, err
            assert re.search(rf"{statement}: cancelled the autovacuum of api_requests \(pid {pid}\)", out), out
            assert applied_migrations(conn) == ALL[:2]
            return
        assert apply.returncode != 0, out
        waiting = re.search(rf"{statement}: waiting for autovacuum worker \(pid {pid}\) to finish with api_requests", out)
        assert bool(waiting) == (grants == "see"), out
        assert "cancelled" not in out
        assert [line for line in err.splitlines() if line.strip()] == [err.strip()], err
        assert err.startswith("error: gave up after 2 attempts") and "run the same command again" in err, err
        assert applied_migrations(conn) == ALL[:1]
        assert _one(conn, AUTOVACUUM_OF_API_REQUESTS) == pid


AUTOVACUUM_OF_API_REQUESTS = """
    SELECT pid FROM pg_stat_activity
     WHERE backend_type = 'autovacuum worker' AND query LIKE '%api_requests%' AND xact_start < now() - interval '1 s'"""


def _one(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row and row[0]
