"""scripts/migrate verify: compare the live database with what its applied
migrations promise, one plain line per difference."""

from __future__ import annotations

import argparse

from ..database.connection import connect
from ..database.settings import database_url
from ..errors import OperatorError
from ..proxy.schema import PROMISES
from ..proxy.verify import compare

DESCRIPTION = """\
Compare DATABASE_URL with the schema that its applied migrations (yoyo's
_yoyo_migration table) promise: tables; columns with their types, defaults and
nullability; indexes present and valid (an index with the same columns under
another name counts); the materialized view hourly_stats and its unique index;
the function refresh_hourly_stats(); constraints and comments.

Prints each difference on a line of its own, then a last line: OK, or how many
differences there are. Differences the proxy cannot notice (a wider string
type, a column without NOT NULL, an extra default) and duplicate indexes are
printed as "note:" lines and do not count.

Exit status: 0 when there is no difference, 1 when there is one, 2 when the
database cannot be reached or the command is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other failure of scripts/migrate
        raise OperatorError(f"verify: {message} (see scripts/migrate verify --help)")


def main(argv: list[str]) -> int:
    parser = _Parser(prog="scripts/migrate verify", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true",
                        help="check against every migration, applied or not: "
                             "what `apply` would still have to add to a database built by the original scripts")
    args = parser.parse_args(argv)
    conn = connect(database_url())  # a refusal is one line with its fix, as for scripts/migrate's other commands
    try:
        report = compare(conn, list(PROMISES) if args.all else None)
    finally:
        conn.close()
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(problem)
    count = len(report.problems)
    print("OK: the database has everything its migrations promise" if not count
          else f"{count} difference{'s' if count > 1 else ''} from what the migrations promise")
    return 1 if count else 0
