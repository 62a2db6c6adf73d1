"""scripts/localdb: the project's own PostgreSQL, kept in .local-pg/ (ignored by git)."""

from __future__ import annotations

import argparse

from . import PROJECT_ROOT
from .localpg import LocalServer, LocalServerError
from .settings import run_cli

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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/localdb", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status", "url", "remove"],
                        help="start (or reuse) and print the URL; stop; status; url; "
                             "remove: stop and delete its data")
    command = parser.parse_args(argv).command
    server = local_server()
    if command == "start":
        print(start_local_database())
    elif command == "url":
        print(server.url(LOCAL_DATABASE))
    elif command == "status":
        port = server.port()
        if port is None:
            print(f"stopped ({'data in ' + str(server.home) if server.data.exists() else 'no data yet'})")
            return 3
        print(f"running: {server.binaries}, {server.url(LOCAL_DATABASE)}, data in {server.home}")
    elif command == "stop":
        print("stopped" if server.stop() else "was not running")
    elif command == "remove":
        server.remove()
        print(f"removed {server.home}")
    return 0


if __name__ == "__main__":
    run_cli(main)
