"""Rolling back: every migration undoes itself completely, whatever ran before it.

Catalogs are compared whole (tables, columns with types and defaults, indexes,
constraints, views, functions, comments), not by a handful of names.
"""

from __future__ import annotations

import pytest

from nexus_migrate.database.catalog import applied_migrations, snapshot, widened
from nexus_migrate.proxy.schema import PROMISES, Promise
from nexus_migrate.proxy.verify import verify
from nexus_migrate.steps import widenings

from .migrations import ALL, MIGRATIONS


@pytest.mark.parametrize("target", ALL)
def test_rolling_back_a_migration_restores_the_catalog_it_found(yoyo, db, target):
    position = ALL.index(target)
    if position:
        yoyo("apply", "-r", ALL[position - 1])
    found = snapshot(db)
    yoyo("apply", "-r", target)
    if PROMISES[target] == Promise():  # a migration that builds nothing says so in its file
        assert snapshot(db) == found
    else:
        assert snapshot(db) != found, f"{target} changed nothing"
    assert verify(db) == []

    assert yoyo("rollback", "-r", target) == 0
    assert snapshot(db) == widened(found, widenings(m for m in MIGRATIONS if m.id == target))
    assert applied_migrations(db) == ALL[:position]
    assert verify(db) == []  # what is still applied is still whole


def test_rollback_of_everything_leaves_the_database_as_it_was(yoyo, db):
    empty = snapshot(db)
    yoyo("apply")
    assert yoyo("rollback", "--all") == 0
    assert snapshot(db) == empty
    assert applied_migrations(db) == []
    assert verify(db) == [] and verify(db, ALL) != []  # nothing promised, and nothing left


def test_apply_rollback_apply_gives_the_catalog_of_a_single_apply(yoyo, db):
    yoyo("apply")
    once = snapshot(db)
    yoyo("rollback", "--all")
    yoyo("apply")
    assert snapshot(db) == once
    assert verify(db) == []


def test_reapply_of_the_last_migration_keeps_the_catalog(yoyo, db):
    yoyo("apply")
    once = snapshot(db)
    assert yoyo("reapply", "-r", ALL[-1]) == 0
    assert snapshot(db) == once
    assert verify(db) == []


def test_rolling_the_whole_chain_back_to_002_gives_002s_catalog_and_apply_the_full_one(yoyo, db):
    yoyo("apply", "-r", "002-optimize-conversation-indexes")
    at_002 = snapshot(db)
    yoyo("apply")
    full = snapshot(db)
    assert yoyo("rollback", "-r", "003-add-subtask-tracking") == 0
    assert snapshot(db) == widened(at_002, widenings(MIGRATIONS))
    assert applied_migrations(db) == ALL[:3] and verify(db) == []
    assert yoyo("apply") == 0
    assert snapshot(db) == full and verify(db) == []


def test_a_rollback_whose_steps_all_ran_but_went_unrecorded_runs_again(yoyo, db):
    """A rollback killed after its last step, before yoyo records it, is run
    again from its first step: each rollback step must then meet the schema
    that the steps after it already took apart (a COMMENT on a view that is
    gone fails). Every migration, from the last to the first."""
    yoyo("apply")
    for migration in reversed(MIGRATIONS):
        migration.load()
        for s in reversed(migration.module.steps):
            s.rollback(db)
        taken_apart = snapshot(db)
        assert yoyo("rollback", "-r", migration.id) == 0, migration.id
        assert snapshot(db) == taken_apart, migration.id
        assert applied_migrations(db) == ALL[:ALL.index(migration.id)]
