"""What a database's schema is, read from the PostgreSQL catalogs.

snapshot() describes every object of the current schema by name and definition
(never by OID), so two databases built the same way give equal snapshots, and a
migration that was applied and rolled back leaves the snapshot it found.
yoyo's own bookkeeping tables are left out.
"""

from __future__ import annotations

import re

# yoyo's tables (_yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock) and,
# since PostgreSQL names them after their table, their indexes and constraints.
NOT_YOYO = r"relname !~ '^(_yoyo_|yoyo_lock)'"

IN_SCHEMA = "relnamespace = current_schema()::regnamespace"

SNAPSHOT_QUERIES = {
    "relations": f"""
        SELECT relname, relkind::text, obj_description(oid, 'pg_class')
          FROM pg_class
         WHERE {IN_SCHEMA} AND {NOT_YOYO}
         ORDER BY relname""",
    "columns": f"""
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.{IN_SCHEMA} AND c.{NOT_YOYO} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY c.relname, a.attnum""",
    "indexes": f"""
        SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.{IN_SCHEMA} AND c.{NOT_YOYO}
         ORDER BY c.relname""",
    "constraints": f"""
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
         WHERE c.{IN_SCHEMA} AND c.{NOT_YOYO}
         ORDER BY c.relname, k.conname""",
    "views": f"""
        SELECT relname, pg_get_viewdef(oid)
          FROM pg_class
         WHERE {IN_SCHEMA} AND relkind IN ('v', 'm')
         ORDER BY relname""",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc')
          FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
         ORDER BY 1""",
    "triggers": f"""
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.{IN_SCHEMA} AND NOT t.tgisinternal
         ORDER BY c.relname, t.tgname""",
    "types": """
        SELECT typname, typtype::text
          FROM pg_type
         WHERE typnamespace = current_schema()::regnamespace AND typtype IN ('d', 'e', 'r', 'm')
         ORDER BY typname""",
}


def snapshot(conn) -> dict[str, list[tuple]]:
    """Every object of the current schema, as {kind: sorted rows}."""
    with conn.cursor() as cur:
        result = {}
        for kind, query in SNAPSHOT_QUERIES.items():
            cur.execute(query)
            result[kind] = [tuple(row) for row in cur.fetchall()]
        return result


VARCHAR_LIMIT = re.compile(r"character varying\((\d+)\)")


def widened(catalog: dict, widths: dict[tuple[str, str], int]) -> dict:
    """catalog with each (table, column) of widths raised to that VARCHAR limit
    where it was a lower one: what rolling back the migrations that widen them
    gives back, since a widened column is never narrowed again."""
    def column(row: tuple) -> tuple:
        table, name, type_, *rest = row
        limit = VARCHAR_LIMIT.fullmatch(type_)
        if (table, name) in widths and limit and int(limit.group(1)) < widths[table, name]:
            type_ = f"character varying({widths[table, name]})"
        return (table, name, type_, *rest)

    return {**catalog, "columns": [column(row) for row in catalog["columns"]]}


def applied_migrations(conn, table: str = "_yoyo_migration") -> list[str]:
    """Ids of the migrations yoyo has recorded as applied, oldest first."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not cur.fetchone()[0]:
            return []
        cur.execute(f"SELECT migration_id FROM {table} ORDER BY applied_at_utc, migration_id")
        return [row[0] for row in cur.fetchall()]
