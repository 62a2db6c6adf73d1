"""scripts/migrate, also installed as the nexus-migrate command: yoyo's own
commands (apply, rollback, list, reapply, break-lock, ...) and a few of ours,
with DATABASE_URL read from the environment or .env (else the running local
database) and a one-line error, not a traceback, when something is wrong. Runs
on one database take turns instead of racing (see database/guards.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from yoyo.config import read_config
from yoyo.exceptions import LockTimeout
from yoyo.scripts.main import make_argparser

from .. import YOYO_CONFIG
from ..database.guards import guarded_session, left_lock
from ..database.settings import database_url, load_env
from ..errors import OperatorError, run_cli
from ..proxy.accounts import account_map
from ..steps import ALLOW_DATA_LOSS, ALLOW_DATA_LOSS_OPTION
from . import backfill as backfill_cli
from . import backup, rehearse, sqlplan, status
from .verify import main as verify

PROG = "scripts/migrate"
HELP_OPTIONS = {"-h", "--help"}


class OwnCommand(NamedTuple):
    run: Callable[[list[str]], int]
    summary: str  # its line in scripts/migrate --help


# Sub-commands of our own, beside yoyo's (see docs/operating.md, Safety rails).
# An entry here is all scripts/migrate and its help need to know of one.
OWN_COMMANDS = {
    "verify": OwnCommand(verify, "compare the database with what its applied migrations promise"),
    "rehearse": OwnCommand(rehearse.main, "the pending migrations on a scratch copy of the schema; the target is only read"),
    "sql": OwnCommand(sqlplan.main, "print the SQL that apply (sql rollback: rollback) would run, running none of it"),
    "backfill": OwnCommand(backfill_cli.main, "finish the backfills of applied migrations (backfill ID: of one), in batches"),
    "status": OwnCommand(status.main, "what a running apply is doing: its sessions, its backfill's progress and holds"),
}

# Our line for each of yoyo's commands; one that a later yoyo adds is listed
# all the same, with YOYO_ANY.
YOYO_SUMMARIES = {
    "apply": "apply the pending migrations (-r ID: ID and what it depends on)",
    "rollback": "roll back the last applied migration (-r ID: ID and its dependents; --all)",
    "reapply": "roll back migrations and apply them again",
    "list": "the migrations: A applied, U not yet",
    "develop": "apply what is pending without asking; with nothing pending, redo the last one",
    "mark": "record migrations as applied without running them",
    "unmark": "forget that migrations were applied, without rolling them back",
    "break-lock": "remove yoyo's lock left by a killed run",
    "new": "start a new migration file (ours are written as docs/contributing.md says)",
    "init": "write a yoyo.ini and a migrations folder (this project has both)",
}
YOYO_ANY = "yoyo's command of that name"

# yoyo commands that run migrations' apply steps, 005's backfill among them
APPLYING_COMMANDS = {"apply", "reapply", "develop"}

# yoyo commands that do not touch a database
NO_DATABASE = {"new", "init"}

# What yoyo 9.0.0 asks at a terminal unless in batch mode (--batch, or
# batch_mode in yoyo.ini): apply, rollback, reapply, mark and unmark choose
# the migrations one question at a time and confirm (scripts/migrate.py,
# get_migrations); new opens an editor. develop sets batch mode itself; list,
# break-lock and init ask nothing. Without a terminal, asking fails.
ASKING_COMMANDS = {"apply", "rollback", "reapply", "mark", "unmark", "new"}


class AddedOption(NamedTuple):
    usage: str
    commands: frozenset[str]
    summary: str


# Options scripts/migrate takes on top of yoyo's, with the commands they go with.
ADDED_OPTIONS = (
    AddedOption(f"{backup.OPTION} DIR", frozenset(backup.COMMANDS),
                "dump the database into DIR first; no dump, no migration"),
    AddedOption(ALLOW_DATA_LOSS_OPTION, frozenset({"rollback", "reapply"}),
                f"may drop tables and columns holding data ({ALLOW_DATA_LOSS}=1)"),
)


def yoyo_commands() -> list[str]:
    """The sub-commands of the pinned yoyo, from its own argument parser."""
    return list(make_argparser()[2].choices)


def _in_yoyo_order(commands) -> str:
    return ", ".join(name for name in yoyo_commands() if name in commands)


def usage() -> str:
    """What scripts/migrate --help prints."""
    width = max(len(name) for name in [*yoyo_commands(), *OWN_COMMANDS, *(o.usage for o in ADDED_OPTIONS)]) + 2
    lines = [f"usage: {PROG} COMMAND [OPTIONS]",
             "       nexus-migrate COMMAND [OPTIONS]   (the same, where requirements.txt is installed)",
             "",
             "yoyo's commands, on DATABASE_URL (the environment, .env, else the running local database):"]
    lines += [f"  {name:<{width}}{YOYO_SUMMARIES.get(name, YOYO_ANY)}" for name in yoyo_commands()]
    lines += ["commands of our own:"]
    lines += [f"  {name:<{width}}{command.summary}" for name, command in OWN_COMMANDS.items()]
    lines += ["options added to yoyo's:"]
    lines += [f"  {option.usage:<{width}}{_in_yoyo_order(option.commands)}: {option.summary}"
              for option in ADDED_OPTIONS]
    lines += ["",
              f"--batch: ask nothing. {_in_yoyo_order(ASKING_COMMANDS)} ask unless given it,",
              "and stop at once where no terminal is (a CI job, cron).",
              f"{PROG} COMMAND --help: that command's options. README.md: everyday use;",
              "docs/operating.md: production, the safety rails, faults and recovery."]
    return "\n".join(lines)


def command_help(command: str) -> None:
    """What scripts/migrate adds to a yoyo command's help (yoyo's follows)."""
    added = [option for option in ADDED_OPTIONS if command in option.commands]
    if added:
        width = max(len(option.usage) for option in added) + 2
        print(f"{PROG} {command} also takes:")
        for option in added:
            print(f"  {option.usage:<{width}}{option.summary}")
    if command in ASKING_COMMANDS:
        print(f"{PROG} {command} asks before it acts; where no terminal is, it stops unless given --batch.")
    print(f"{PROG} --help lists every command; yoyo's help for {command} follows.\n")


def batch_mode(argv: list[str]) -> bool:
    """Whether yoyo will run argv without asking, as yoyo decides it: its
    --batch (-b) option, by default yoyo.ini's batch_mode."""
    global_parser = make_argparser()[0]
    in_config = read_config(str(YOYO_CONFIG)).getboolean("DEFAULT", "batch_mode", fallback=None)
    if in_config is not None:
        global_parser.set_defaults(batch_mode=in_config)
    return global_parser.parse_known_args(argv)[0].batch_mode


