"""kill -9 of an apply in the middle of each backfill, then the same command
again: the result is exactly that of a run that was never interrupted (every
backfilled column of every row), and it is the rules' answer.

The history is stored one row a page (fillfactor 10), and batches are made
tiny (a target time so short that they stay at the smallest size: one page, or
one sub-task start for 008's walk of its index) with a pause between them, so
that the test sees a backfill half done and kills it there; the migrations
before the one killed are applied first at full speed. The 'waiting' points
hold a row lock that a batch of 003's links or 008's moves waits for: the
kill lands inside that batch's transaction."""

from __future__ import annotations

import hashlib
import os
import signal

import psycopg2
import pytest

from nexus_migrate.database.catalog import applied_migrations

from .conftest import wait_until
from .history import expected, originals, read, store
from .migrations import ALL
from .test_backfill import UP_TO_002, add_later_columns, assert_rows, store_history_at_002, write_map
from .traffic import Writer, start_migrate

SLOW = {"NEXUS_BATCH_ROWS": "1", "NEXUS_BATCH_SECONDS": "0.0001", "NEXUS_BATCH_PAUSE_MS": "100",
        "NEXUS_LOCK_ATTEMPTS": "1000"}
# How pg_stat_activity shows the batches that wait for a held row, and when
# to lock it: after the ALTER TABLEs that the lock would keep out (003's Task
# calls under way), or before the apply of 008 starts (the migrations before
# it applied; 008's concurrent index build does not wait for an idle holder).
WAITING = {"003 sub-task links": ("-- 003 sub-task links: a batch", "SELECT count(task_tool_invocation) > %s FROM api_requests"),
           "008 moves": ("-- 008 sub-tasks into their parent's conversation: a batch", None)}
# The migration before each backfill's own, applied at full speed first.
BEFORE = {"003 Task calls": None, "003 sub-task links": None, "005 accounts": "004-optimize-conversation-window-functions",
          "007 parent requests": "006-split-conversation-hashes", "008 moves": "007-add-parent-request-id"}
# The lock is taken before 008 starts, and while 003's Task calls have most of
# their walk and all of their catch-up pass to go before its links begin.
WAITING_SETTINGS = dict(SLOW, NEXUS_LOCK_TIMEOUT_MS="60000")

# How to see each backfill half done: a count that is above its value before
# the backfill began, and below its value at the end.
PARTLY = {
    "003 Task calls": "SELECT count(task_tool_invocation) FROM api_requests",
    "003 sub-task links": "SELECT count(parent_task_request_id) FROM api_requests",
    "005 accounts": "SELECT count(account_id) FROM api_requests",
    "007 parent requests": "SELECT count(parent_request_id) FROM api_requests",
    "008 moves": "SELECT count(*) FROM api_requests WHERE branch_id LIKE 'subtask_%'",
}


def checksum(db) -> str:
    rows = read(db)
    return hashlib.md5(repr(sorted((str(k), sorted(v.items(), key=lambda i: i[0]).__repr__())
                                   for k, v in rows.items())).encode()).hexdigest()


def counts(h) -> dict[str, tuple[int, int]]:
    """For each backfill, its count before it runs and once it is done."""
    before, after = h.rows, expected(h).values()
    return {
        "003 Task calls": (sum(r["task_tool_invocation"] is not None for r in before),
                           sum(r["task_tool_invocation"] is not None for r in after)),
        "003 sub-task links": (sum(r["parent_task_request_id"] is not None for r in before),
                               sum(r["parent_task_request_id"] is not None for r in after)),
        "005 accounts": (sum(r["account_id"] is not None for r in before),
                         sum(r["account_id"] is not None for r in after)),
        "007 parent requests": (sum(r["parent_request_id"] is not None for r in before),
                                sum(r["parent_request_id"] is not None for r in after)),
        "008 moves": (sum(r["branch_id"].startswith("subtask_") for r in before),
                      sum(r["branch_id"].startswith("subtask_") for r in after)),
    }


@pytest.fixture
def prepared(yoyo, db):
    # One row a page: a batch of the physical walk holds one row of this small
    # history, as a batch of a big table holds a small part of it.
    return store_history_at_002(yoyo, db, fillfactor=10)


# (the backfill, where in it: a fraction of its rows done, or "waiting" for a held row lock).
# Each fraction is reached at least three batches before the backfill's last
# change, so that a test slowed by a busy machine still finds it unfinished.
POINTS = [("003 Task calls", 0.3), ("003 Task calls", 0.7), ("003 sub-task links", 0.3),
          ("003 sub-task links", "waiting"), ("005 accounts", 0.5), ("007 parent requests", 0.2),
          ("007 parent requests", 0.7), ("008 moves", 0.4), ("008 moves", "waiting")]


