"""Faults an operator meets through scripts/migrate: a database that cannot be
reached or refuses the role, missing rights, several operators at once, a lock
left by a killed run. Each ends with one line that names the problem and what
to do, never a traceback or the password."""

from __future__ import annotations

import socket

import psycopg2
import pytest

from nexus_migrate.catalog import applied_migrations

from .conftest import SECRET, as_role, assert_one_line_error, run_script
from .migrations import ALL


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
