"""check(sql): a condition (a DO block that raises); nothing to undo."""

from __future__ import annotations

from dataclasses import dataclass

from .statement import Statement, statements_of


@dataclass
class Check:
    apply_sql: str
    rollback_sql = None

    def statements(self, direction: str) -> list[Statement]:
        return statements_of([self.apply_sql if direction == "apply" else None], False)

    def blocking_statements(self) -> list[str]:
        return [self.apply_sql]

    def apply(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(self.apply_sql)

    def rollback(self, conn) -> None:
        pass


def check(sql: str) -> Check:
    return Check(sql)
