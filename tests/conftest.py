"""Fixtures: PostgreSQL servers that the suite starts and stops itself, a fresh
database for every test, and ways to run the commands as an operator would.

Every test that touches a database runs once per server: PostgreSQL 16 from
the pgserver wheel (required wherever the wheel exists: Python 3.10 to 3.12),
PostgreSQL 15 where its binaries are installed. NEXUS_TEST_REQUIRE_PG=15 (CI
sets it) turns a missing 15 into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.localpg import LocalServer, LocalServerError, find_binaries
from nexus_migrate.migrate import yoyo as yoyo_cli

SERVER_VERSIONS = (16, 15)
ALWAYS_REQUIRED = {16} if sys.version_info < (3, 13) else set()  # see requirements-dev.txt
# Durability is of no use to throw-away test clusters; skipping fsync saves seconds a test.
# (Not synchronous_commit = off: VACUUM will not mark pages all-visible while a
# commit is unflushed, and the index-only scan tests rely on it.)
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


def _required(major: int) -> bool:
    extra = {int(v) for v in os.environ.get("NEXUS_TEST_REQUIRE_PG", "").split(",") if v.strip()}
    return major in ALWAYS_REQUIRED | extra


@pytest.fixture(scope="session", params=SERVER_VERSIONS, ids=lambda major: f"pg{major}")
def server(request):
    major = request.param
    try:
        binaries = find_binaries(major)
    except LocalServerError as exc:
        if _required(major):
            pytest.fail(str(exc))
        pytest.skip(f"PostgreSQL {major} is not installed here")
    srv = LocalServer(Path(tempfile.mkdtemp(prefix=f"nexus-test-pg{major}-")), binaries, FAST_SETTINGS)
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
    return subprocess.run([str(root / "scripts" / name), *args], capture_output=True, text=True,
                          env=script_env(**env), cwd=root, timeout=300)


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
