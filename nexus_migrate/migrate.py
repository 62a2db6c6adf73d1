"""scripts/migrate: yoyo's own commands (apply, rollback, list, reapply,
break-lock, ...), with DATABASE_URL read from the environment or .env and a
one-line error, not a traceback, when something is wrong. Runs on one database
take turns instead of racing (see guards.py)."""

from __future__ import annotations

import os

import psycopg2
from yoyo.exceptions import LockTimeout

from . import YOYO_CONFIG, backup, rehearse, sqlplan
from .connection import connect, explain
from .guards import application_name, check_rights, left_lock, one_run_at_a_time
from .settings import OperatorError, database_url, load_env, run_cli
from .steps import ALLOW_DATA_LOSS, ALLOW_DATA_LOSS_OPTION
from .verify_cli import main as verify

# yoyo commands that do not touch a database
NO_DATABASE = {"new", "init"}
# sub-commands of our own, next to yoyo's (see docs/operating.md, Safety rails)
OWN_COMMANDS = {"sql": sqlplan.main, "rehearse": rehearse.main, "verify": verify}


def yoyo(argv: list[str]) -> int:
    """Run the yoyo command line with the project's yoyo.ini, wherever we are."""
    from yoyo.scripts.main import main as yoyo_main

    return yoyo_main(["--config", str(YOYO_CONFIG), *argv]) or 0


def guarded(command: str, argv: list[str]) -> int:
    """yoyo's command on DATABASE_URL, after our checks and holding our lock."""
    url = database_url()  # fails with one line when it is missing or malformed
    # Every session of this run, yoyo's too, is named in pg_stat_activity; and an
    # address that swallows packets fails in seconds, not in TCP's two minutes.
    os.environ.setdefault("PGAPPNAME", application_name(command))
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    conn = connect(url)
    try:
        with one_run_at_a_time(conn, command):
            check_rights(conn)
            if command != "break-lock":
                stale = left_lock(conn, command)
                if stale:
                    raise stale
            try:
                return yoyo(argv)
            except psycopg2.Error as exc:
                explained = explain(exc, url)
                if explained:
                    raise explained from None
                raise
            except LockTimeout:  # a plain `yoyo` run took the lock after we looked
                raise left_lock(conn, command) or OperatorError(
                    f"another yoyo run held yoyo's lock for over 10 s: scripts/migrate {command} again"
                ) from None
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if not YOYO_CONFIG.exists():  # a copy of the package installed apart from the project
        raise OperatorError(f"{YOYO_CONFIG} not found: nexus_migrate runs from the project folder; "
                            "install it with pip install -r requirements.txt run in the project root")
    load_env()
    if argv and argv[0] in OWN_COMMANDS:
        return OWN_COMMANDS[argv[0]](argv[1:])
    argv, backup_dir = backup.take_option(argv)
    if ALLOW_DATA_LOSS_OPTION in argv:  # what the data-loss guard of a rollback asks for
        argv = [arg for arg in argv if arg != ALLOW_DATA_LOSS_OPTION]
        os.environ[ALLOW_DATA_LOSS] = "1"
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in backup.COMMANDS:
        backup.before(argv, backup_dir)
    if command is None or command in NO_DATABASE or {"-h", "--help"} & set(argv):
        os.environ.setdefault("DATABASE_URL", "")  # yoyo.ini refers to it even for --help
        return yoyo(argv)
    return guarded(command, argv)


def cli() -> None:
    """The nexus-migrate command that installing the project adds: scripts/migrate."""
    run_cli(main)


if __name__ == "__main__":
    cli()