@pytest.mark.parametrize("backfill,point", POINTS, ids=[f"{b}-{p}" for b, p in POINTS])
def test_kill_9_in_a_backfill_then_a_rerun_gives_the_uninterrupted_result(backfill, point, prepared, db,
                                                                         database_url, yoyo, tmp_path):
    h = prepared
    mapping = write_map(tmp_path)
    start, end = counts(h)[backfill]
    holder = None
    settings = WAITING_SETTINGS if point == "waiting" else SLOW
    if BEFORE[backfill]:
        before = start_migrate("apply", "--batch", "-r", BEFORE[backfill], DATABASE_URL=database_url,
                               NEXUS_ACCOUNT_MAP=mapping)
        assert before.wait(timeout=300) == 0
    if point == "waiting" and WAITING[backfill][1] is None:
        holder = hold_row(database_url, h)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping, **settings)
    with db.cursor() as cur:
        if point == "waiting":
            marker, begun = WAITING[backfill]
            if begun:  # 003's Task calls under way: its ALTER TABLE and index builds are done
                begun = begun % counts(h)["003 Task calls"][0]
                wait_until(lambda: cur.execute(begun) or cur.fetchone()[0], f"the steps before {backfill} to be done")
                holder = hold_row(database_url, h)
            condition = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND query LIKE %s", (f"%{marker}%",))
            wait_until(lambda: cur.execute(*condition) or cur.fetchone(), f"{backfill} to wait for the row")
        else:
            goal = start + max(1, int((end - start) * point))
            wait_until(lambda: cur.execute(PARTLY[backfill]) or cur.fetchone()[0] >= goal,
                       f"{backfill} {point:.0%} done", deadline=120)
            cur.execute(PARTLY[backfill])
            assert cur.fetchone()[0] < end, "the backfill had finished: nothing was interrupted"
    os.killpg(apply.pid, signal.SIGKILL)
    apply.wait()
    if holder:
        holder.close()
    with db.cursor() as cur:
        wait_until(lambda: cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                       "'scripts/migrate%%'") or cur.fetchone()[0] == 0,
                   "the killed apply's sessions to end")
    assert applied_migrations(db) != ALL

    yoyo("break-lock")  # the killed apply could not remove yoyo's lock row
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert applied_migrations(db) == ALL
    assert checksum(db) == uninterrupted_checksum(h, db, tmp_path)
    assert_rows(read(db), expected(h), h)


def hold_row(database_url: str, h):
    """A session holding a row lock on a follow-up row of a sub-task that the
    backfill links (003) or moves (008)."""
    holder = psycopg2.connect(database_url)
    with holder.cursor() as held:
        held.execute("SELECT FROM api_requests WHERE request_id = %s FOR UPDATE", (str(h.named["st.5s.2"]),))
    return holder


_UNINTERRUPTED: dict[str, str] = {}


def uninterrupted_checksum(h, db, tmp_path) -> str:
    """The checksum of the backfilled columns after one uninterrupted apply
    of the same history, in a database of its own (once per server)."""
    server_version = db.server_version // 10000
    if server_version not in _UNINTERRUPTED:
        with db.cursor() as cur:
            cur.execute("SELECT current_database()")
            name = cur.fetchone()[0] + "_reference"
            cur.execute(f'CREATE DATABASE "{name}"')
        params = db.get_dsn_parameters()
        reference_url = f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}"
        try:
            assert start_migrate("apply", "--batch", "-r", UP_TO_002, DATABASE_URL=reference_url).wait(timeout=300) == 0
            reference = psycopg2.connect(reference_url)
            reference.autocommit = True
            add_later_columns(reference)
            store(reference, h)
            done = start_migrate("apply", "--batch", DATABASE_URL=reference_url,
                                 NEXUS_ACCOUNT_MAP=write_map(tmp_path))
            assert done.wait(timeout=300) == 0
            _UNINTERRUPTED[server_version] = checksum(reference)
            reference.close()
        finally:
            with db.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return _UNINTERRUPTED[server_version]


def test_kill_9_in_008s_rollback_while_the_proxy_writes_puts_every_row_back(prepared, db, database_url, tmp_path):
    """008's rollback moves rows back in batches and deletes its record of them
    as it goes (all 18 records fit one page: one batch). Killed inside that
    batch, while it waits for a row another session holds and the proxy
    writes, then run again: every row of history is back in its own
    conversation and branch, and every write of the proxy's went through and
    is kept."""
    h = prepared
    assert start_migrate("apply", "--batch", DATABASE_URL=database_url,
                         NEXUS_ACCOUNT_MAP=write_map(tmp_path)).wait(timeout=300) == 0
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_requests_subtask_moves")
        assert cur.fetchone()[0] == 18  # the 11 sub-tasks of history with their follow-ups
    rollback = ("rollback", "--batch", "-r", "008-subtask-updates-and-task-indexes")
    holder = hold_row(database_url, h)
    with Writer(database_url) as writer:
        undo = start_migrate(*rollback, DATABASE_URL=database_url, **WAITING_SETTINGS)
        with db.cursor() as cur:
            wait_until(lambda: cur.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query "
                                           "LIKE %s", ("%-- 008 sub-tasks into their parent's conversation%: a batch%",)) or cur.fetchone(),
                       "008's rollback to wait for the held row")
        os.killpg(undo.pid, signal.SIGKILL)
        undo.wait()
        holder.close()
        yoyo_break_lock = start_migrate("break-lock", DATABASE_URL=database_url)
        assert yoyo_break_lock.wait(timeout=60) == 0
        again = start_migrate(*rollback, DATABASE_URL=database_url)
        out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    got = read(db)
    assert {rid: (got[rid]["conversation_id"], got[rid]["branch_id"]) for rid in originals(h)} == originals(h)
    assert writer.failed == [] and writer.done, "the proxy's inserts went on"
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_requests WHERE domain = 'writer.example.com'")
        assert cur.fetchone()[0] == len(writer.done)
        cur.execute("SELECT to_regclass('api_requests_subtask_moves')")
        assert cur.fetchone()[0] is None
    assert applied_migrations(db) == ALL[:ALL.index("008-subtask-updates-and-task-indexes")]
