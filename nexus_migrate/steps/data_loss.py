"""The guard that refuses a rollback which would drop stored proxy traffic,
unless the operator allows data loss in so many words."""

from __future__ import annotations

import os
import sys

from psycopg2 import sql

from ..errors import OperatorError
from .sql_tree import Drops, Relation, TypeChange, Unreadable, drops, shown
from .statement import first_line
from .timeouts import lifted

ALLOW_DATA_LOSS = "NEXUS_ALLOW_DATA_LOSS"
ALLOW_DATA_LOSS_OPTION = "--allow-data-loss"  # scripts/migrate rollback's spelling of it


class DataLossRefused(OperatorError):
    """A rollback would drop stored proxy traffic and the operator did not allow it."""


def destroys(steps) -> Drops:
    """What the rollbacks of steps drop, read from their parse trees. Not a
    table of kept values that a backfill's rollback puts back before it is
    dropped (its rows are restored, not lost), nor a column of a table that is
    dropped whole (the table counts)."""
    found = Drops()
    for s in steps:
        try:
            found.add(drops(s.rollback_sql or ""))
        except Unreadable as exc:
            raise DataLossRefused(
                f"refusing to roll back: the server's parser cannot read a rollback statement ({exc}: "
                f"{first_line(s.rollback_sql)}), so what it drops is unknown; nothing was changed") from None
    restored = {getattr(s, "restores", None) for s in steps} - {None}
    tables = found.tables
    return Drops(tables=[t for t in tables if str(t) not in restored],
                 columns=[(t, c) for t, c in found.columns if t not in tables],
                 type_changes=[c for c in found.type_changes
                               if c.table not in tables and (c.table, c.column) not in found.columns],
                 schemas=found.schemas,
                 emptied=[(t, cascade) for t, cascade in found.emptied if t not in tables and str(t) not in restored],
                 cascaded_types=found.cascaded_types)


def data_at_risk(conn, steps) -> list[str]:
    """What of the stored data the rollbacks of steps would drop, in words."""
    loss = destroys(steps)
    found = []
    with conn.cursor() as cur, lifted(cur):  # reads, which may scan a whole table and block no one
        counted = set()  # the tables named already, by oid: a schema's drop names the others
        for table in loss.tables:
            oid = _table_oid(cur, table)
            counted.add(oid)
            if oid is not None and _holds_rows(cur, table):
                found.append(f"table {table} (it holds rows)")
        for table, column in loss.columns:
            if _holds_values(cur, table, column):
                found.append(f"column {table}.{shown(column)} (it holds values)")
        for change in loss.type_changes:
            if _puts_values_at_risk(cur, change) and _holds_values(cur, change.table, change.column):
                found.append(f"column {change.table}.{shown(change.column)} (its type changes and it holds values)")
        for table, cascade in loss.emptied:
            for emptied in [table] + (_referencing(cur, table) if cascade else []):
                oid = _table_oid(cur, emptied)
                if oid is not None and oid not in counted and _holds_rows(cur, emptied):
                    found.append(f"the rows of table {emptied}")
        for type_name in loss.cascaded_types:
            for table, column in _columns_of_type(cur, type_name):
                if _table_oid(cur, table) not in counted and _holds_values(cur, table, column):
                    found.append(f"column {table}.{shown(column)} (its type {type_name} is dropped with CASCADE "
                                 "and it holds values)")
        restored = {_table_oid(cur, Relation(None, s.restores)) for s in steps if getattr(s, "restores", None)}
        for schema in loss.schemas:
            for table, oid in _tables_of(cur, schema):
                if oid not in counted | restored and _holds_rows(cur, table):
                    found.append(f"schema {shown(schema)} (its table {table} holds rows)")
    return found


def _table_oid(cur, table: Relation) -> int | None:
    """The oid of table when it is a table (a partitioned one too), else None."""
    cur.execute("SELECT oid FROM pg_class WHERE oid = to_regclass(%s) AND relkind IN ('r', 'p')", (table.regclass,))
    row = cur.fetchone()
    return row[0] if row else None


def _holds_rows(cur, table: Relation) -> bool:
    cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(*table.parts)))
    return cur.fetchone()[0]


def _holds_values(cur, table: Relation, column: str) -> bool:
    """Whether column holds a value other than its default: a value that only
    repeats the default is no information."""
    cur.execute("""
        SELECT pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
         WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
                (table.regclass, column))
    row = cur.fetchone()
    if row is None:
        return False
    cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE {} IS DISTINCT FROM {})").format(
        sql.Identifier(*table.parts), sql.Identifier(column), sql.SQL(row[0] or "NULL")))
    return cur.fetchone()[0]


def _puts_values_at_risk(cur, change: TypeChange) -> bool:
    """Whether the new type can fail on, or change, values the column holds:
    another type (even one that holds them all, such as text for varchar: the
    guard does not judge casts), values computed anew (USING), or a shorter
    limit of the same character type. The same type with no limit, or the
    same or a longer one, keeps every value."""
    cur.execute("""
        SELECT a.atttypid = to_regtype(%s), a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype),
               CASE WHEN a.atttypmod > 0 THEN a.atttypmod - 4 END
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
                (change.type_sql, change.table.regclass, change.column))
    row = cur.fetchone()
    if row is None:
        return False
    same_type, characters, length = row
    if not same_type or change.rewrites:
        return True
    if change.modifiers is None:
        return False
    if characters and len(change.modifiers) == 1:
        return length is None or change.modifiers[0] is None or change.modifiers[0] < length
    return True  # another type's modifiers (numeric's precision, a time's digits): not compared, so at risk


def _referencing(cur, table: Relation) -> list[Relation]:
    """The tables whose foreign keys reference table, and theirs, and so on
    (named as _columns_of_type names them)."""
    cur.execute("""
        WITH RECURSIVE referencing (oid) AS (
            SELECT conrelid FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass(%s)
            UNION
            SELECT c.conrelid FROM pg_constraint c JOIN referencing r ON c.confrelid = r.oid WHERE c.contype = 'f')
        SELECT CASE WHEN NOT pg_table_is_visible(c.oid) THEN n.nspname END, c.relname
          FROM referencing r JOIN pg_class c ON c.oid = r.oid
          JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2""", (table.regclass,))
    return [Relation(schema, name) for schema, name in cur.fetchall()]


def _columns_of_type(cur, type_name: Relation) -> list[tuple[Relation, str]]:
    """The table columns of that type, of arrays of it, or of domains over it
    (a table named by its schema only where search_path does not find it)."""
    cur.execute("""
        SELECT CASE WHEN NOT pg_table_is_visible(c.oid) THEN n.nspname END, c.relname, a.attname
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid IN (SELECT oid FROM pg_type
                               WHERE to_regtype(%(type)s) IN (oid, typelem, typbasetype))
         ORDER BY 1, 2, 3""", {"type": type_name.regclass})
    return [(Relation(schema, name), column) for schema, name, column in cur.fetchall()]


def _tables_of(cur, schema: str) -> list[tuple[Relation, int]]:
    cur.execute("""
        SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname""", (schema,))
    return [(Relation(schema, name), oid) for name, oid in cur.fetchall()]


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
