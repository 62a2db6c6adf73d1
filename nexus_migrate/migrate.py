"""scripts/migrate: yoyo's own commands (apply, rollback, list, reapply,
break-lock, ...), with DATABASE_URL read from the environment or .env and a
one-line error, not a traceback, when something is wrong."""

from __future__ import annotations

import os

from . import YOYO_CONFIG
from .settings import database_url, load_env, run_cli
from .verify_cli import main as verify

# Sub-commands of our own, beside yoyo's
OWN_COMMANDS = {"verify": verify}

# yoyo commands that do not touch a database
NO_DATABASE = {"new", "init"}


def yoyo(argv: list[str]) -> int:
    """Run the yoyo command line with the project's yoyo.ini, wherever we are."""
    from yoyo.scripts.main import main as yoyo_main

    return yoyo_main(["--config", str(YOYO_CONFIG), *argv]) or 0


def main(argv: list[str]) -> int:
    load_env()
    if argv and argv[0] in OWN_COMMANDS:
        return OWN_COMMANDS[argv[0]](argv[1:])
    needs_database = argv and argv[0] not in NO_DATABASE and not {"-h", "--help"} & set(argv)
    if needs_database:
        database_url()  # fails with one line when it is missing or malformed
    else:
        os.environ.setdefault("DATABASE_URL", "")  # yoyo.ini refers to it even for --help
    return yoyo(argv)


if __name__ == "__main__":
    run_cli(main)
