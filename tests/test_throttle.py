"""The backfills hold for a streaming standby that falls behind: a real
standby, copied from the suite's server with pg_basebackup, whose replay the
test pauses (pg_wal_replay_pause) and resumes."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations

from .conftest import as_role, run_script, wait_until
from .history import expected, read
from .migrations import ALL
from .test_backfill import assert_rows, migrate, store_history_at_002, write_map
from .traffic import start_migrate

# Small batches with a pause: the backfills take a few seconds, so that the
# lag grows past the bound while they run.
PACED = {"NEXUS_BATCH_ROWS": "1", "NEXUS_BATCH_SECONDS": "0.0001", "NEXUS_BATCH_PAUSE_MS": "20",
         "NEXUS_MAX_REPLICA_LAG": "0.5"}
# Every row of the table, as the standby must show it too.
SLOT = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
ROWS = "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY request_id)) FROM api_requests t"


@pytest.fixture
def standby(server):
    home = Path(tempfile.mkdtemp(prefix="nexus-test-standby-"))
    replica = server.start_standby(home)
    yield replica
    server.remove_standby(home)


def lines_of(process) -> queue.Queue:
    """process's stdout, line by line, as it comes."""
    lines: queue.Queue = queue.Queue()

    def read_lines():
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
    threading.Thread(target=read_lines, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, words: str, seen: list) -> str:
    def found():
        while not lines.empty():
            seen.append(lines.get())
            if words in seen[-1]:
                return seen[-1]
        return None
    return wait_until(found, f"a line saying {words!r}")


def replay(standby, database_url: str, pause: bool) -> None:
    conn = psycopg2.connect(standby.url(database_url.rsplit("/", 1)[1]))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_wal_replay_pause()" if pause else "SELECT pg_wal_replay_resume()")
    conn.close()


def caught_up(db, standby, database_url: str) -> tuple:
    """Once the standby has replayed all this server wrote, its rows (which
    must be this server's)."""
    with db.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()")
        written = cur.fetchone()[0]
    replica = psycopg2.connect(standby.url(database_url.rsplit("/", 1)[1]))
    replica.autocommit = True
    with replica.cursor() as cur:
        wait_until(lambda: cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,))
                   or cur.fetchone()[0], "the standby to replay everything")
        cur.execute(ROWS)
        rows = cur.fetchone()
    replica.close()
    return rows


def test_a_paused_standby_holds_the_backfill_and_resumed_it_finishes_as_if_never_held(
        yoyo, db, database_url, standby, tmp_path):
    h = store_history_at_002(yoyo, db, fillfactor=10)
    replay(standby, database_url, pause=True)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=write_map(tmp_path),
                          **PACED)
    seen: list[str] = []
    try:
        line = wait_for_line(lines_of(apply), ": holding: standby", seen)
        assert "replays" in line and "NEXUS_MAX_REPLICA_LAG 0.5 s" in line
        held = read(db)
        status = run_script(PROJECT_ROOT, "migrate", "status", DATABASE_URL=database_url)
        assert status.returncode == 0, status.stderr
        assert "running: session" in status.stdout and "held: standby" in status.stdout, status.stdout
        threading.Event().wait(1.5)  # the backfill stays held: no row changes meanwhile
        assert read(db) == held
        assert apply.poll() is None
        replay(standby, database_url, pause=False)
        assert apply.wait(timeout=300) == 0, apply.stderr.read()
    finally:
        if apply.poll() is None:
            os.killpg(apply.pid, signal.SIGKILL)
    assert_rows(read(db), expected(h), h)
    with db.cursor() as cur:
        cur.execute(ROWS)
        assert caught_up(db, standby, database_url) == cur.fetchone()


def test_a_hold_past_its_limit_stops_with_one_line_and_a_rerun_finishes(yoyo, db, database_url, standby, tmp_path):
    h = store_history_at_002(yoyo, db, fillfactor=10)
    mapping = write_map(tmp_path)
    replay(standby, database_url, pause=True)
    held = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping,
                         NEXUS_MAX_HOLD_SECONDS="1", **PACED)
    out, err = held.communicate(timeout=300)
    assert held.returncode != 0
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and "longer than NEXUS_MAX_HOLD_SECONDS (1 s)" in line and "Traceback" not in err
    assert applied_migrations(db) != ALL
    replay(standby, database_url, pause=False)
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert applied_migrations(db) == ALL
    assert_rows(read(db), expected(h), h)


