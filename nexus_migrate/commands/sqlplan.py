"""scripts/migrate sql [apply|rollback] [-r ID] [--all] [--offline]

Print, in order, the SQL that `scripts/migrate apply` (or `rollback`) would run,
without running any of it, so that it can be read first. Each step is shown as
it is sent: a ddl step as its own BEGIN ... COMMIT under the lock_timeout; an
index step as CREATE/DROP INDEX CONCURRENTLY outside any transaction; a
post-check as its DO block.

Which migrations: those yoyo has not applied yet (apply), or the last applied
one (rollback), read from yoyo's tables in a read-only session, so this writes
nothing, not even yoyo's own tables. -r ID selects as yoyo's -r does: ID and
what it depends on (apply), ID and what depends on it (rollback). --all with
rollback: every applied migration. --offline connects to no database and
assumes an empty one for apply, a fully migrated one for rollback.

The output is a psql script: psql -v ON_ERROR_STOP=1 -f FILE runs the same
statements (without yoyo's bookkeeping, the runner's retries and its checks
for an equivalent index).
"""

from __future__ import annotations

import argparse

from yoyo import get_backend, read_migrations
from yoyo.internalmigrations import get_current_version, schema_versions
from yoyo.migrations import topological_sort
from yoyo.scripts.main import InvalidArgument
from yoyo.scripts.migrate import migrations_to_revision

from .. import MIGRATIONS_DIR
from ..database.pgclient import read_only_url
from ..database.settings import database_url, load_env, migration_table
from ..errors import OperatorError, mask_password
from ..steps import ALLOW_DATA_LOSS, Backfill, Check, Constraint, Index, RetiredIndex, lock_attempts, rendered_sql


def select(direction: str, revision: str | None = None, every: bool = False, url: str | None = None) -> list:
    """The migrations that `scripts/migrate <direction> --batch [-r revision]
    [--all]` would run on url, in the order it would run them; url None means
    an empty database (apply) or a fully migrated one (rollback)."""
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        migrations = migrations_to_revision(migrations, revision, direction)
    except InvalidArgument as exc:
        raise OperatorError(str(exc)) from None
    if url is None:
        chosen = list(topological_sort(migrations))
        chosen = chosen if direction == "apply" else chosen[::-1]
    else:
        chosen = _pending(url, migrations, direction)
    if direction == "rollback" and not revision and not every:
        chosen = chosen[:1]  # as yoyo rollback --batch: the last applied one only
    return chosen


def _pending(url: str, migrations, direction: str) -> list:
    # yoyo's own selection, on a read-only session: yoyo would create its
    # tables here on first use; the transaction mode refuses that, and a
    # database without them has nothing applied.
    backend = get_backend(read_only_url(url), migration_table())
    try:
        version = get_current_version(backend)
        if version == 0:
            return list(topological_sort(migrations)) if direction == "apply" else []
        if version < max(schema_versions):
            raise OperatorError("yoyo's tables in this database come from an older yoyo: "
                                "run scripts/migrate list once to upgrade them")
        chosen = backend.to_apply(migrations) if direction == "apply" else backend.to_rollback(migrations)
        return list(chosen)
    finally:
        backend.connection.close()


def render(migrations, direction: str) -> str:
    """The psql script for migrations in direction, with comments for a reviewer."""
    out = []
    for migration in migrations:
        migration.load()
        steps = migration.module.steps
        out.append(f"\n-- ===== {migration.id}: {direction} =====")
        if direction == "rollback":
            out.append(f"-- (first, with no SQL to show here: a guard stops the rollback if it would drop a table\n"
                       f"-- that holds rows or a column that holds values, unless {ALLOW_DATA_LOSS}=1)")
            steps = steps[::-1]
        for step in steps:
            sql = rendered_sql(step, direction)
            if not sql:
                continue
            out.append(f"\n-- {_describe(step, direction)}")
            out.append(sql)
    return "\n".join(out)


