"""Rules every migration follows, so that 003 and later fit in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest
from pglast import ast
from yoyo import read_migrations

from nexus_migrate import MIGRATIONS_DIR
from nexus_migrate.database.catalog import snapshot, widened
from nexus_migrate.proxy.schema import PROMISES, promised_index
from nexus_migrate.steps import Backfill, Check, Constraint, Ddl, Index, RetiredIndex, Widening
from nexus_migrate.steps.sql_tree import statements
from nexus_migrate.steps.statement import first_line

from .migrations import MIGRATIONS

FILE_NAME = re.compile(r"^(\d{3})-[a-z0-9]+(-[a-z0-9]+)*\.py$")


def steps(migration):
    migration.load()
    return migration.module.steps


def test_every_file_is_a_numbered_migration_and_the_numbers_have_no_gap():
    names = sorted(p.name for p in MIGRATIONS_DIR.iterdir() if p.is_file())
    assert all(FILE_NAME.match(name) for name in names), names
    assert [int(name[:3]) for name in names] == list(range(len(names)))


def test_each_migration_depends_on_the_one_before_it():
    previous = None
    for migration in MIGRATIONS:
        assert {d.id for d in migration.depends} == ({previous.id} if previous else set()), migration.id
        previous = migration


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.id)
def test_each_migration_is_plain_sql_with_a_docstring_and_a_promise(migration):
    assert all(isinstance(s, (Ddl, Index, RetiredIndex, Constraint, Check, Backfill)) and isinstance(s.apply_sql, str)
               and isinstance(s.rollback_sql, (str, type(None))) for s in steps(migration))
    assert (migration.module.__doc__ or "").strip(), "say what the migration is for"
    assert migration.id in PROMISES, "add what it builds to nexus_migrate/proxy/schema.py, for verify()"


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: m.id)
def test_indexes_are_built_concurrently_outside_a_transaction(migration):
    """A plain CREATE INDEX blocks the proxy's writes for the whole build."""
    migration_steps = steps(migration)  # loads the module
    assert migration.module.__transactional__ is False
    for s in migration_steps:
        if isinstance(s, (Index, RetiredIndex)):
            assert promised_index(s.name), s.name
        else:
            assert not re.search(r"\b(CREATE|DROP)( UNIQUE)? INDEX\b", s.apply_sql + (s.rollback_sql or ""), re.I), s.apply_sql


class Unpaired(NamedTuple):
    """Of the steps without a rollback:"""
    widened: list[str]  # the migrations of those that changed a column's width, as they declare
    changed: list[str]  # those that changed the schema otherwise: the convention broken


def unpaired_steps(conn, migrations) -> Unpaired:
    """Apply migrations step by step on conn's database, each step where the
    one before it left the schema; each step without a rollback runs between
    two snapshots of the catalog, which must be equal (a widening's: but for
    the width it declares, which a rollback keeps on purpose)."""
    found = Unpaired([], [])
    for migration in migrations:
        for s in steps(migration):
            if s.rollback_sql is not None:
                s.apply(conn)
                continue
            before = snapshot(conn)
            s.apply(conn)
            after = snapshot(conn)
            declared = {(s.table, s.column): s.length} if isinstance(s, Widening) else {}
            if after != widened(before, declared):
                found.changed.append(f"{migration.id}: {first_line(s.apply_sql)}")
            elif after != before:
                found.widened.append(migration.id)
    return found


def test_every_step_has_a_rollback_unless_it_changes_nothing(db):
    """Steps without a rollback are checks, ANALYZE, backfills whose values go
    with their column, and widenings; run on the schema each meets, none
    changes it (a widening, only its width)."""
    found = unpaired_steps(db, MIGRATIONS)
    assert found.changed == []
    # Run where 006 meets it, its widening of api_key_hash does widen (on a
    # migrated database it would not): each step met the schema it is written for.
    assert "006-split-conversation-hashes" in found.widened


def test_a_step_that_changes_the_schema_without_a_rollback_is_caught(db):
    made = list(read_migrations(str(Path(__file__).parent / "made_migrations" / "unpaired")))
    assert unpaired_steps(db, MIGRATIONS + made).changed == [
        "013-add-a-column-without-rollback: ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS unpaired_note text"]


def test_every_rollback_is_read_by_the_data_loss_guard():
    """The guard reads a rollback's statements from their parse tree; one
    inside a DO block is PL/pgSQL it does not read (steps/sql_tree.py)."""
    for migration in MIGRATIONS:
        for s in steps(migration):
            if s.rollback_sql:
                found = statements(s.rollback_sql)  # raises where the server's parser would refuse it
                assert not [x for x in found if isinstance(x, ast.DoStmt)], f"{migration.id}: {s.rollback_sql}"
