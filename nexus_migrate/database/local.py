"""The project's own PostgreSQL database, kept in .local-pg/ (ignored by git):
where DATABASE_URL points when it is not set."""

from __future__ import annotations

from .. import PROJECT_ROOT
from .localpg import LocalServer, LocalServerError

LOCAL_HOME = PROJECT_ROOT / ".local-pg"
LOCAL_DATABASE = "claude_nexus"


def local_server() -> LocalServer:
    return LocalServer(LOCAL_HOME)


def using_local_database(url: str) -> str:
    """What a command says when it falls back to the local database."""
    return f"No DATABASE_URL set: using the local PostgreSQL at {url}"


def running_local_database() -> str | None:
    """The local database's URL while its server runs, else None."""
    server = local_server()
    try:
        return None if server.port() is None else server.url(LOCAL_DATABASE)
    except LocalServerError:  # e.g. a data folder whose binaries are gone: not a usable server
        return None


def start_local_database() -> str:
    """Start the local server (reusing a running one) and make sure it has the
    project's database; return that database's URL."""
    server = local_server()
    server.start()
    return server.ensure_database(LOCAL_DATABASE)
