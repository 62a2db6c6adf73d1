"""The two ways of applying a migration that the benchmark compares.

- upstream's: what the original scripts did. Each step's blocking_statements()
  (an index built by a plain CREATE INDEX, a constraint added and validated at
  once, a backfill as upstream's single statements), all of the migration's in
  one transaction.
- ours: `yoyo apply --batch -r ID`, as an operator runs it.

Both read the migration files' steps; neither restates their SQL.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from contextlib import contextmanager

import psycopg2
from yoyo import read_migrations

from .. import MIGRATIONS_DIR
from ..commands.migrate import yoyo
from ..errors import OperatorError
from .counters import EXPLAINED

BASE = "000-init-database"
WAYS = {"upstream": "upstream's way: each migration in one transaction, plain CREATE INDEX",
        "ours": "ours: yoyo apply (CREATE INDEX CONCURRENTLY, short transactions)"}


def migration_ids() -> list[str]:
    return sorted(m.id for m in read_migrations(str(MIGRATIONS_DIR)))


def migration_steps(migration_id: str) -> list:
    for migration in read_migrations(str(MIGRATIONS_DIR)):
        if migration.id == migration_id:
            migration.load()
            return migration.module.steps
    raise OperatorError(f"no migration {migration_id} in {MIGRATIONS_DIR}")


def blocking_statements(migration_id: str, step) -> list[str]:
    if not callable(getattr(step, "blocking_statements", None)):
        raise OperatorError(f"{migration_id}: its step {type(step).__name__} has no blocking_statements(), "
                            "so the benchmark cannot run it the way upstream's script did")
    return step.blocking_statements()


def apply_upstream(url: str, migration_id: str,
                   around_step: Callable | None = None) -> None:
    """The migration's steps as upstream's script ran them: each step's
    blocking_statements(), all in one transaction. around_step(step, cur,
    run), if given, is called for each step in place of run(), which sends
    the step's statements and returns their row counts; it can look at the
    transaction around them. run(explained=True) sends each statement under
    EXPLAIN ANALYZE, which runs it just the same, and returns their plans,
    which count the rows and the WAL each wrote (a transaction's WAL reaches
    pg_stat_wal only once it ends)."""
    steps = migration_steps(migration_id)
    statements = [blocking_statements(migration_id, step) for step in steps]  # all refused before any runs
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            for step, sqls in zip(steps, statements):
                def run(sqls=sqls, explained: bool = False) -> list:
                    found = []
                    for statement in sqls:
                        cur.execute(EXPLAINED + statement if explained else statement)
                        found.append(cur.fetchone()[0] if explained else cur.rowcount)
                    return found
                if around_step:
                    around_step(step, cur, run)
                else:
                    run()
        conn.commit()
    finally:
        conn.close()


def apply_ours(url: str, migration_id: str) -> None:
    """yoyo apply, as an operator runs it (scripts/migrate apply --batch -r ID)."""
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        if yoyo(["apply", "--batch", "-r", migration_id]) != 0:
            raise OperatorError(f"yoyo apply -r {migration_id} failed")
    finally:
        gc.collect()  # yoyo leaves its connection for the collector to close; a template must have none
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous


APPLY = {"upstream": apply_upstream, "ours": apply_ours}


# -- backfill steps, found by what they are rather than imported --

def is_backfill(step) -> bool:
    """A step that fills columns of existing rows: the Backfill step kind, or
    any step that counts the rows it updated."""
    return type(step).__name__ == "Backfill" or hasattr(step, "rows_updated")


def step_label(migration_id: str, steps: list, step) -> str:
    """migration number, the step's position in it and its kind, as "007 step 6 (Backfill)"."""
    position = next((n for n, s in enumerate(steps, 1) if s is step or s == step), "?")
    name = getattr(step, "name", None) or getattr(step, "column", None)
    return f"{migration_id[:3]} step {position} ({type(step).__name__}{', ' + name if isinstance(name, str) else ''})"


@contextmanager
def observing_backfills(migration_id: str, started: Callable, finished: Callable):
    """While in the block, each backfill step of migration_id that yoyo runs
    in this process calls started(step, label, conn) before its apply and
    finished(step, label, conn) after it. (yoyo loads the migration file again and
    binds each step's apply when it does, so the step's class is wrapped.)"""
    steps = migration_steps(migration_id)
    classes = {type(s) for s in steps if is_backfill(s)}
    originals = {cls: cls.apply for cls in classes}

    def wrapped(original):
        def apply(self, conn, *args, **kwargs):
            label = step_label(migration_id, steps, self)
            started(self, label, conn)
            original(self, conn, *args, **kwargs)
            finished(self, label, conn)
        return apply

    for cls, original in originals.items():
        cls.apply = wrapped(original)
    try:
        yield [step_label(migration_id, steps, s) for s in steps if is_backfill(s)]
    finally:
        for cls, original in originals.items():
            cls.apply = original
