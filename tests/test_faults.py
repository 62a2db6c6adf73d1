"""Faults an operator meets through scripts/migrate: a database that cannot be
reached or refuses the role, missing rights, several operators at once, a lock
left by a killed run. Each ends with one line that names the problem and what
to do, never a traceback or the password."""

from __future__ import annotations

import socket
import subprocess
from contextlib import contextmanager

import psycopg2
import pytest

from nexus_migrate.database.catalog import applied_migrations

from .conftest import SECRET, as_role, assert_one_line_error, run_script, start_script, wait_until
from .migrations import ALL, logged


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_wrong_password_is_refused_by_name_without_showing_it(project_copy, database_url, make_role):
    role = make_role(password="the-right-one")
    psycopg2.connect(as_role(database_url, role, "the-right-one")).close()  # the right one is let in

    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=as_role(database_url, role))
    assert_one_line_error(result, "refused the password", role, "DATABASE_URL")
    assert result.returncode == 2


@pytest.mark.parametrize("wrong", ["database", "role"])
def test_a_database_or_role_that_does_not_exist_is_named(project_copy, database_url, wrong):
    url = as_role(database_url, "nobody_here" if wrong == "role" else "postgres")
    if wrong == "database":
        url = url.rsplit("/", 1)[0] + "/no_such_db"
    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=url)
    line = assert_one_line_error(result, f"{wrong} ", "does not exist", "DATABASE_URL")
    assert ("no_such_db" if wrong == "database" else "nobody_here") in line
    assert f"CREATE {wrong.upper()}" in line  # how to make it


def test_an_unreachable_server_is_named_with_what_to_check(project_copy):
    port = closed_port()
    result = run_script(project_copy, "migrate", "apply", "--batch",
                        DATABASE_URL=f"postgresql://nexus:{SECRET}@127.0.0.1:{port}/claude")
    assert_one_line_error(result, f"127.0.0.1:{port}", "nothing accepts connections", "host and port")
    assert result.returncode == 2


def test_a_host_name_that_does_not_resolve_is_named(project_copy):
    result = run_script(project_copy, "migrate", "list",
                        DATABASE_URL=f"postgresql://nexus:{SECRET}@nonexistent.invalid:5432/claude")
    assert_one_line_error(result, "nonexistent.invalid", "does not resolve", "DATABASE_URL")


def test_a_server_that_never_answers_times_out_with_one_line(project_copy):
    """A listener that accepts and then says nothing, like a packet-swallowing
    firewall or a hung server: libpq gives up at connect_timeout (2 s is its least)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = run_script(project_copy, "migrate", "apply", "--batch",
                            DATABASE_URL=f"postgresql://nexus:{SECRET}@127.0.0.1:{port}/claude?connect_timeout=2")
    assert_one_line_error(result, f"127.0.0.1:{port}", "no answer", "connect timeout")


def test_a_role_that_may_not_create_tables_is_told_to_use_the_owner(project_copy, database_url, db, make_role):
    role = make_role()
    with db.cursor() as cur:  # the default from PostgreSQL 15 on, made explicit
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=as_role(database_url, role))
    assert_one_line_error(result, role, "may not create tables in schema public",
                          f"GRANT CREATE ON SCHEMA public TO {role}", "owner")
    assert result.returncode == 2
    with db.cursor() as cur:  # yoyo did not get as far as its own tables
        cur.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^(_yoyo_|yoyo_lock)'")
        assert cur.fetchone()[0] == 0


def test_a_role_that_does_not_own_the_tables_is_told_to_use_the_owner(project_copy, database_url, db, make_role):
    """It may create tables and keep yoyo's books, but 001 alters api_requests,
    which only its owner may do."""
    assert run_script(project_copy, "migrate", "apply", "--batch", "-r", ALL[0],
                      DATABASE_URL=database_url).returncode == 0
    role = make_role()
    with db.cursor() as cur:
        cur.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"; '
                    f'GRANT ALL ON yoyo_lock, _yoyo_migration, _yoyo_log, _yoyo_version TO "{role}"')
    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=as_role(database_url, role))
    assert_one_line_error(result, role, "must be owner of table api_requests", "owns the schema")
    assert applied_migrations(db) == ALL[:1]


# Several operators, and a run that dies

@contextmanager
def migration_000_held(database_url):
    """An open transaction of our own that has created api_requests: 000's
    CREATE TABLE waits for it, as a migration waits behind a busy table, and
    goes on once we roll back. The apply then stays inside its migration, with
    yoyo's lock taken, for as long as the test needs."""
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE api_requests (held int)")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def count(db, query: str) -> int:
    with db.cursor() as cur:
        cur.execute(query)
        return cur.fetchone()[0]


