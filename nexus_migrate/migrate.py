"""scripts/migrate: yoyo's own commands (apply, rollback, list, reapply,
break-lock, ...), with DATABASE_URL read from the environment or .env and a
one-line error, not a traceback, when something is wrong."""

from __future__ import annotations

import os

from . import YOYO_CONFIG, backup, rehearse, sqlplan
from .settings import database_url, load_env, run_cli
from .steps import ALLOW_DATA_LOSS, ALLOW_DATA_LOSS_OPTION
from .verify_cli import main as verify

# yoyo commands that do not touch a database
NO_DATABASE = {"new", "init"}
# sub-commands of our own, next to yoyo's (see README, Safety rails)
OWN_COMMANDS = {"sql": sqlplan.main, "rehearse": rehearse.main, "verify": verify}


def yoyo(argv: list[str]) -> int:
    """Run the yoyo command line with the project's yoyo.ini, wherever we are."""
    from yoyo.scripts.main import main as yoyo_main

    return yoyo_main(["--config", str(YOYO_CONFIG), *argv]) or 0


def main(argv: list[str]) -> int:
    load_env()
    if argv and argv[0] in OWN_COMMANDS:
        return OWN_COMMANDS[argv[0]](argv[1:])
    argv, backup_dir = backup.take_option(argv)
    if ALLOW_DATA_LOSS_OPTION in argv:  # what the data-loss guard of a rollback asks for
        argv = [arg for arg in argv if arg != ALLOW_DATA_LOSS_OPTION]
        os.environ[ALLOW_DATA_LOSS] = "1"
    needs_database = argv and argv[0] not in NO_DATABASE and not {"-h", "--help"} & set(argv)
    if needs_database:
        database_url()  # fails with one line when it is missing or malformed
    else:
        os.environ.setdefault("DATABASE_URL", "")  # yoyo.ini refers to it even for --help
    if argv and argv[0] in backup.COMMANDS:
        backup.before(argv, backup_dir)
    return yoyo(argv)


if __name__ == "__main__":
    run_cli(main)
