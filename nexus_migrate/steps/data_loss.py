"""The guard that refuses a rollback which would drop stored proxy traffic,
unless the operator allows data loss in so many words."""

from __future__ import annotations

import os
import re
import sys

from ..errors import OperatorError

ALLOW_DATA_LOSS = "NEXUS_ALLOW_DATA_LOSS"
ALLOW_DATA_LOSS_OPTION = "--allow-data-loss"  # scripts/migrate rollback's spelling of it


class DataLossRefused(OperatorError):
    """A rollback would drop stored proxy traffic and the operator did not allow it."""


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


class DataLossGuard:
    """The last step of every migration: its rollback runs first."""

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
