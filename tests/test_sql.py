"""scripts/migrate sql: the SQL that apply or rollback would run, printed in
order, is that SQL: run by hand with psql it builds the catalog yoyo builds.
And printing it writes nothing to the database."""

from __future__ import annotations

import subprocess
import uuid

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.commands.migrate import yoyo as yoyo_cli
from nexus_migrate.database.catalog import snapshot
from nexus_migrate.steps import lock_timeout_ms

from .conftest import assert_one_line_error, run_script
from .migrations import ALL


def printed_sql(*args: str, url: str | None = None) -> str:
    result = run_script(PROJECT_ROOT, "migrate", "sql", *args, DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_with_psql(server, url: str, script: str, tmp_path) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.sql"
    path.write_text(script)
    done = subprocess.run([str(server.binaries.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-f", str(path), url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def migrated_by_yoyo(server, monkeypatch, *commands: list[str]) -> dict:
    """The catalog of a new database after each `yoyo COMMAND --batch ARGS` of
    commands (by default, one `apply`)."""
    name = f"reference_{uuid.uuid4().hex[:8]}"
    url = server.ensure_database(name)
    try:
        with monkeypatch.context() as patch:
            patch.setenv("DATABASE_URL", url)
            for command, *args in commands or (["apply"],):
                assert yoyo_cli([command, "--batch", *args]) == 0
        conn = psycopg2.connect(url)
        try:
            return snapshot(conn)
        finally:
            conn.close()
    finally:
        server.drop_database(name)


def migrations_in(script: str) -> list[str]:
    return [line.split()[2].rstrip(":") for line in script.splitlines() if line.startswith("-- ===== ")]


def test_offline_sql_run_with_psql_gives_the_catalog_of_yoyo_apply(server, database_url, db, monkeypatch, tmp_path):
    script = printed_sql("--offline")
    assert migrations_in(script) == ALL
    run_with_psql(server, database_url, script, tmp_path)
    assert snapshot(db) == migrated_by_yoyo(server, monkeypatch)


def test_the_pending_sql_is_what_is_left_to_apply(server, database_url, db, yoyo, monkeypatch, tmp_path):
    yoyo("apply", "-r", ALL[0])
    script = printed_sql(url=database_url)
    assert migrations_in(script) == ALL[1:]
    run_with_psql(server, database_url, script, tmp_path)
    assert snapshot(db) == migrated_by_yoyo(server, monkeypatch)


def test_revision_selects_as_yoyo_does(database_url, yoyo):
    assert migrations_in(printed_sql("-r", ALL[1], url=database_url)) == ALL[:2]
    yoyo("apply")
    assert migrations_in(printed_sql("rollback", url=database_url)) == ALL[-1:]
    assert migrations_in(printed_sql("rollback", "-r", ALL[1], url=database_url)) == ALL[:0:-1]
    assert migrations_in(printed_sql("rollback", "--all", url=database_url)) == ALL[::-1]


def test_rollback_sql_run_with_psql_undoes_what_yoyo_rollback_undoes(server, database_url, db, yoyo, monkeypatch,
                                                                    tmp_path):
    yoyo("apply")
    script = printed_sql("rollback", "-r", ALL[1], url=database_url)
    assert "guard" in script  # the data-loss guard is named, though it has no SQL to show
    run_with_psql(server, database_url, script, tmp_path)
    assert snapshot(db) == migrated_by_yoyo(server, monkeypatch, ["apply"], ["rollback", "-r", ALL[1]])


def test_each_statement_is_marked_in_or_outside_a_transaction():
    script = printed_sql("--offline")
    inside = False
    for line in script.splitlines():
        if line == "BEGIN;":
            inside = True
        elif line == "COMMIT;":
            inside = False
        elif "INDEX CONCURRENTLY" in line and not line.startswith("--"):
            assert not inside, line
    blocks = script.split("\n\n")
    for block in blocks:
        if "INDEX CONCURRENTLY" in block and not block.startswith("--"):
            assert "outside a transaction" in block and "INVALID" in block and "equivalent index" in block
        if block.startswith("-- in a transaction"):
            assert f"BEGIN;\nSET LOCAL lock_timeout = '{lock_timeout_ms()}ms';" in block and block.rstrip().endswith("COMMIT;")
    assert "_yoyo_migration" in script.split("\n\n")[0]  # the header says yoyo records each migration


def test_printing_the_sql_writes_nothing(db, database_url):
    def relations() -> list:
        with db.cursor() as cur:
            cur.execute("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace")
            return sorted(row[0] for row in cur.fetchall())

    before = relations()
    assert migrations_in(printed_sql(url=database_url)) == ALL
    assert printed_sql("rollback", url=database_url).startswith("-- nothing to rollback")
    assert relations() == before  # not even yoyo's own tables


def test_an_unknown_revision_is_one_line(database_url):
    result = run_script(PROJECT_ROOT, "migrate", "sql", "-r", "999", DATABASE_URL=database_url)
    assert_one_line_error(result, "999")


@pytest.mark.parametrize("command", ["sql", "rehearse"])
def test_help_fits_one_screen(command):
    result = run_script(PROJECT_ROOT, "migrate", command, "--help")
    assert result.returncode == 0 and "usage: scripts/migrate " + command in result.stdout
    assert len(result.stdout.splitlines()) <= 24
