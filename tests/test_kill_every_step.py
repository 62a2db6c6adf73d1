"""kill -9 of an apply or a rollback, then break-lock and the same command
again: the catalog and every row of every table equal those of an
uninterrupted run, and no INVALID index is left. Two ways to kill:

Before each step, every one in turn: the run kills itself just before the
step asked for (tests/kill_switch/sitecustomize.py counts yoyo's steps), so
every step boundary of every migration is tried, both ways.

In flight, by watching the server only: a gate session holds SHARE on every
table of the schema (it conflicts with every lock a step asks for on a
table: ALTER, COMMENT, CREATE INDEX and DROP INDEX CONCURRENTLY, VALIDATE, a
batch's UPDATE). The run queues behind it at its next step, and
pg_stat_activity shows which statement of which step waits. To let that step
through and stop the run at the next one, a new gate asks for the same lock
while the step waits, so it queues behind the step, and the old gate lets
go. The middle of an index build is its wait for an old snapshot; of an
index drop, its wait for a reader of the table; of a validation, the
VALIDATE that waits after the constraint was added NOT VALID; of a backfill,
its third batch (batches of one page, on history stored one row a page). A
step that creates an object instead of changing a table (a table, a type, a
function) is held by SHARE on the catalogs it writes first. Which statement
the gate catches first can vary between runs; the kills before each step
are the ones that cover every step.

The full matrices (every migration both ways) run under the kill_matrix
marker (`scripts/test -m kill_matrix`); the default run kills a sample."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import uuid

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot
from nexus_migrate.steps import Backfill, Check, Widening
from nexus_migrate.steps.autovacuum import ANALYZE
from nexus_migrate.steps.sql_tree import dropped_index
from nexus_migrate.steps.statement import labelled

from .conftest import run_script, wait_until
from .history import history, store
from .migrations import ALL, MIGRATIONS
from .rows import fingerprint
from .test_backfill import UP_TO_002, add_later_columns, write_map
from .test_busy_table import invalid_indexes
from .traffic import WAITING_BUILD, hold_old_snapshot, hold_read_lock, start_migrate

# Batches of one page without pauses (the gate paces them); a lock request
# waits in the queue behind the gate instead of timing out and retrying.
STEPPED = {"NEXUS_BATCH_ROWS": "1", "NEXUS_BATCH_SECONDS": "0.0001", "NEXUS_BATCH_PAUSE_MS": "0",
           "NEXUS_LOCK_ATTEMPTS": "1000", "NEXUS_LOCK_TIMEOUT_MS": "60000"}
ALLOWED = {"NEXUS_ALLOW_DATA_LOSS": "1"}  # rollbacks drop what the history holds: asked for here
BACKFILL_BATCHES_KILLED = (1, 3)  # its first batch (the step's start) and one half-way

# The catalogs a step writes first when it creates an object rather than
# changing a table that exists (CREATE TABLE, TYPE, FUNCTION; a COMMENT):
# SHARE on them holds such a step at its start too. (Its reads of them take
# ACCESS SHARE, which SHARE lets through; the suite connects as a superuser,
# who may lock a catalog.)
CATALOGS = ("pg_class", "pg_type", "pg_proc", "pg_depend", "pg_description")
# The tables (and materialized views) of the schema, yoyo's own left out (the run records itself there).
TABLES = """SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace
                AND relkind IN %s AND relname NOT LIKE '%%yoyo%%' ORDER BY relname"""
# The run's statement that waits for a lock, and the table it waits on.
RUN_WAITING = """SELECT a.pid, a.query, l.relation::regclass::text FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                  WHERE NOT l.granted AND a.application_name LIKE 'scripts/migrate%%'"""
INDEX_STATEMENTS = ("CREATE INDEX", "CREATE UNIQUE INDEX", "DROP INDEX")
RUN_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'scripts/migrate%%'"

HISTORY = history()  # one history for the killed runs and their uninterrupted references


def command(migration: str, direction: str) -> list[str]:
    return [direction, "--batch", "-r", migration]


def migrate(url: str, *args: str, **env: str) -> None:
    result = run_script(PROJECT_ROOT, "migrate", *args, DATABASE_URL=url, **env)
    assert result.returncode == 0, result.stderr


def prepare(url: str, migration: str, direction: str, mapping: str) -> None:
    """Every migration applied to the proxy's history (stored at 002, one row a
    page), then rolled back to where the command starts from."""
    migrate(url, "apply", "--batch", "-r", UP_TO_002)
    with connect(url) as conn:
        add_later_columns(conn)
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE api_requests SET (fillfactor = 10)")
        store(conn, HISTORY)
        with conn.cursor() as cur:  # the insert's time, as the proxy stored it: the same in every database
            cur.execute("UPDATE api_requests SET created_at = timestamp")
    migrate(url, "apply", "--batch", NEXUS_ACCOUNT_MAP=mapping)
    after = ALL.index(migration) + (0 if direction == "apply" else 1)
    if after < len(ALL):
        migrate(url, "rollback", "--batch", "-r", ALL[after], **ALLOWED)


class connect:
    """An autocommit connection, closed on leaving."""

    def __init__(self, url: str):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def outcome(conn) -> dict:
    """What a user would check: the migrations recorded, the catalog, and an
    md5 of every row (all columns) of every table and materialized view."""
    rows = {name: found for name, found in fingerprint(conn, ("r", "m")).items() if "yoyo" not in name}
    return {"applied": applied_migrations(conn), "catalog": snapshot(conn), "rows": rows}


class Gate:
    """A session holding SHARE on the tables (first) the run waits on and
    (then) every other it can get at once."""

    def __init__(self, url: str, first: str | None = None, nowait: bool = False, until=None):
        self.conn = psycopg2.connect(url)
        self.granted, self.closing = threading.Event(), False
        self.others_held = threading.Event()  # (nowait) the tables but first: the old gate may let go
        self.missing: list[str] = []  # tables the run held when the gate asked
        self.pid = self.conn.get_backend_pid()
        self.thread = threading.Thread(target=self._take, args=(first, nowait, until), daemon=True)
        self.thread.start()

    def _take(self, first, nowait, until):
        try:
            with self.conn.cursor() as cur:
                cur.execute(TABLES, (("r",),))  # a materialized view cannot be locked
                tables = [f'"{t}"' for [t] in cur.fetchall() if t != first]
                if nowait:  # the other tables at once, so that the step after the index step waits
                    tables = self._without_waiting(cur, tables)
                self.others_held.set()
                if first:
                    self._first(cur, first, nowait, until)
                # the catalogs only now: an index step writes them until it is done
                self.missing = self._without_waiting(cur, tables + [f"pg_catalog.{c}" for c in CATALOGS])
        except psycopg2.Error:
            if not self.closing:  # a gate closed while it waits has nothing left to take
                raise
        self.others_held.set()
        self.granted.set()

    @staticmethod
    def _first(cur, first: str, nowait: bool, until) -> None:
        """SHARE on first: queued behind the step that waits for it, or (an
        index step, which waits for every transaction that asks for a lock on
        its table) asked for without waiting, again at once, until had or
        until() says stop."""
        if not nowait:
            cur.execute("SAVEPOINT f")
            try:
                cur.execute(f"LOCK TABLE {first} IN SHARE MODE")
                cur.execute("RELEASE SAVEPOINT f")
            except psycopg2.errors.UndefinedTable:  # the step it queued behind dropped it
                cur.execute("ROLLBACK TO SAVEPOINT f")
            return
        for attempt in itertools.count(1):
            cur.execute("SAVEPOINT f")
            try:
                cur.execute(f"LOCK TABLE {first} IN SHARE MODE NOWAIT")
                cur.execute("RELEASE SAVEPOINT f")
                return
            except psycopg2.errors.UndefinedTable:  # the run dropped it meanwhile
                cur.execute("ROLLBACK TO SAVEPOINT f")
                return
            except psycopg2.errors.LockNotAvailable:
                cur.execute("ROLLBACK TO SAVEPOINT f")
                if until is None or (attempt % 50 == 0 and until()):
                    return

    def _without_waiting(self, cur, tables: list[str]) -> list[str]:
        """SHARE on each of tables that no one else holds now; those not had."""
        missing = []
        for table in tables:
            cur.execute("SAVEPOINT s")
            try:  # NOWAIT: never wait for the run while it waits for us (a deadlock)
                cur.execute(f"LOCK TABLE {table} IN SHARE MODE NOWAIT")
                cur.execute("RELEASE SAVEPOINT s")
            except psycopg2.errors.LockNotAvailable:
                cur.execute("ROLLBACK TO SAVEPOINT s")
                missing.append(table)
            except psycopg2.errors.UndefinedTable:  # the run dropped it meanwhile
                cur.execute("ROLLBACK TO SAVEPOINT s")
        return missing

    def top_up(self):
        """Ask again for the tables the run held when the gate first asked (a
        backfill's batches hold a second table between two waits for the
        first): without them, the step after the backfill would pass ungated."""
        if self.missing and self.granted.is_set() and not self.thread.is_alive() and not self.closing:
            with self.conn.cursor() as cur:
                self.missing = self._without_waiting(cur, self.missing)

    def close(self):
        self.closing = True
        self.conn.close()


def which_step(steps, direction: str, query: str) -> tuple[int, int | str] | None:
    """(step index, statement index, 'batch' or 'analyze') of the statement the run sent;
    None for yoyo's own bookkeeping (its lock and log tables), which the
    catalog gate holds too."""
    said = " ".join(query.split())
    if "yoyo" in said.lower():
        return None
    for i, step in enumerate(steps):
        if isinstance(step, Backfill) and said.startswith(f"-- {step.name}"):
            return i, "analyze" if said.startswith(" ".join(labelled(step.name, ANALYZE, "").split())) else "batch"
        for k, statement in enumerate(step.statements(direction)):
            if said.startswith(" ".join(statement.sql.split())[:60]):
                return i, k
    raise AssertionError(f"a statement of no step waits: {said[:200]}")


def run_ended(conn) -> bool:
    """(Called from a gate's thread: a cursor of its own on conn.)"""
    with conn.cursor() as cur:
        cur.execute(RUN_SESSIONS)
        return cur.fetchone()[0] == 0


def step_through(url: str, run, steps, direction: str, target: int, look):
    """Let the run through its kill points before the target-th; at that one,
    kill it (kill -9 of its process group). Returns the point killed, or None
    when the run finished before reaching it. points: the labels passed."""
    gate = Gate(url)
    gate.granted.wait(30)
    holders = [gate]
    point, passed, batches = None, [], {}
    try:
        while point is None:
            look.execute(RUN_WAITING)
            waiting = look.fetchone()
            if waiting is None:
                if run.poll() is not None:
                    return None, passed
                gate.top_up()
                continue
            pid, query, table = waiting
            said = " ".join(query.split())
            found = which_step(steps, direction, query)
            if found is None:  # not a step: through, and no kill point
                gate = let_through(url, look, gate, pid, table, False)
                holders.append(gate)
                continue
            step, statement = found
            if statement == "batch":
                batches[step] = batches.get(step, 0) + 1
                labels = [f"{step} batch {batches[step]}"] if batches[step] in BACKFILL_BATCHES_KILLED else []
            elif statement == "analyze":
                labels = [f"{step} analyze"]
            elif said.startswith(INDEX_STATEMENTS):
                labels = [f"{step} start", f"{step} middle"]
            else:
                labels = [f"{step} start" if statement == 0 else f"{step} statement {statement}"]
            for label in labels:
                if len(passed) == target:
                    point = label
                    break
                passed.append(label)
            if point and point.endswith("middle"):
                holders.append(into_the_middle(url, look, gate, pid, said))
            elif point is None:
                gate = let_through(url, look, gate, pid, table, said.startswith(INDEX_STATEMENTS))
                holders.append(gate)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        for holder in holders:  # a statement waiting for a lock notices its client gone only once it has it
            holder.close()
        wait_until(lambda: look.execute(RUN_SESSIONS) or look.fetchone()[0] == 0, "the killed run's sessions to end")
        return point, passed
    finally:
        for holder in holders:
            holder.close()


def let_through(url: str, look, gate: Gate, pid: int, table: str, index_step: bool) -> Gate:
    """A new gate queued behind the waiting step; the old one lets go. An
    index build or drop waits for every transaction that asks for a lock on
    its table (a queued gate would deadlock with it): for those, the new gate
    asks without waiting, again and again, until the step is done. It holds
    the other tables before the old gate lets go: a quick build or drop
    would otherwise let the step after it through before the gate had them
    (and that step's start would never be seen)."""
    if not index_step:
        following = Gate(url, first=table)
        wait_until(lambda: look.execute("SELECT pid FROM pg_locks WHERE pid = %s AND NOT granted",
                                        (following.pid,)) or look.fetchone(), "the next gate to queue behind the step")
        gate.close()
        following.granted.wait(120)
        return following
    following = Gate(url, first=table, nowait=True, until=lambda: run_ended(look.connection))
    following.others_held.wait(30)
    gate.close()
    following.granted.wait(120)
    return following


def into_the_middle(url: str, look, gate: Gate, pid: int, said: str):
    """The index build or drop let past the gate into its wait for an old
    snapshot (a build) or for a reader of the table (a drop)."""
    building = not said.startswith("DROP")
    if building:
        holder = hold_old_snapshot(url)
    else:  # a reader of the index's own table (hourly_stats' indexes are on the view)
        look.execute("SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass(%s)",
                     (dropped_index(said),))
        holder = hold_read_lock(url, look.fetchone()[0])
    gate.close()
    if building:
        wait_until(lambda: look.execute(f"{WAITING_BUILD} AND pid = {int(pid)}") or look.fetchone(),
                   "the build to wait for old snapshots")
    else:  # marked invalid under its SHARE UPDATE EXCLUSIVE lock, it waits for the reader
        wait_until(lambda: look.execute("SELECT pid FROM pg_locks WHERE pid = %s AND granted AND "
                                        "mode = 'ShareUpdateExclusiveLock'", (pid,)) or look.fetchone(),
                   "the drop to wait for the reader")
    return holder


class Database:
    """A database of its own on the server (a copy of template, if given),
    dropped on leaving."""

    def __init__(self, server, template: str | None = None):
        self.server, self.name, self.template = server, f"test_{uuid.uuid4().hex[:12]}", template

    def __enter__(self) -> str:
        if self.template is None:
            return self.server.ensure_database(self.name)
        with connect(self.server.url()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
        return self.server.url(self.name)

    def __exit__(self, *exc):
        self.server.drop_database(self.name)


_REFERENCES: dict[tuple, dict] = {}


def uninterrupted(server, migration: str, direction: str, mapping: str) -> dict:
    key = (server.binaries.major, migration, direction)
    if key not in _REFERENCES:
        with Database(server) as url:
            prepare(url, migration, direction, mapping)
            migrate(url, *command(migration, direction), NEXUS_ACCOUNT_MAP=mapping, **ALLOWED)
            with connect(url) as conn:
                _REFERENCES[key] = outcome(conn)
    return _REFERENCES[key]


def run_again_and_compare(url: str, conn, args: list[str], mapping: str, want: dict, where: str) -> None:
    """After a kill (where: which): nothing recorded; break-lock (the killed
    run could not remove yoyo's lock row) and the same command again give the
    uninterrupted run's outcome, and no INVALID index."""
    assert applied_migrations(conn) != want["applied"], f"{where}: the killed run was recorded"
    migrate(url, "break-lock")
    migrate(url, *args, NEXUS_ACCOUNT_MAP=mapping, **ALLOWED)
    got = outcome(conn)
    assert invalid_indexes(conn) == 0, where
    for part in ("applied", "catalog", "rows"):
        assert got[part] == want[part], f"{where}: {part}"


def kill_points(server, migration: str, direction: str, mapping: str, only=None) -> list[str]:
    """Each kill point of the command in turn (or those numbered in only), on
    a database of its own: killed there, then break-lock and the same command
    again, compared with the uninterrupted run. Returns the points killed."""
    [m] = [m for m in MIGRATIONS if m.id == migration]
    m.load()
    want = uninterrupted(server, migration, direction, mapping)
    killed, target = [], 0
    while only is None or target <= max(only):
        if only is not None and target not in only:
            target += 1
            continue
        with Database(server) as url:
            prepare(url, migration, direction, mapping)
            run = start_migrate(*command(migration, direction), DATABASE_URL=url, NEXUS_ACCOUNT_MAP=mapping,
                                **STEPPED, **ALLOWED)
            with connect(url) as conn, conn.cursor() as look:
                point, passed = step_through(url, run, m.module.steps, direction, target, look)
                if point is None:
                    assert run.returncode == 0, run.stderr.read()
                    break
                run_again_and_compare(url, conn, command(migration, direction), mapping, want, point)
        killed.append(point)
        target += 1
    return killed


# Where the default run kills: 008's rollback (an index drop, the undo's
# batches, its table dropped). 003's apply (ALTERs, a constraint validation,
# two builds, two backfills) took 5.5 min on pg18 here: under the marker.
SAMPLE = {("008-subtask-updates-and-task-indexes", "rollback")}
MATRIX = [pytest.param(m, d, id=f"{m[:3]}-{d}", marks=() if (m, d) in SAMPLE else pytest.mark.kill_matrix)
          for m in ALL for d in ("apply", "rollback")]


@pytest.mark.parametrize("migration,direction", MATRIX)
def test_kill_9_at_every_step_then_the_same_command_gives_the_uninterrupted_result(migration, direction, server,
                                                                                 tmp_path):
    killed = kill_points(server, migration, direction, write_map(tmp_path))
    steps = [m for m in MIGRATIONS if m.id == migration][0].module.steps
    print(f"{migration} {direction}: killed at {killed}")
    # A step never held at its start is named, for whoever reads the run:
    # which statement the gate catches first varies from run to run. The test
    # below kills before every step, each in turn; this one adds the kills in
    # flight (a statement queued for its lock, a build or backfill half done).
    for i, step in enumerate(steps):
        if (step.statements(direction) and not isinstance(step, (Check, Widening))
                and f"{i} start" not in killed and f"{i} batch 1" not in killed):
            print(f"{migration} {direction}: step {i} ({type(step).__name__}) not held at its start")


# Killed between two steps, at each step in turn: the run kills itself just
# before it (tests/kill_switch), which no race can move. Where a kill in
# flight differs from one between steps (an index build or a backfill half
# done, a statement queued for its lock), the test above kills it there.
KILL_SWITCH = PROJECT_ROOT / "tests" / "kill_switch"
BETWEEN_SAMPLE = {("011-add-conversation-analyses", "apply"), ("011-add-conversation-analyses", "rollback")}
BETWEEN = [pytest.param(m, d, id=f"{m[:3]}-{d}", marks=() if (m, d) in BETWEEN_SAMPLE else pytest.mark.kill_matrix)
           for m in ALL for d in ("apply", "rollback")]


@pytest.mark.parametrize("migration,direction", BETWEEN)
def test_kill_9_before_each_step_then_the_same_command_gives_the_uninterrupted_result(migration, direction, server,
                                                                                    tmp_path):
    mapping = write_map(tmp_path)
    run = [*command(migration, direction)]
    base = Database(server)
    with base as prepared:
        prepare(prepared, migration, direction, mapping)
        template = base.name
        with Database(server, template) as url:
            migrate(url, *run, NEXUS_ACCOUNT_MAP=mapping, **ALLOWED)
            with connect(url) as conn:
                want = outcome(conn)
        killed = 0
        while True:
            with Database(server, template) as url:
                result = run_script(PROJECT_ROOT, "migrate", *run, DATABASE_URL=url, NEXUS_ACCOUNT_MAP=mapping,
                                    NEXUS_TEST_KILL_AT_STEP=str(killed), PYTHONPATH=str(KILL_SWITCH), **ALLOWED)
                if result.returncode == 0:
                    break
                assert result.returncode == -signal.SIGKILL, result.stderr
                with connect(url) as conn:
                    run_again_and_compare(url, conn, run, mapping, want, f"killed before step {killed}")
            killed += 1
    # every step of the migration, and in a rollback the data-loss guard that runs first
    [m] = [m for m in MIGRATIONS if m.id == migration]
    m.load()
    assert killed == len(m.module.steps) + (direction == "rollback")
