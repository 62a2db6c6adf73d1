"""Rules every migration follows, so that 003 and later fit in."""

from __future__ import annotations

import re

import pytest

from nexus_migrate import MIGRATIONS_DIR
from nexus_migrate.database.catalog import snapshot
from nexus_migrate.proxy.schema import PROMISES, promised_index
from nexus_migrate.steps import Backfill, Check, Constraint, Ddl, Index, RetiredIndex

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


def test_every_step_has_a_rollback_unless_it_changes_nothing(yoyo, db):
    """Steps without a rollback are checks, ANALYZE and backfills whose values
    go with their column. Run again on a migrated database, each leaves the
    catalog as it found it."""
    yoyo("apply")
    unpaired = [(m.id, s.apply_sql) for m in MIGRATIONS for s in steps(m) if s.rollback_sql is None]
    assert unpaired, "expected the post-checks here"
    for migration_id, sql in unpaired:
        before = snapshot(db)
        with db.cursor() as cur:
            cur.execute(sql)
        assert snapshot(db) == before, f"a step of {migration_id} changes the schema but has no rollback"