def waiting_in_000(db) -> bool:
    return count(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND wait_event_type = 'Lock' AND query ~ 'CREATE TABLE IF NOT EXISTS api_requests'") == 1


def advisory_locks(db, which: str = "true") -> int:
    """scripts/migrate's turns on this database: held (granted) or awaited."""
    return count(db, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND {which} "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def waiting_without_a_snapshot(db, pid: int) -> bool:
    with db.cursor() as cur:
        cur.execute("SELECT state, backend_xmin FROM pg_stat_activity WHERE application_name LIKE %s",
                    (f"scripts/migrate apply pid {pid} %",))
        sessions = cur.fetchall()
    return bool(sessions) and all(state == "idle" and xmin is None for state, xmin in sessions)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def start(project_copy):
    """start(*args, **env): scripts/migrate started and left running; any still
    running when the test ends (having failed) is killed."""
    started = []

    def run(*args: str, **env: str) -> subprocess.Popen:
        started.append(start_script(project_copy, "migrate", *args, **env))
        return started[-1]

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_operators_started_together_apply_each_migration_once(start, database_url, db):
    """On an empty database: yoyo creates its own tables and lock as it goes,
    and every run must come through that without a database error."""
    runs = [start("apply", "--batch", DATABASE_URL=database_url) for _ in range(4)]
    results = [finish(run) for run in runs]
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "error" not in result.stderr.lower()
    assert applied_migrations(db) == ALL
    assert logged(db, "apply") == ALL  # each applied once, by one of them
    assert count(db, "SELECT count(*) FROM yoyo_lock") == 0


def test_a_second_apply_waits_for_a_long_one_then_has_nothing_to_do(start, project_copy, database_url, db):
    """yoyo alone gives up after 10 s with "run yoyo break-lock", which would
    let two runs migrate at once. The second run waits for the first's
    advisory lock instead, before yoyo starts, so yoyo's 10 s never begin."""
    with migration_000_held(database_url):
        first = start("apply", "--batch", DATABASE_URL=database_url)
        wait_until(lambda: waiting_in_000(db), "the first apply is inside 000")
        second = start("apply", "--batch", DATABASE_URL=database_url)
        waited = second.stderr.readline()  # said once it found the lock taken
        # It waits holding no snapshot, which each CREATE INDEX CONCURRENTLY of
        # the first run would otherwise have to wait for.
        wait_until(lambda: waiting_without_a_snapshot(db, second.pid), "the second apply waits idle")

        # break-lock now would let the two race: it refuses, and the lock stays
        refused = run_script(project_copy, "migrate", "break-lock", DATABASE_URL=database_url)
        assert_one_line_error(refused, "a migration is running", f"pid {first.pid}", "not stale")
        assert count(db, "SELECT count(*) FROM yoyo_lock") == 1
    results = [finish(first), finish(second)]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert "another migration is running" in waited and f"pid {first.pid}" in waited
    assert results[1].stderr.strip() == ""  # nothing more to say
    assert logged(db, "apply") == ALL


def test_a_lock_left_by_a_killed_apply_is_called_stale_and_break_lock_clears_it(start, project_copy,
                                                                                database_url, db):
    with migration_000_held(database_url):
        killed = start("apply", "--batch", DATABASE_URL=database_url)
        wait_until(lambda: waiting_in_000(db), "the apply is inside 000")
        killed.kill()  # kill -9: yoyo's lock row stays behind
        killed.wait()
    with db.cursor() as cur:
        cur.execute("SELECT pid FROM yoyo_lock")
        assert cur.fetchall() == [(killed.pid,)]
    # the server ends the dead client's sessions, and with them its advisory lock
    wait_until(lambda: advisory_locks(db) == 0, "the killed run's sessions are gone")

    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=database_url)
    assert_one_line_error(result, f"process {killed.pid}", "killed", "scripts/migrate break-lock",
                          "scripts/migrate apply again")
    assert result.returncode == 2
    assert applied_migrations(db) == []

    assert run_script(project_copy, "migrate", "break-lock", DATABASE_URL=database_url).returncode == 0
    assert run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=database_url).returncode == 0
    assert applied_migrations(db) == ALL
    assert logged(db, "apply") == ALL
