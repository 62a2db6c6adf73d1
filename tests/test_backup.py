"""scripts/migrate apply --backup DIR: a dump before anything changes, which
pg_restore brings back row for row; and no migration at all when the dump
cannot be made."""

from __future__ import annotations

import re
import uuid

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database import pgclient
from nexus_migrate.database.catalog import applied_migrations, snapshot
from nexus_migrate.database.localpg import LocalServerError, find_binaries

from .conftest import SECRET, SERVER_VERSIONS, assert_one_line_error, mode, run_script
from .migrations import ALL
from .rows import fingerprint, store_traffic


def with_password(url: str) -> str:
    # The suite's servers trust local connections, so the password is carried, not checked.
    return url.replace("postgres@", f"postgres:{SECRET}@", 1)


def migrate(url: str, *args: str, **env: str):
    return run_script(PROJECT_ROOT, "migrate", *args, DATABASE_URL=url, **env)


@pytest.fixture
def stored(database_url, db):
    """The test database at 000 with the proxy's traffic in it."""
    assert migrate(database_url, "apply", "--batch", "-r", ALL[0]).returncode == 0
    store_traffic(db)
    return db


def test_the_backup_is_taken_before_the_apply_and_restores_every_row(server, database_url, stored, tmp_path,
                                                                     common_umask):
    rows, catalog = fingerprint(stored), snapshot(stored)
    folder = tmp_path / "backups" / "nexus"
    result = migrate(with_password(database_url), "apply", "--batch", "--backup", str(folder))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert applied_migrations(stored) == ALL

    dumps = list(folder.iterdir())
    assert len(dumps) == 1 and str(dumps[0]) in result.stdout
    dbname = pgclient.database_name(database_url)
    assert re.fullmatch(rf"{dbname}_\d{{8}}T\d{{6}}Z\.dump", dumps[0].name)
    # every prompt and response is in there: the owner's alone, and so are the folders made for it
    assert (mode(dumps[0]), mode(folder), mode(folder.parent)) == (0o600, 0o700, 0o700)

    # The restore of docs/operating.md: into a new database, which is then compared with what was dumped.
    restored_name = f"restored_{uuid.uuid4().hex[:8]}"
    restored_url = server.ensure_database(restored_name)
    pg_restore = pgclient.find_client("pg_restore", server.binaries.major)
    done = pgclient.run(pg_restore, ["--no-owner", "--exit-on-error", str(dumps[0])], restored_url)
    assert done.returncode == 0, done.stderr
    restored = psycopg2.connect(restored_url)
    try:
        assert fingerprint(restored) == rows  # every row, yoyo's included: the state before the apply
        assert fingerprint(restored)["api_requests"][0] == 40
        assert snapshot(restored) == catalog
        assert applied_migrations(restored) == ALL[:1]
    finally:
        restored.close()
        server.drop_database(restored_name)


def test_a_dump_into_a_folder_that_exists_leaves_the_folder_as_it_was(database_url, tmp_path, common_umask):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    assert migrate(database_url, "apply", "--batch", "-r", ALL[0], "--backup", str(shared)).returncode == 0
    [dump] = shared.iterdir()
    assert (mode(dump), mode(shared)) == (0o600, 0o755)


def test_without_a_pg_dump_nothing_is_migrated(server, database_url, stored, tmp_path):
    before = fingerprint(stored), snapshot(stored)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = migrate(with_password(database_url), "apply", "--batch", "--backup", str(tmp_path / "backups"),
                     NEXUS_PG_BINDIR=str(empty_bin))
    major = server.binaries.major
    assert_one_line_error(result, f"pg_dump {major} or later is needed for this PostgreSQL {major} server",
                          f"postgresql-client-{major}")
    assert (fingerprint(stored), snapshot(stored)) == before
    assert not (tmp_path / "backups").exists()


def test_an_older_pg_dump_is_refused(server, database_url, stored, tmp_path):
    major = server.binaries.major
    older = None
    for version in (v for v in SERVER_VERSIONS if v < major):
        try:
            older = find_binaries(version)
            break
        except LocalServerError:
            continue
    if older is None:
        pytest.skip(f"needs a pg_dump older than the PostgreSQL {major} server, and none is installed here")
    before = fingerprint(stored)
    result = migrate(database_url, "apply", "--batch", "--backup", str(tmp_path), NEXUS_PG_BINDIR=str(older.bindir))
    assert_one_line_error(result, f"pg_dump {major} or later is needed for this PostgreSQL {major} server")
    assert fingerprint(stored) == before
    assert list(tmp_path.iterdir()) == []


def test_a_failed_dump_stops_the_command_and_leaves_no_file(server, database_url, stored, tmp_path):
    """A role that may migrate the proxy's tables but not read another table:
    pg_dump fails, and neither a migration nor a partial dump is left."""
    role = f"operator_{uuid.uuid4().hex[:8]}"
    with stored.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        cur.execute("CREATE TABLE audit_secrets (id int)")  # owned by postgres; the role may not read it
    try:
        before = fingerprint(stored)
        url = database_url.replace("postgres@", f"{role}:{SECRET}@", 1)
        result = migrate(url, "apply", "--batch", "--backup", str(tmp_path))
        assert_one_line_error(result, "backup failed, nothing was changed", "permission denied")
        assert fingerprint(stored) == before
        assert list(tmp_path.iterdir()) == []
    finally:
        with stored.cursor() as cur:
            cur.execute("DROP TABLE audit_secrets")
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")


def test_backup_without_a_folder_or_with_a_command_that_changes_nothing():
    url = f"postgresql://nexus:{SECRET}@127.0.0.1:1/claude_nexus"  # never reached
    assert_one_line_error(migrate(url, "apply", "--backup"), "--backup needs a folder")
    assert_one_line_error(migrate(url, "list", "--backup", "/tmp/x"), "--backup goes with")


def test_apply_help_tells_of_backup():
    result = run_script(PROJECT_ROOT, "migrate", "apply", "--help")
    assert result.returncode == 0 and "--backup DIR" in result.stdout and "--revision" in result.stdout
