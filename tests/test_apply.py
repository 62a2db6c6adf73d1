"""Applying the migrations: what they build, and that yoyo applies each once, in order."""

from __future__ import annotations

import pytest

from nexus_migrate.database.catalog import applied_migrations, snapshot
from nexus_migrate.proxy.verify import verify

from .migrations import ALL, logged


def test_apply_all_builds_the_promised_schema(yoyo, db):
    assert yoyo("apply") == 0
    assert applied_migrations(db) == ALL
    assert verify(db, ALL) == []


def test_apply_is_a_no_op_the_second_time(yoyo, db):
    yoyo("apply")
    before = snapshot(db)
    assert yoyo("apply") == 0
    assert snapshot(db) == before
    assert logged(db, "apply") == ALL  # nothing ran twice
    assert verify(db) == []


def test_asking_for_the_last_migration_applies_its_dependencies_first(yoyo, db):
    assert yoyo("apply", "-r", ALL[-1]) == 0
    assert logged(db, "apply") == ALL
    assert verify(db, ALL) == []


@pytest.mark.parametrize("target", ALL)
def test_apply_up_to_a_migration_applies_exactly_its_chain(yoyo, db, target):
    yoyo("apply", "-r", target)
    chain = ALL[: ALL.index(target) + 1]
    assert applied_migrations(db) == chain
    assert verify(db, chain) == []


def test_a_migration_picked_without_its_dependencies_is_refused(yoyo, db):
    # -m selects by pattern and, unlike -r, does not add dependencies: PostgreSQL
    # then refuses 002 on an empty database, and nothing is left half done.
    before = snapshot(db)
    with pytest.raises(Exception, match="api_requests"):
        yoyo("apply", "-m", ALL[2])
    assert applied_migrations(db) == []
    assert snapshot(db) == before


def test_rolling_back_the_first_migration_first_rolls_back_its_dependents(yoyo, db):
    yoyo("apply")
    assert yoyo("rollback", "-r", ALL[0]) == 0
    assert logged(db, "rollback") == ALL[::-1]
    assert applied_migrations(db) == []
    assert verify(db) == []
