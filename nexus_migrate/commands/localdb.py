"""scripts/localdb: the project's own PostgreSQL, kept in .local-pg/ (ignored by git)."""

from __future__ import annotations

import argparse

from ..database.local import LOCAL_DATABASE, local_server, start_local_database
from ..errors import run_cli


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
