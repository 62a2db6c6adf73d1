"""index(create, drop): concurrent builds with progress and repair of an
interrupted build; retired_index(drop, replaced_by=...): dropping an index an
earlier migration built, rebuilt by that migration's statement on rollback."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import psycopg2
from yoyo import read_migrations

from .. import MIGRATIONS_DIR
from ..database.connection import session_parameters
from ..errors import OperatorError
from ..proxy.verify import equivalent_index, index_definition, index_state
from .settings import progress_seconds
from .sql_tree import created_index, dropped_index
from .statement import Statement, statements_of
from .timeouts import LOCK_TIMEOUT, lifted

# Every index step of the migrations by name, as the migration files create
# them: a retired index is built again on rollback with its own statement.
_INDEX_STEPS: dict[str, Index] = {}


@dataclass
class Index:
    apply_sql: str
    rollback_sql: str

    def __post_init__(self):
        built, dropped = created_index(self.apply_sql), dropped_index(self.rollback_sql)
        for sql, name in ((self.apply_sql, built), (self.rollback_sql, dropped)):
            if not name:
                raise ValueError(f"index steps build and drop CONCURRENTLY and IF [NOT] EXISTS: {sql!r}")
        if built != dropped:  # a failed build is undone by the rollback: it must drop that very index
            raise ValueError(f"the rollback of index {built} drops {dropped}: {self.rollback_sql!r}")
        self.name = built
        _INDEX_STEPS[self.name] = self

    def statements(self, direction: str) -> list[Statement]:
        return statements_of([self.apply_sql if direction == "apply" else self.rollback_sql], False)

    @property
    def blocking_sql(self) -> str:
        """The same build as one plain CREATE INDEX, which blocks writes: the
        way the original scripts built their indexes (see scripts/benchmark)."""
        return _without_concurrently(self.apply_sql)

    def blocking_statements(self) -> list[str]:
        return [self.blocking_sql]

    def apply(self, conn) -> None:
        with conn.cursor() as cur, lifted(cur, LOCK_TIMEOUT):
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
        with conn.cursor() as cur, lifted(cur, LOCK_TIMEOUT):
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
        self.params = session_parameters(conn)
        self.interval = progress_seconds()
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
                    watcher = psycopg2.connect(**self.params)
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
        for migration in read_migrations(str(MIGRATIONS_DIR)):
            migration.load()
    return _INDEX_STEPS[name]


@dataclass
class RetiredIndex:
    """An index an earlier migration built and a later one finds redundant:
    another index (replaced_by) serves its queries, or no query uses it
    (replaced_by None)."""

    apply_sql: str
    replaced_by: str | None

    def __post_init__(self):
        self.name = dropped_index(self.apply_sql)
        if not self.name:
            raise ValueError(f"a retired index is dropped CONCURRENTLY IF EXISTS: {self.apply_sql!r}")

    @property
    def rollback_sql(self) -> str:
        return _index_step(self.name).apply_sql

    def statements(self, direction: str) -> list[Statement]:
        return statements_of([self.apply_sql if direction == "apply" else self.rollback_sql], False)

    def blocking_statements(self) -> list[str]:
        return [_without_concurrently(self.apply_sql)]

    def apply(self, conn) -> None:
        with conn.cursor() as cur, lifted(cur, LOCK_TIMEOUT):
            if self.replaced_by and equivalent_index(cur, self.replaced_by) is None:
                raise OperatorError(
                    f"{self.name} is not dropped: {self.replaced_by}, which serves its queries, is missing or "
                    "INVALID; apply again once it is built")
            cur.execute(self.apply_sql)

    def rollback(self, conn) -> None:
        _index_step(self.name).apply(conn)


def index(create: str, drop: str) -> Index:
    return Index(create, drop)


def retired_index(drop: str, *, replaced_by: str | None) -> RetiredIndex:
    return RetiredIndex(drop, replaced_by)