def refuse_to_ask_without_a_terminal(command: str, argv: list[str]) -> None:
    """Stop, before anything connects, a command that would ask where nobody can answer."""
    if command in ASKING_COMMANDS and not sys.stdin.isatty() and not batch_mode(argv):
        raise OperatorError(f"{PROG} {command} would ask questions, and its input is not a terminal "
                            f"(a CI job, cron?): add --batch to run it without asking")


def command_of(argv: list[str]) -> str | None:
    """The sub-command in yoyo's argv: the first word that is not an option
    (nor the file of yoyo's -c/--config)."""
    words = iter(argv)
    for word in words:
        if word in {"-c", "--config"}:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def yoyo(argv: list[str]) -> int:
    """Run the yoyo command line with the project's yoyo.ini, wherever we are."""
    from yoyo.scripts.main import main as yoyo_main

    return yoyo_main(["--config", str(YOYO_CONFIG), *argv]) or 0


def guarded(command: str, argv: list[str]) -> int:
    """yoyo's command on DATABASE_URL, after our checks and holding our lock."""
    with guarded_session(command) as (conn, url):
        try:
            return yoyo(argv)
        except LockTimeout:  # a plain `yoyo` run took the lock after we looked
            raise left_lock(conn, command) or OperatorError(
                f"another yoyo run held yoyo's lock for over 10 s: scripts/migrate {command} again"
            ) from None


def main(argv: list[str]) -> int:
    if not YOYO_CONFIG.exists():  # a copy of the package installed apart from the project
        raise OperatorError(f"{YOYO_CONFIG} not found: nexus_migrate runs from the project folder; "
                            "install it with pip install -r requirements.txt run in the project root")
    if not argv or argv[0] in HELP_OPTIONS:
        print(usage())
        return 0 if argv else 2  # no command, nothing done: not a success for a script
    load_env()
    if argv[0] in OWN_COMMANDS:
        return OWN_COMMANDS[argv[0]].run(argv[1:])
    argv, backup_dir = backup.take_option(argv)
    if ALLOW_DATA_LOSS_OPTION in argv:  # what the data-loss guard of a rollback asks for
        argv = [arg for arg in argv if arg != ALLOW_DATA_LOSS_OPTION]
        os.environ[ALLOW_DATA_LOSS] = "1"
    command = command_of(argv)
    if command is None:  # options alone
        print(usage())
        return 0 if HELP_OPTIONS & set(argv) else 2
    if command not in yoyo_commands():
        raise OperatorError(f"unknown command {command!r}: {PROG} --help lists them")
    if HELP_OPTIONS & set(argv):
        command_help(command)
        os.environ.setdefault("DATABASE_URL", "")  # yoyo.ini refers to it even for --help
        return yoyo(argv)
    refuse_to_ask_without_a_terminal(command, argv)  # before the backup connects, too
    if command in NO_DATABASE:
        os.environ.setdefault("DATABASE_URL", "")
        return yoyo(argv)
    if command in APPLYING_COMMANDS:
        account_map()  # a malformed NEXUS_ACCOUNT_MAP stops the run before it changes anything
    if backup_dir is not None:
        backup.backup(database_url(), backup_dir)
    return guarded(command, argv)


def cli() -> None:
    """The nexus-migrate command that installing the project adds: scripts/migrate."""
    run_cli(main)


if __name__ == "__main__":
    cli()
