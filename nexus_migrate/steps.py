"""How the migrations' SQL runs against a table the proxy writes every second.

A migration file lists its statements, each beside its undoing, through three
kinds of step:

- ddl(apply, rollback): a short transaction of its own, under a lock_timeout.
  A statement that needs a strong lock (ALTER TABLE, COMMENT, DROP, a foreign
  key) waits at most LOCK_TIMEOUT for it, so the proxy's writes queue behind it
  for no longer than that; then it gives up, sleeps and tries again, a bounded
  number of times, and finally stops with a message that says to re-run.
- index(create, drop): CREATE / DROP INDEX CONCURRENTLY, outside any
  transaction, so writes go on while the index builds. An INVALID index that an
  interrupted build left under the same name is dropped and built again; a valid
  index of the same structure under any name counts as present. A build that
  runs for a while prints its phase and progress from
  pg_stat_progress_create_index.
- constraint(add, drop): ALTER TABLE ... ADD CONSTRAINT ... NOT VALID under the
  lock_timeout (a catalog change: new rows are checked at once), then VALIDATE
  CONSTRAINT in a transaction of its own, which reads the whole table under a
  lock that blocks no read or write. A constraint of the same definition under
  any name counts as present; one of our name but another definition is
  replaced by ours in one statement.
- retired_index(drop, replaced_by=...): DROP INDEX CONCURRENTLY of an index an
  earlier migration built, once the index that serves its queries is valid (or
  at once, where no query uses it); the rollback builds it again with that
  migration's own statement.
- check(sql): a condition (a DO block that raises); nothing to undo. After the
  steps it checks what the migration promises; before them it can refuse a
  database that the migration must not touch.
- widen_varchar(table, column, length): raises a VARCHAR's limit where it is
  lower, which rewrites nothing; no undo (a wider column loses nothing).
- backfill(name, find=, update=, keep=, undo=): a rule applied to the rows
  of api_requests that still need it, in short batches by primary key, each
  its own transaction under the lock_timeout (see backfill.py); undo, where
  the rollback must restore what it overwrote, from what keep saved.

migration(*steps) registers them with yoyo as one group, which changes two
things in how yoyo treats a migration that runs outside a transaction:
- when a step fails, yoyo does not run the rollbacks of the steps before it.
  Every step is idempotent, so a re-run completes the migration; an undo would
  throw away finished index builds and could drop a table that held data.
- before any rollback statement runs, a guard refuses a rollback that would drop
  a table holding rows or a column holding values, unless the operator allows
  data loss in so many words (ALLOW_DATA_LOSS). It looks at every migration the
  run rolls back, so a refusal leaves all of them applied.

Settings (environment): NEXUS_LOCK_TIMEOUT_MS (default 100), NEXUS_LOCK_ATTEMPTS
(default 10), NEXUS_PROGRESS_SECONDS (default 5).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass

import psycopg2
import psycopg2.errors

from .schema import constraint_definition, equivalent_constraint, equivalent_index, index_definition, index_state
from .settings import OperatorError

ALLOW_DATA_LOSS = "NEXUS_ALLOW_DATA_LOSS"
ALLOW_DATA_LOSS_OPTION = "--allow-data-loss"  # scripts/migrate rollback's spelling of it


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise OperatorError(f"{name}={value!r} is not a number") from None


def lock_timeout_ms() -> int:
    return int(_setting("NEXUS_LOCK_TIMEOUT_MS", 100))


def lock_attempts() -> int:
    return max(1, int(_setting("NEXUS_LOCK_ATTEMPTS", 10)))


def backoff_seconds(attempt: int) -> float:
    """Sleep after the attempt-th failure to get a lock: 0.2 s doubling to 5 s,
    so the default ten attempts span about half a minute."""
    return min(0.2 * 2 ** (attempt - 1), 5.0)


class LockNotGranted(OperatorError):
    """A ddl step never got its lock within the bounded attempts."""


class DataLossRefused(OperatorError):
    """A rollback would drop stored proxy traffic and the operator did not allow it."""


def _first_line(sql: str) -> str:
    return " ".join(sql.split())[:80]


@dataclass(frozen=True)
class Statement:
    """One statement as a step sends it: in a transaction of its own under the
    lock_timeout (and retried), or on its own outside any transaction."""

    sql: str
    in_transaction: bool


def _statements(sqls, in_transaction: bool) -> list[Statement]:
    return [Statement(sql, in_transaction) for sql in sqls if sql]


@dataclass
class Ddl:
    apply_sql: str | None
    rollback_sql: str | None

    def statements(self, direction: str) -> list[Statement]:
        return _statements([self.apply_sql if direction == "apply" else self.rollback_sql], True)

    def blocking_statements(self) -> list[str]:
        """The apply as the original scripts ran it, inside one transaction."""
        return [self.apply_sql] if self.apply_sql else []

    def apply(self, conn) -> None:
        if self.apply_sql:
            _run_with_lock_retries(conn, self.apply_sql)

    def rollback(self, conn) -> None:
        if self.rollback_sql:
            _run_with_lock_retries(conn, self.rollback_sql)


def _set_lock_timeout(timeout_ms: int) -> str:
    return f"SET LOCAL lock_timeout = '{timeout_ms}ms'"


# Sessions that have held a lock on a relation the statement names for longer
# than a proxy's write takes: an autovacuum, a long report, a transaction left
# open. Asking for the lock while one is there would only queue the proxy's
# writes behind the request until lock_timeout, attempt after attempt.
# The last column: an autovacuum that may be cancelled (not one that keeps the
# table from transaction ID wraparound).
LONG_HOLDERS = """
    SELECT DISTINCT a.pid, CASE WHEN a.backend_type = 'client backend' THEN coalesce(nullif(a.application_name, ''),
                                    'a session') ELSE a.backend_type END, c.relname,
           a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%%(to prevent wraparound)%%'
      FROM pg_locks l
      JOIN pg_class c ON c.oid = l.relation
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.granted AND l.pid <> pg_backend_pid()
       AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)
       AND a.xact_start < now() - make_interval(secs => %s)
     ORDER BY 1"""


def _long_holders(cur, sql: str, timeout_ms: int) -> list[tuple]:
    cur.execute(LONG_HOLDERS, (sorted(set(re.findall(r"\w+", sql))), timeout_ms / 1000))
    return cur.fetchall()


def _cancelled(cur, pid: int) -> bool:
    """Cancel an autovacuum, as the server itself does to one that blocks a
    lock request for deadlock_timeout (a request we never let wait that
    long); it runs again later. Needs superuser or, on 18, a member of
    pg_signal_autovacuum_worker: without that, False."""
    try:
        cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
        return cur.fetchone()[0]
    except psycopg2.errors.InsufficientPrivilege:
        return False


def _await_long_holders(cur, sql: str, timeout_ms: int, patience: float, told: set[int]) -> None:
    """Wait, without asking for any lock, up to patience seconds for the long
    holders of the statement's relations to be gone, cancelling an autovacuum
    where allowed; say once for each (told: the pids said so far) what it does."""
    deadline = time.monotonic() + patience
    while holders := _long_holders(cur, sql, timeout_ms):
        for pid, who, relation, autovacuum in holders:
            if pid in told:
                continue
            told.add(pid)
            if autovacuum and _cancelled(cur, pid):
                print(f"«{_first_line(sql)}»: cancelled the autovacuum of {relation} (pid {pid}) that held up its "
                      "lock, as PostgreSQL does for any statement kept waiting by one; it will run again", flush=True)
            else:
                print(f"«{_first_line(sql)}»: waiting for {who} (pid {pid}) to finish with {relation} before asking "
                      "for its lock", flush=True)
        if time.monotonic() >= deadline:
            return
        time.sleep(min(0.1, patience))


def in_transactions_with_lock_retries(conn, work, *, what: str, wait_for: str | None = None,
                                      nothing_changed: str = "nothing of that statement was changed"):
    """work(cursor) inside BEGIN ... COMMIT under the lock_timeout, tried again
    with backoff while a lock is not had in time; its result once it commits.
    Before each attempt, while a session has long held a lock on a relation
    that wait_for (SQL) names, it waits without asking for any (an autovacuum
    it cancels where allowed). After the last attempt, one line:
    LockNotGranted saying what it could not get (and nothing_changed)."""
    timeout, attempts = lock_timeout_ms(), lock_attempts()
    told: set[int] = set()
    with conn.cursor() as cur:
        for attempt in range(1, attempts + 1):
            if wait_for:
                _await_long_holders(cur, wait_for, timeout, backoff_seconds(attempt), told)
            try:
                cur.execute("BEGIN")
                cur.execute(_set_lock_timeout(timeout))
                result = work(cur)
                cur.execute("COMMIT")
                return result
            except psycopg2.errors.LockNotAvailable:
                cur.execute("ROLLBACK")
                if attempt < attempts:
                    time.sleep(backoff_seconds(attempt))
            except BaseException:
                if not conn.closed:
                    cur.execute("ROLLBACK")
                raise
    raise LockNotGranted(
        f"gave up after {attempts} attempts to get {what}, "
        f"each waiting {timeout} ms: another session holds a conflicting lock "
        f"(see pg_locks and pg_stat_activity); {nothing_changed}, "
        "run the same command again once it is gone"
    )


def _run_with_lock_retries(conn, sql: str) -> None:
    in_transactions_with_lock_retries(conn, lambda cur: cur.execute(sql), what=f"the lock for «{_first_line(sql)}»",
                                      wait_for=sql)


INDEX_NAME = re.compile(r"\bINDEX\s+CONCURRENTLY\s+IF\s+(?:NOT\s+)?EXISTS\s+(\w+)", re.I)


# Every index step of the migrations by name, as the migration files create
# them: a retired index is built again on rollback with its own statement.
_INDEX_STEPS: dict[str, Index] = {}


@dataclass
class Index:
    apply_sql: str
    rollback_sql: str

    def __post_init__(self):
        for sql in (self.apply_sql, self.rollback_sql):
            match = INDEX_NAME.search(sql)
            if not match:
                raise ValueError(f"index steps build and drop CONCURRENTLY and IF [NOT] EXISTS: {sql!r}")
        self.name = match.group(1)
        _INDEX_STEPS[self.name] = self

    def statements(self, direction: str) -> list[Statement]:
        return _statements([self.apply_sql if direction == "apply" else self.rollback_sql], False)

    @property
    def blocking_sql(self) -> str:
        """The same build as one plain CREATE INDEX, which blocks writes: the
        way the original scripts built their indexes (see scripts/benchmark)."""
        return _without_concurrently(self.apply_sql)

    def blocking_statements(self) -> list[str]:
        return [self.blocking_sql]

    def apply(self, conn) -> None:
        with conn.cursor() as cur:
            if index_state(cur, self.name) == "invalid":
                print(f"{self.name}: dropping the INVALID index an interrupted build left", flush=True)
                cur.execute(self.rollback_sql)
            same = equivalent_index(cur, self.name)
            if same and same != self.name:
                print(f"{self.name}: not built, {same} is the same index", flush=True)
            if same:
                return
            if index_state(cur, self.name) == "valid":  # IF NOT EXISTS would keep it
                raise OperatorError(
                    f"an index named {self.name} exists, but not the one this migration builds "
                    f"({index_definition(cur, self.name)}): rename it (ALTER INDEX {self.name} RENAME TO ...) "
                    "or drop it, then apply again")
            try:
                # If this client dies (kill -9, a dropped SSH session), the
                # server stops the build within a second instead of finishing
                # it unattended; the next run repairs what it left.
                cur.execute("SET client_connection_check_interval = '1s'")
            except psycopg2.Error:
                pass  # a platform without the check: the build just runs on
            try:
                with _Progress(conn, self.name):
                    cur.execute(self.apply_sql)
            except BaseException:
                # A failed concurrent build leaves an INVALID index behind.
                if not conn.closed:
                    cur.execute(self.rollback_sql)
                raise
            if index_state(cur, self.name) != "valid":
                raise psycopg2.DataError(f"index {self.name} is not valid after its build")

    def rollback(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(self.rollback_sql)


class _Progress:
    """While an index builds, a line every NEXUS_PROGRESS_SECONDS with the phase
    and how far it is, read from pg_stat_progress_create_index on a connection
    of its own (the building one is busy)."""

    QUERY = """
        SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total,
               lockers_done, lockers_total
          FROM pg_stat_progress_create_index WHERE pid = %s"""

    def __init__(self, conn, name: str):
        self.name, self.pid = name, conn.get_backend_pid()
        self.params = {**conn.get_dsn_parameters(), "password": conn.info.password}
        self.interval = _setting("NEXUS_PROGRESS_SECONDS", 5)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._report, daemon=True)

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _report(self) -> None:
        watcher = None
        try:
            while not self.done.wait(self.interval):
                if watcher is None:
                    watcher = psycopg2.connect(**{k: v for k, v in self.params.items() if v})
                    watcher.autocommit = True
                with watcher.cursor() as cur:
                    cur.execute(self.QUERY, (self.pid,))
                    row = cur.fetchone()
                if row:
                    print(f"{self.name}: {_describe_progress(*row)} "
                          f"({time.monotonic() - self.started:.0f} s)", flush=True)
        except psycopg2.Error:
            pass  # progress is a courtesy; the build itself reports its own failure
        finally:
            if watcher is not None:
                watcher.close()


def _describe_progress(phase, blocks_done, blocks_total, tuples_done, tuples_total,
                       lockers_done, lockers_total) -> str:
    for done, total, unit in ((blocks_done, blocks_total, "blocks"), (tuples_done, tuples_total, "rows"),
                              (lockers_done, lockers_total, "transactions")):
        if total:
            return f"{phase}, {100 * done // total}% ({done} of {total} {unit})"
    return phase


def _without_concurrently(sql: str) -> str:
    return re.sub(r"\s+CONCURRENTLY", "", sql, count=1)


def _index_step(name: str) -> Index:
    """The index step that builds name, from the migration files."""
    if name not in _INDEX_STEPS:
        from yoyo import read_migrations

        from . import MIGRATIONS_DIR

        for migration in read_migrations(str(MIGRATIONS_DIR)):
            migration.load()
    return _INDEX_STEPS[name]


DROPPED_INDEX = re.compile(r"^\s*DROP\s+INDEX\s+CONCURRENTLY\s+IF\s+EXISTS\s+(\w+)\s*$", re.I)


@dataclass
class RetiredIndex:
    """An index an earlier migration built and a later one finds redundant:
    another index (replaced_by) serves its queries, or no query uses it
    (replaced_by None)."""

    apply_sql: str
    replaced_by: str | None

    def __post_init__(self):
        match = DROPPED_INDEX.match(self.apply_sql)
        if not match:
            raise ValueError(f"a retired index is dropped CONCURRENTLY IF EXISTS: {self.apply_sql!r}")
        self.name = match.group(1)

    @property
    def rollback_sql(self) -> str:
        return _index_step(self.name).apply_sql

    def statements(self, direction: str) -> list[Statement]:
        return _statements([self.apply_sql if direction == "apply" else self.rollback_sql], False)

    def blocking_statements(self) -> list[str]:
        return [_without_concurrently(self.apply_sql)]

    def apply(self, conn) -> None:
        with conn.cursor() as cur:
            if self.replaced_by and equivalent_index(cur, self.replaced_by) is None:
                raise OperatorError(
                    f"{self.name} is not dropped: {self.replaced_by}, which serves its queries, is missing or "
                    "INVALID; apply again once it is built")
            cur.execute(self.apply_sql)

    def rollback(self, conn) -> None:
        _index_step(self.name).apply(conn)


ADDED_CONSTRAINT = re.compile(
    r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+CONSTRAINT\s+(\w+)\s+.+\s+NOT\s+VALID\s*$", re.I | re.S)


@dataclass
class Constraint:
    apply_sql: str
    rollback_sql: str

    def __post_init__(self):
        match = ADDED_CONSTRAINT.match(self.apply_sql)
        if not match:
            raise ValueError(f"constraint steps add a constraint NOT VALID: {self.apply_sql!r}")
        self.table, self.name = match.groups()
        if not re.search(rf"\bDROP\s+CONSTRAINT\s+IF\s+EXISTS\s+{self.name}\b", self.rollback_sql, re.I):
            raise ValueError(f"the rollback of {self.name} drops it IF EXISTS: {self.rollback_sql!r}")

    def _validate_sql(self, name: str) -> str:
        return f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {name}"

    def statements(self, direction: str) -> list[Statement]:
        if direction == "apply":
            return _statements([self.apply_sql, self._validate_sql(self.name)], True)
        return _statements([self.rollback_sql], True)

    def blocking_statements(self) -> list[str]:
        """Added and validated at once, as the original scripts did: the whole
        table is read under a lock that blocks writes."""
        return [re.sub(r"\s+NOT\s+VALID\s*$", "", self.apply_sql, flags=re.I)]

    def apply(self, conn) -> None:
        with conn.cursor() as cur:
            same = equivalent_constraint(cur, self.name)
            if same:
                other, valid = same
                if other != self.name:
                    print(f"{self.name}: not added, {other} is the same constraint", flush=True)
                if not valid:
                    self._validate(conn, other)
                return
            existing = constraint_definition(cur, self.table, self.name)
        if existing:
            # Ours under this name, in an older definition: dropped and added
            # in one statement, so no row goes unchecked in between.
            print(f"{self.name}: replacing «{existing}» with this migration's definition", flush=True)
            _run_with_lock_retries(conn, re.sub(r"\bADD\s+CONSTRAINT\b", f"DROP CONSTRAINT {self.name}, ADD CONSTRAINT",
                                                self.apply_sql, count=1, flags=re.I))
        else:
            _run_with_lock_retries(conn, self.apply_sql)
        self._validate(conn, self.name)

    def _validate(self, conn, name: str) -> None:
        try:
            _run_with_lock_retries(conn, self._validate_sql(name))
        except (psycopg2.errors.CheckViolation, psycopg2.errors.ForeignKeyViolation) as exc:
            raise OperatorError(
                f"{name} checks new rows of {self.table} already, but existing rows break it "
                f"({_first_line(exc.pgerror or str(exc))}): correct those rows, then apply again") from None

    def rollback(self, conn) -> None:
        _run_with_lock_retries(conn, self.rollback_sql)


@dataclass
class Check:
    apply_sql: str
    rollback_sql = None

    def statements(self, direction: str) -> list[Statement]:
        return _statements([self.apply_sql if direction == "apply" else None], False)

    def blocking_statements(self) -> list[str]:
        return [self.apply_sql]

    def apply(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(self.apply_sql)

    def rollback(self, conn) -> None:
        pass


def ddl(apply: str | None, rollback: str | None) -> Ddl:
    return Ddl(apply, rollback)


def index(create: str, drop: str) -> Index:
    return Index(create, drop)


def check(sql: str) -> Check:
    return Check(sql)


def constraint(add: str, drop: str) -> Constraint:
    return Constraint(add, drop)


def retired_index(drop: str, *, replaced_by: str | None) -> RetiredIndex:
    return RetiredIndex(drop, replaced_by)


def backfill(name: str, *, find: str, update: str, keep: str | None = None, groups: bool = False,
             undo=None, params=dict, unless=None):
    """A Backfill step (backfill.py, imported here late: it builds on this module)."""
    from .backfill import Backfill, Rule

    return Backfill(name, Rule(find, update, keep, groups=groups), undo, params, unless)


def backfill_undo(*, walk: str, find: str, update: str, keep: str | None = None):
    """The rollback of a backfill: walks the table where its keep saved what
    it overwrote, puts it back and (keep) deletes what it put back. The rows
    of a group go back together."""
    from .backfill import Rule

    return Rule(find, update, keep, walk=walk, groups=True)


@dataclass
class Widening(Ddl):
    """A ddl step that raises table.column's VARCHAR limit to length where it is
    lower. That rewrites no row and rebuilds no index: the ALTER holds its lock
    only for a catalog update, and where the column is wide enough (atttypmod
    is the limit + 4) or is text, it takes no lock at all. No undo: a wider
    column loses nothing, and narrowing it would rewrite the table."""

    table: str = ""
    column: str = ""
    length: int = 0


def widenings(migrations) -> dict[tuple[str, str], int]:
    """(table, column) -> VARCHAR limit, for every column the migrations widen."""
    widths = {}
    for migration in migrations:
        migration.load()
        widths.update({(s.table, s.column): s.length for s in migration.module.steps if isinstance(s, Widening)})
    return widths


def widen_varchar(table: str, column: str, length: int) -> Widening:
    return Widening(f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_attribute
                        WHERE attrelid = '{table}'::regclass AND attname = '{column}'
                          AND atttypid = 'varchar'::regtype AND atttypmod > 0 AND atttypmod - 4 < {length}) THEN
                ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR({length});
            END IF;
        END
        $$
        """, None, table, column, length)


