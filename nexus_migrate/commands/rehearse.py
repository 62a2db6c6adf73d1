"""scripts/migrate rehearse: try the pending migrations on a copy of the target's
schema, never on the target itself.

The copy is a scratch database on the same server, <target>_rehearsal_<time>,
made from `pg_dump --schema-only` of the target plus the rows of yoyo's tables,
so it starts with the same objects and the same applied migrations, and no
data. There, through yoyo as `scripts/migrate apply` would: apply the pending
migrations, verify, roll them back (and check that the schema is again the one
found), verify, apply again, verify. Then the locks: each step once more, on its
own connection, with pg_locks read inside the step's transaction before it
commits. The scratch database is dropped at the end, also after a failure or
Ctrl-C.

The target is only read: through a read-only session and pg_dump. A connection
to it also issues CREATE DATABASE / DROP DATABASE for the scratch database,
which needs CREATEDB.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql as pgsql
from yoyo import get_backend, read_migrations

from .. import MIGRATIONS_DIR
from ..database import pgclient
from ..database.catalog import applied_migrations, snapshot, widened
from ..database.settings import database_url, load_env, migration_table
from ..errors import OperatorError, mask_password
from ..proxy.verify import verify
from ..steps import Index, RetiredIndex, lock_timeout_ms, widenings
from ..steps.sql_tree import indexed_table

YOYO_TABLES = ("_yoyo_migration", "_yoyo_version", "_yoyo_log")  # their rows carry the applied state
MAX_NAME = 63  # PostgreSQL's identifier length

# Lock modes from weakest to strongest, as pg_locks names them.
MODES = ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
         "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]
# What each mode does to the proxy, whose writes take RowExclusiveLock and reads AccessShareLock.
EFFECT = {"ShareLock": "blocks writes", "ShareRowExclusiveLock": "blocks writes",
          "ExclusiveLock": "blocks writes", "AccessExclusiveLock": "blocks reads and writes"}
# CONCURRENTLY builds and drops run outside a transaction, in several of their
# own, so their locks cannot be read before a commit; PostgreSQL documents them
# as SHARE UPDATE EXCLUSIVE on the table, which blocks neither reads nor writes.
CONCURRENT_MODE = "ShareUpdateExclusiveLock"


class RehearsalFailed(Exception):
    """A migration failed or did not verify on the scratch database."""


@dataclass
class StepLocks:
    migration: str
    direction: str
    statement: str
    locks: dict[str, str] = field(default_factory=dict)  # relation -> strongest mode
    documented: bool = False


def label(sql: str) -> str:
    """A statement in one short line: its words, without IF [NOT] EXISTS."""
    text = re.sub(r"\bIF\s+(NOT\s+)?EXISTS\s+", "", " ".join(sql.split()), flags=re.I)
    return text if len(text) <= 64 else text[:63] + "…"


def mode_name(mode: str) -> str:
    """'AccessExclusiveLock' -> 'ACCESS EXCLUSIVE', as the documentation writes it."""
    return " ".join(re.findall(r"[A-Z][a-z]+", mode.removesuffix("Lock"))).upper()


def scratch_name(target: str, when: datetime) -> str:
    suffix = f"_rehearsal_{when:%Y%m%d%H%M%S}"
    return target[:MAX_NAME - len(suffix)] + suffix


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/migrate rehearse", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rehearse the pending migrations on a scratch copy of the target's schema (no data):\n"
                    "apply, verify, rollback, verify, apply, verify; then the locks each statement takes.\n"
                    "The target (DATABASE_URL) is only read; the scratch database is created on the same\n"
                    "server (the role needs CREATEDB) and dropped at the end.")
    parser.parse_args(argv)
    load_env()
    try:
        rehearse(database_url())
    except RehearsalFailed as exc:
        print(f"error: rehearsal failed: {exc}; the target was not touched", file=sys.stderr)
        return 1
    return 0


def rehearse(url: str) -> list[StepLocks]:
    target = pgclient.database_name(url)
    conn = pgclient.read_only_connection(url)
    try:
        major = pgclient.server_major(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                        "WHERE datname = current_database()")
            encoding, collate, ctype = cur.fetchone()
            cur.execute("SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL", (list(YOYO_TABLES),))
            yoyo_tables = [row[0] for row in cur.fetchall()]
        applied = applied_migrations(conn, migration_table())
    finally:
        conn.close()
    pg_dump = pgclient.find_client("pg_dump", major)
    pg_restore = pgclient.Client(pg_dump.path.with_name("pg_restore"), pg_dump.major)

    scratch = scratch_name(target, datetime.now())
    scratch_url = pgclient.with_database(url, scratch)
    admin = psycopg2.connect(url)
    admin.autocommit = True  # CREATE / DROP DATABASE run outside a transaction
    workdir = Path(tempfile.mkdtemp(prefix="nexus-rehearsal-"))
    try:
        _create(admin, scratch, encoding, collate, ctype)
        print(f"rehearsal: {scratch} on the server of {mask_password(url, url)}: the schema of {target} "
              f"without its rows; applied there: {', '.join(applied) or 'nothing'}", flush=True)
        _copy_schema(pg_dump, pg_restore, url, scratch_url, yoyo_tables, workdir)
        return _run(scratch_url, applied)
    finally:
        try:
            with admin.cursor() as cur:
                cur.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(scratch)))
            print(f"rehearsal: dropped {scratch}", flush=True)
        finally:
            admin.close()
            shutil.rmtree(workdir, ignore_errors=True)


def _create(admin, scratch: str, encoding: str, collate: str, ctype: str) -> None:
    try:
        with admin.cursor() as cur:
            cur.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                pgsql.Identifier(scratch), pgsql.Literal(encoding), pgsql.Literal(collate), pgsql.Literal(ctype)))
    except psycopg2.errors.InsufficientPrivilege:
        raise OperatorError(
            "rehearse creates a scratch database on the target's server, and this role may not create "
            "databases: grant it CREATEDB (ALTER ROLE ... CREATEDB) or rehearse with a role that has it"
        ) from None


def _copy_schema(pg_dump, pg_restore, url: str, scratch_url: str, yoyo_tables: list[str], workdir: Path) -> None:
    """The target's schema, and the rows of yoyo's tables, into the scratch database."""
    schema_file, rows_file = workdir / "schema.dump", workdir / "yoyo-rows.dump"
    steps = [(pg_dump, ["--schema-only", "--format=custom", f"--file={schema_file}"], url),
             (pg_restore, ["--exit-on-error", "--no-owner", "--no-privileges", str(schema_file)], scratch_url)]
    if yoyo_tables:
        steps += [(pg_dump, ["--data-only", "--format=custom", f"--file={rows_file}",
                             *(f"--table={t}" for t in yoyo_tables)], url),
                  (pg_restore, ["--exit-on-error", "--data-only", str(rows_file)], scratch_url)]
    for client, args, on in steps:
        result = pgclient.run(client, args, on)
        if result.returncode != 0:
            raise OperatorError(f"{client.path.name} failed while copying the schema: "
                                f"{mask_password(pgclient.first_error_line(result), url)}")


def _run(scratch_url: str, applied: list[str]) -> list[StepLocks]:
    conn = psycopg2.connect(scratch_url)
    conn.autocommit = True
    backend = get_backend(scratch_url, migration_table())
    try:
        copied = applied_migrations(conn, migration_table())
        if copied != applied:
            raise RehearsalFailed(f"the scratch database has {copied or 'no'} migrations applied, the target {applied}")
        with backend.lock():
            pending = list(backend.to_apply(read_migrations(str(MIGRATIONS_DIR))))
            if not pending:
                print("rehearsal: nothing to rehearse, every migration is applied on the target", flush=True)
                return []
            found = snapshot(conn)
            _phase(backend, pending, "apply")
            _verify(conn)
            _phase(backend, pending[::-1], "rollback")
            if snapshot(conn) != widened(found, widenings(pending)):
                raise RehearsalFailed("the rollback did not restore the schema it started from")
            print("verify    the rollback restored the schema it started from", flush=True)
            _verify(conn)
            _phase(backend, pending, "apply")
            _verify(conn)
        locks = _probe_locks(conn, pending)
        _print_locks(locks)
        return locks
    finally:
        backend.connection.close()
        conn.close()


def _phase(backend, migrations, direction: str) -> None:
    width = max(len(m.id) for m in migrations)
    for migration in migrations:
        started = time.monotonic()
        try:
            (backend.apply_one if direction == "apply" else backend.rollback_one)(migration)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"{direction:<9} {migration.id:<{width}}  FAILED after {time.monotonic() - started:.2f} s", flush=True)
            raise RehearsalFailed(f"{direction} of {migration.id}: {first}") from None
        print(f"{direction:<9} {migration.id:<{width}}  ok  {time.monotonic() - started:.2f} s", flush=True)


def _verify(conn) -> None:
    problems = verify(conn)
    if problems:
        raise RehearsalFailed(f"verify: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    print(f"verify    ok (applied: {', '.join(applied_migrations(conn, migration_table())) or 'nothing'})", flush=True)


def _probe_locks(conn, pending) -> list[StepLocks]:
    """Roll the pending migrations back and apply them again step by step, as
    their runners do, reading which existing relations each statement locks."""
    found = []
    for migration in pending[::-1]:
        migration.load()
        for step in migration.module.steps[::-1]:
            found += _probe(conn, migration.id, step, "rollback")
    for migration in pending:
        for step in migration.module.steps:
            found += _probe(conn, migration.id, step, "apply")
    return found


def _probe(conn, migration_id: str, step, direction: str) -> list[StepLocks]:
    statements = step.statements(direction)
    if not statements:
        return []
    if isinstance(step, (Index, RetiredIndex)):
        [statement] = statements
        entry = StepLocks(migration_id, direction, label(statement.sql))
        with conn.cursor() as cur:
            cur.execute("SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass(%s)",
                        (step.name,))
            row = cur.fetchone()
        # an index not built yet is built on the table its statement names; one
        # already gone is dropped by nothing, which locks nothing
        table = row[0] if row else indexed_table(statement.sql)
        getattr(step, direction)(conn)
        entry.locks, entry.documented = ({table: CONCURRENT_MODE} if table else {}), True
        return [entry]
    return [_probe_statement(conn, migration_id, direction, statement.sql) for statement in statements]


def _probe_statement(conn, migration_id: str, direction: str, sql: str) -> StepLocks:
    entry = StepLocks(migration_id, direction, label(sql))
    with conn.cursor() as cur:
        # Relations that exist before the statement: the ones the proxy can be
        # using. (Named now: a relation the statement drops has no pg_class row
        # afterwards.) Tables and views only: the locks a statement takes on
        # their indexes follow from these.
        cur.execute("SELECT oid, relname FROM pg_class "
                    "WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p', 'm', 'v', 'f')")
        existing = dict(cur.fetchall())
        cur.execute("BEGIN")
        try:
            cur.execute(f"SET LOCAL lock_timeout = '{lock_timeout_ms()}ms'")
            cur.execute(sql)
            cur.execute("SELECT relation, mode FROM pg_locks "
                        "WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted")
            held = cur.fetchall()
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    for oid, mode in held:
        relation = existing.get(oid)
        if relation is not None and mode in MODES:
            if relation not in entry.locks or MODES.index(mode) > MODES.index(entry.locks[relation]):
                entry.locks[relation] = mode
    return entry


def _print_locks(found: list[StepLocks]) -> None:
    print("locks each statement takes on existing tables and views (read from pg_locks before its commit;\n"
          "CONCURRENTLY: the level PostgreSQL documents):")
    current = None
    for entry in found:
        if (entry.migration, entry.direction) != current:
            current = (entry.migration, entry.direction)
            print(f"  {entry.direction} {entry.migration}")
        print(f"    {entry.statement:<64}  {describe_locks(entry)}")


def describe_locks(entry: StepLocks) -> str:
    if not entry.locks:
        return "none"
    # The strongest first: that is the one that decides what waits.
    ordered = sorted(entry.locks.items(), key=lambda item: (-MODES.index(item[1]), item[0]))
    strongest = ordered[0][1]
    text = ", ".join(f"{mode_name(mode)} on {relation}" for relation, mode in ordered)
    return f"{text} ({EFFECT.get(strongest, 'blocks neither reads nor writes')}" + \
        ("; documented)" if entry.documented else ")")
