"""ddl(apply, rollback): a short transaction of its own under the lock
timeout, with lock retries; widen_varchar(table, column, length): a ddl step
that raises a VARCHAR's limit where it is lower, with no undo."""

from __future__ import annotations

from dataclasses import dataclass

from .lock_retries import run_with_lock_retries
from .statement import Statement, statements_of


@dataclass
class Ddl:
    apply_sql: str | None
    rollback_sql: str | None

    def statements(self, direction: str) -> list[Statement]:
        return statements_of([self.apply_sql if direction == "apply" else self.rollback_sql], True)

    def blocking_statements(self) -> list[str]:
        """The apply as the original scripts ran it, inside one transaction."""
        return [self.apply_sql] if self.apply_sql else []

    def apply(self, conn) -> None:
        if self.apply_sql:
            run_with_lock_retries(conn, self.apply_sql)

    def rollback(self, conn) -> None:
        if self.rollback_sql:
            run_with_lock_retries(conn, self.rollback_sql)


def ddl(apply: str | None, rollback: str | None) -> Ddl:
    return Ddl(apply, rollback)


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
