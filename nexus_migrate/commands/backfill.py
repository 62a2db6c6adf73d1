"""scripts/migrate backfill [ID]: run the backfills of applied migrations again.

A backfill fills only rows that still need it, so a second run finds what is
left: rows that an older proxy wrote while the migration ran (a rolling
upgrade), or accounts once NEXUS_ACCOUNT_MAP is given. Same batches, same
progress lines as apply; same guards (one run at a time, the rights); exit 0
when it is done, also when nothing was left to do.
"""

from __future__ import annotations

import argparse

from yoyo import read_migrations

from .. import MIGRATIONS_DIR
from ..database.catalog import applied_migrations
from ..database.connection import connect
from ..database.guards import guarded_session
from ..database.settings import load_env, migration_table
from ..errors import OperatorError
from ..proxy.accounts import account_map
from ..steps import Backfill

DESCRIPTION = """\
Finish the backfills of the applied migrations (003 Task calls and sub-task
links, 005 accounts, 007 parent requests, 008 sub-tasks into their parent's
conversation), in their order, or those of migration ID alone. Each fills only
the rows that still need it, in batches, while the proxy writes; nothing left
to do changes nothing.

Settings: NEXUS_BATCH_SECONDS (target time of a batch, 0.1), NEXUS_BATCH_ROWS
(the first batch, 1000), NEXUS_BATCH_PAUSE_MS (between batches, 0),
NEXUS_PROGRESS_SECONDS (5), NEXUS_LOCK_TIMEOUT_MS, NEXUS_LOCK_ATTEMPTS,
NEXUS_MAX_REPLICA_LAG (1 s), NEXUS_MAX_HOLD_SECONDS (300);
NEXUS_ACCOUNT_MAP for 005 (docs/operating.md, Backfills)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other failure of scripts/migrate
        raise OperatorError(f"backfill: {message} (see scripts/migrate backfill --help)")


def with_backfills() -> list:
    """The migrations that have backfill steps, in order."""
    found = []
    for migration in read_migrations(str(MIGRATIONS_DIR)):
        migration.load()
        if any(isinstance(step, Backfill) for step in migration.module.steps):
            found.append(migration)
    return found


def chosen(migrations: list, wanted: str | None, applied: list[str]) -> list:
    if wanted is None:
        return [m for m in migrations if m.id in applied]
    matches = [m for m in migrations if m.id == wanted] or [m for m in migrations if m.id.startswith(wanted)]
    if len(matches) != 1:
        raise OperatorError(f"backfill: {wanted!r} is not a migration with a backfill; those are "
                            f"{', '.join(m.id for m in migrations)}")
    if matches[0].id not in applied:
        raise OperatorError(f"backfill: {matches[0].id} is not applied: scripts/migrate apply runs its backfills")
    return matches


def main(argv: list[str]) -> int:
    parser = _Parser(prog="scripts/migrate backfill", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("id", nargs="?", metavar="ID",
                        help="a migration (its number is enough: 005); by default every applied one")
    args = parser.parse_args(argv)
    load_env()
    account_map()  # a malformed NEXUS_ACCOUNT_MAP stops here, before anything connects
    migrations = with_backfills()
    with guarded_session("backfill") as (conn, url):
        todo = chosen(migrations, args.id, applied_migrations(conn, migration_table()))
        if not todo:
            print("backfill: no applied migration has a backfill")
            return 0
        work = connect(url)
        work.autocommit = True  # each batch is a transaction of its own
        try:
            for migration in todo:
                for step in migration.module.steps:
                    if isinstance(step, Backfill):
                        step.apply(work)
        finally:
            work.close()
    return 0
