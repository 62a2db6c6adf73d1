"""A statement as a step sends it, and how a step's SQL is named in messages."""

from __future__ import annotations

from dataclasses import dataclass


def first_line(sql: str) -> str:
    return " ".join(sql.split())[:80]


@dataclass(frozen=True)
class Statement:
    """One statement as a step sends it: in a transaction of its own under the
    lock_timeout (and retried), or on its own outside any transaction."""

    sql: str
    in_transaction: bool


def labelled(backfill: str, what: str, sql: str) -> str:
    """sql as a backfill sends it: a comment naming the backfill and what the
    statement is, which pg_stat_activity shows with it."""
    return f"-- {' '.join(backfill.split())}: {what}\n{sql}"


def statements_of(sqls, in_transaction: bool) -> list[Statement]:
    return [Statement(sql, in_transaction) for sql in sqls if sql]
