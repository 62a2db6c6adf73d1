"""constraint(add, drop): added NOT VALID under the lock timeout, then
validated in a transaction of its own that blocks no read or write."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg2.errors

from ..errors import OperatorError
from ..proxy.verify import constraint_definition, equivalent_constraint
from .lock_retries import run_with_lock_retries
from .sql_tree import added_constraint, drops_constraint
from .statement import Statement, first_line, statements_of


@dataclass
class Constraint:
    apply_sql: str
    rollback_sql: str

    def __post_init__(self):
        added = added_constraint(self.apply_sql)
        if not added:
            raise ValueError(f"constraint steps add a constraint NOT VALID: {self.apply_sql!r}")
        self.table, self.name = added
        if not drops_constraint(self.rollback_sql, self.name):
            raise ValueError(f"the rollback of {self.name} drops it IF EXISTS: {self.rollback_sql!r}")

    def _validate_sql(self, name: str) -> str:
        return f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {name}"

    def statements(self, direction: str) -> list[Statement]:
        if direction == "apply":
            return statements_of([self.apply_sql, self._validate_sql(self.name)], True)
        return statements_of([self.rollback_sql], True)

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
            run_with_lock_retries(conn, re.sub(r"\bADD\s+CONSTRAINT\b", f"DROP CONSTRAINT {self.name}, ADD CONSTRAINT",
                                                self.apply_sql, count=1, flags=re.I))
        else:
            run_with_lock_retries(conn, self.apply_sql)
        self._validate(conn, self.name)

    def _validate(self, conn, name: str) -> None:
        try:
            run_with_lock_retries(conn, self._validate_sql(name), past_statement_timeout=True)
        except (psycopg2.errors.CheckViolation, psycopg2.errors.ForeignKeyViolation) as exc:
            raise OperatorError(
                f"{name} checks new rows of {self.table} already, but existing rows break it "
                f"({first_line(exc.pgerror or str(exc))}): correct those rows, then apply again") from None

    def rollback(self, conn) -> None:
        run_with_lock_retries(conn, self.rollback_sql)


def constraint(add: str, drop: str) -> Constraint:
    return Constraint(add, drop)
