"""scripts/migrate: yoyo's own commands (apply, rollback, list, reapply,
break-lock, ...), with DATABASE_URL read from the environment or .env and a
one-line error, not a traceback, when something is wrong."""

from __future__ import annotations

import os

import psycopg2

from . import YOYO_CONFIG
from .connection import connect, explain
from .settings import database_url, load_env, run_cli

# yoyo commands that do not touch a database
NO_DATABASE = {"new", "init"}


def yoyo(argv: list[str]) -> int:
    """Run the yoyo command line with the project's yoyo.ini, wherever we are."""
    from yoyo.scripts.main import main as yoyo_main

    return yoyo_main(["--config", str(YOYO_CONFIG), *argv]) or 0


def guarded(command: str, argv: list[str]) -> int:
    """yoyo's command on DATABASE_URL, its database errors explained."""
    url = database_url()  # fails with one line when it is missing or malformed
    # An address that swallows packets fails in seconds, not in TCP's two minutes.
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    connect(url).close()  # one line naming the problem when we cannot get in
    try:
        return yoyo(argv)
    except psycopg2.Error as exc:
        explained = explain(exc, url)
        if explained:
            raise explained from None
        raise


def main(argv: list[str]) -> int:
    load_env()
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is None or command in NO_DATABASE or {"-h", "--help"} & set(argv):
        os.environ.setdefault("DATABASE_URL", "")  # yoyo.ini refers to it even for --help
        return yoyo(argv)
    return guarded(command, argv)


if __name__ == "__main__":
    run_cli(main)