def test_kill_9_while_held_then_a_rerun_gives_the_uninterrupted_result(yoyo, db, database_url, standby, tmp_path):
    h = store_history_at_002(yoyo, db, fillfactor=10)
    mapping = write_map(tmp_path)
    replay(standby, database_url, pause=True)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping, **PACED)
    wait_for_line(lines_of(apply), ": holding: standby", [])
    os.killpg(apply.pid, signal.SIGKILL)
    apply.wait()
    replay(standby, database_url, pause=False)
    with db.cursor() as cur:
        wait_until(lambda: cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                       "'scripts/migrate%%'") or cur.fetchone()[0] == 0,
                   "the killed apply's sessions to end")
    assert yoyo("break-lock") == 0
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert applied_migrations(db) == ALL
    assert_rows(read(db), expected(h), h)


def told_once_each(output: str, words: str) -> list[str]:
    """The lines of output that say words, after checking that no backfill
    said them twice (each line begins with its backfill's name)."""
    told = [line for line in output.splitlines() if words in line]
    assert len(told) == len({line.split(":")[0] for line in told}), told
    return told


def test_a_role_without_pg_monitor_is_told_once_it_cannot_see_the_standbys_lag_and_the_apply_goes_on(
        yoyo, db, database_url, standby, make_role, tmp_path, monkeypatch):
    owner = make_role()
    with db.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{urlsplit(database_url).path[1:]}" OWNER TO "{owner}"')
    owner_url = as_role(database_url, owner)
    monkeypatch.setenv("DATABASE_URL", owner_url)  # the schema is the owner's, as in production
    h = store_history_at_002(yoyo, db)
    applied = migrate(owner_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path))
    assert applied.returncode == 0, applied.stderr
    told = told_once_each(applied.stdout, "cannot see the replay lag of standby")
    assert told and all("GRANT pg_monitor" in line for line in told), applied.stdout
    assert applied_migrations(db) == ALL
    assert_rows(read(db), expected(h), h)


def test_a_client_that_takes_the_wal_without_replaying_it_is_named_once_and_not_held_for(
        yoyo, db, database_url, server, tmp_path):
    h = store_history_at_002(yoyo, db)
    folder = Path(tempfile.mkdtemp(prefix="nexus-test-receivewal-"))
    receiver = subprocess.Popen([str(server.binaries.bindir / "pg_receivewal"), "-D", str(folder), "--no-sync",
                                 "-n", "-d", server.url()], stderr=subprocess.PIPE, text=True)
    try:
        with db.cursor() as cur:
            wait_until(lambda: cur.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name = "
                                           "'pg_receivewal' AND state = 'streaming' AND replay_lsn IS NULL")
                       or cur.fetchone()[0] == 1, "pg_receivewal to stream")
        applied = migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path),
                          NEXUS_MAX_HOLD_SECONDS="5")
        assert receiver.poll() is None, receiver.stderr.read()
    finally:
        receiver.terminate()
        receiver.wait()
        shutil.rmtree(folder)
    assert applied.returncode == 0, applied.stderr
    told = told_once_each(applied.stdout, "pg_receivewal takes the WAL but reports no replay position")
    assert len(told) >= 2, applied.stdout  # 003's backfills at least
    assert "pg_monitor" not in applied.stdout and "holding: standby" not in applied.stdout
    assert applied_migrations(db) == ALL
    assert_rows(read(db), expected(h), h)


def test_a_standby_keeps_a_slot_while_it_runs_and_leaves_none_behind(server):
    """The slot keeps the WAL a lagging standby still needs; removed with the
    standby, or the primary would keep every WAL file from then on."""
    home = Path(tempfile.mkdtemp(prefix="nexus-test-standby-"))
    slot = server.standby_slot(home)
    conn = psycopg2.connect(server.url())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            server.start_standby(home)
            try:
                wait_until(lambda: cur.execute(SLOT, (slot,)) or cur.fetchall() == [(True,)],
                           "the standby to stream through its slot")
            finally:
                server.remove_standby(home)
            cur.execute(SLOT, (slot,))
            assert cur.fetchall() == []
    finally:
        conn.close()