def rendered_sql(step, direction: str) -> str:
    """The SQL that step sends to the server in direction ('apply' or
    'rollback'), as it sends it: what runs in a transaction inside its own
    BEGIN ... COMMIT under the lock_timeout in force; what runs outside one as a
    bare statement. Empty when the step runs nothing that way. (Not shown: the
    retries after a lock timeout, and the catalog look-ups a step makes first.)"""
    rendered = []
    for statement in step.statements(direction):
        sql = statement.sql.lstrip("\r\n").rstrip().rstrip(";").rstrip()
        if statement.in_transaction:
            rendered.append(f"BEGIN;\n{_set_lock_timeout(lock_timeout_ms())};\n{sql};\nCOMMIT;")
        else:
            rendered.append(f"{sql};")
    return "\n".join(rendered)


DROPPED_TABLE = re.compile(r"\bDROP\s+TABLE\s+IF\s+EXISTS\s+(\w+)", re.I)
ALTERED_TABLE = re.compile(r"\bALTER\s+TABLE\s+(\w+)", re.I)
DROPPED_COLUMN = re.compile(r"\bDROP\s+COLUMN\s+IF\s+EXISTS\s+(\w+)", re.I)


def destroys(steps) -> tuple[list[str], list[tuple[str, str]]]:
    """The tables and (table, column) pairs that the rollbacks of steps drop.
    Not a table of kept values that a backfill's rollback puts back before it
    is dropped: its rows are restored, not lost."""
    tables, columns = [], []
    restored = {getattr(s, "restores", None) for s in steps}
    for s in steps:
        sql = s.rollback_sql or ""
        tables += DROPPED_TABLE.findall(sql)
        altered = ALTERED_TABLE.search(sql)
        if altered:
            columns += [(altered.group(1), c) for c in DROPPED_COLUMN.findall(sql)]
    return [t for t in tables if t not in restored], [(t, c) for t, c in columns if t not in tables]


