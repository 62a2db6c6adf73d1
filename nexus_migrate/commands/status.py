"""scripts/migrate status: what the migrations of DATABASE_URL are doing, in
a few lines, from another terminal: how many are applied, whether a run holds
the migrations' turn, and what each of its sessions does (a backfill says how
far it is and why it holds, in its application_name). It only reads, and
waits for nothing."""

from __future__ import annotations

import argparse

from yoyo import read_migrations
from yoyo.migrations import topological_sort

from .. import MIGRATIONS_DIR
from ..database.catalog import applied_migrations
from ..database.connection import connect
from ..database.guards import turn_holder
from ..database.settings import database_url, load_env, migration_table
from ..errors import OperatorError

# The sessions of a run: scripts/migrate names them; a backfill under plain
# yoyo names its own (steps/throttle.py).
SESSIONS = """
    SELECT pid, application_name, state, extract(epoch FROM now() - state_change)::int
      FROM pg_stat_activity
     WHERE pid <> pg_backend_pid() AND datname = current_database()
       AND (application_name LIKE 'scripts/migrate%%' OR application_name LIKE 'nexus-migrate%%')
     ORDER BY backend_start, pid"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other failure of scripts/migrate
        raise OperatorError(f"status: {message} (see scripts/migrate status --help)")


def main(argv: list[str]) -> int:
    parser = _Parser(prog="scripts/migrate status", description=__doc__)
    parser.parse_args(argv)
    load_env()
    ids = [m.id for m in topological_sort(read_migrations(str(MIGRATIONS_DIR)))]
    conn = connect(database_url())
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (migration_table(),))
            applied = applied_migrations(conn, migration_table()) if cur.fetchone()[0] else []
            pending = [i for i in ids if i not in applied]
            print(f"applied: {len(applied)} of {len(ids)}" + (f" (next: {pending[0]})" if pending else ""))
            holder = turn_holder(cur)
            print(f"running: {holder}" if holder else "running: nothing")
            cur.execute(SESSIONS)
            for pid, name, state, seconds in cur.fetchall():
                print(f"  session {pid}: {name} ({state or 'state not visible'}"
                      + (f" for {seconds} s)" if seconds is not None else ")"))
    finally:
        conn.close()
    return 0