def _describe(step, direction: str) -> str:
    if isinstance(step, Index) or (isinstance(step, RetiredIndex) and direction == "rollback"):
        return (f"outside a transaction (CONCURRENTLY cannot run in one). The runner first drops an INVALID\n"
                f"-- {step.name} left by an interrupted build, and skips the build when a valid equivalent index exists.")
    if isinstance(step, RetiredIndex) and step.replaced_by:
        return (f"outside a transaction (CONCURRENTLY cannot run in one), once the runner has found\n"
                f"-- {step.replaced_by}, which serves the same queries, valid.")
    if isinstance(step, RetiredIndex):
        return "outside a transaction (CONCURRENTLY cannot run in one): no query uses this index."
    if isinstance(step, Constraint) and direction == "apply":
        return ("added NOT VALID in a transaction of its own (new rows are checked from then on), then\n"
                "-- validated in another, which reads the table without blocking writes. The runner adds nothing\n"
                "-- when a constraint of the same definition exists under any name, and replaces one of this\n"
                "-- name but another definition (DROP CONSTRAINT ..., ADD CONSTRAINT ... in one statement).")
    if isinstance(step, Backfill):
        return (f"a backfill, {step.name}: the runner sends this statement once per batch of rows, each in a\n"
                "-- transaction of its own, with the batch's own range of pages in `t.ctid >= ... AND t.ctid < ...`\n"
                "-- (or of an indexed column's values; shown here with the whole table: one batch, which psql runs\n"
                "-- as one transaction), sized to NEXUS_BATCH_SECONDS, holding while a standby lags; then once more\n"
                "-- over the rows written behind it, and over the rows it skipped while the proxy held them. psql\n"
                "-- cannot reproduce that loop; the result is the same.")
    if isinstance(step, Check):
        return "a check, outside a transaction: raises an error if the database is not as the migration needs."
    return "in a transaction of its own."


def header(migrations, direction: str, where: str) -> str:
    ids = ", ".join(m.id for m in migrations)
    return "\n".join([
        f"-- What `scripts/migrate {direction}` would run on {where}, in this order: {ids}.",
        "-- Each statement is sent on its own (autocommit), as psql -f sends it.",
        "-- When a transaction's lock_timeout expires the runner rolls it back, waits and tries it again,",
        f"-- {lock_attempts()} attempts in all (NEXUS_LOCK_ATTEMPTS).",
        "-- Index builds and drops, constraint validations, a backfill's ANALYZE and the rollback guard's",
        "-- reads run with statement_timeout (and transaction_timeout) = 0, index builds and drops with",
        "-- lock_timeout = 0 too (not shown); every other statement under the session's own timeouts",
        "-- or its step's lock_timeout.",
        f"-- After each migration yoyo records the {direction} in {migration_table()} and _yoyo_log (not shown).",
    ])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/migrate sql", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the SQL that apply (or rollback) would run, in order, and run none of it.",
        epilog="Migrations: the pending ones (apply) or the last applied one (rollback), read from yoyo's\n"
               "tables in a read-only session. The output is a psql script (psql -v ON_ERROR_STOP=1 -f FILE).")
    parser.add_argument("direction", nargs="?", choices=["apply", "rollback"], default="apply",
                        help="apply (the default) or rollback")
    parser.add_argument("-r", "--revision", metavar="ID",
                        help="as yoyo's -r: ID and what it depends on (apply), ID and what depends on it (rollback)")
    parser.add_argument("-a", "--all", dest="every", action="store_true",
                        help="rollback: every applied migration, not only the last one")
    parser.add_argument("--offline", action="store_true",
                        help="connect to no database: assume an empty one (apply) or a fully migrated one (rollback)")
    args = parser.parse_args(argv)
    load_env()
    url = None if args.offline else database_url()
    migrations = select(args.direction, args.revision, args.every, url)
    where = "an empty database" if args.offline and args.direction == "apply" else \
        "a fully migrated database" if args.offline else mask_password(url, url)
    if not migrations:
        print(f"-- nothing to {args.direction} on {where}")
        return 0
    print(header(migrations, args.direction, where))
    print(render(migrations, args.direction))
    return 0