def data_at_risk(conn, steps) -> list[str]:
    """What of the stored data the rollbacks of steps would drop, in words."""
    tables, columns = destroys(steps)
    found = []
    with conn.cursor() as cur:
        for table in tables:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if cur.fetchone()[0]:
                cur.execute(f"SELECT EXISTS (SELECT FROM {table})")
                if cur.fetchone()[0]:
                    found.append(f"table {table} (it holds rows)")
        for table, column in columns:
            # A value that only repeats the column's default is no information.
            cur.execute("""
                SELECT pg_get_expr(d.adbin, d.adrelid)
                  FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
                 WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped""",
                        (table, column))
            row = cur.fetchone()
            if row is None:
                continue
            cur.execute(f"SELECT EXISTS (SELECT FROM {table} WHERE {column} IS DISTINCT FROM {row[0] or 'NULL'})")
            if cur.fetchone()[0]:
                found.append(f"column {table}.{column} (it holds values)")
    return found


def data_loss_allowed() -> bool:
    return os.environ.get(ALLOW_DATA_LOSS, "").strip().lower() in {"1", "yes", "true"}


def _steps_of_this_rollback(own_steps) -> list:
    """The steps of every migration that this yoyo run rolls back.

    yoyo rolls back a list of migrations one after the other and reaches a
    migration's guard only when that migration's turn comes: `rollback --all`
    would have undone 002 and 001 before 000's guard refused. So every guard
    checks the whole list, and the first one refuses before anything changed.
    yoyo (pinned) has no hook for this; the list is read from its
    rollback_migrations() frame, and without one a guard checks its own steps.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "rollback_migrations" and "migrations" in frame.f_locals:
            modules = [m.module for m in frame.f_locals["migrations"] if getattr(m, "module", None)]
            return [s for module in modules for s in getattr(module, "steps", ())]
        frame = frame.f_back
    return list(own_steps)


class _DataLossGuard:
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, conn) -> None:
        if data_loss_allowed():
            return
        at_risk = data_at_risk(conn, _steps_of_this_rollback(self.steps))
        if at_risk:
            raise DataLossRefused(
                f"refusing to roll back: it would drop {', '.join(at_risk)}; nothing was changed. "
                f"To drop them anyway, back up first, then set {ALLOW_DATA_LOSS}=1 "
                f"(scripts/migrate rollback {ALLOW_DATA_LOSS_OPTION})"
            )


def migration(*steps) -> list:
    """Register steps with yoyo, in order, as one group guarded against data loss."""
    from yoyo import group, step

    group([step(s.apply, s.rollback) for s in steps] + [step(None, _DataLossGuard(steps))])
    return list(steps)
