"""kill -9 of an apply at several points of each migration: the next run
completes it, nothing stored is lost, and no INVALID index is left.

To stop the apply at a known point, the test holds what that point waits for:
an open snapshot stalls CREATE INDEX CONCURRENTLY before it can finish; an open
read of api_requests keeps an ALTER TABLE from its lock, so it retries."""

from __future__ import annotations

import os
import signal

import pytest

from nexus_migrate.database.catalog import applied_migrations
from nexus_migrate.proxy.verify import verify

from .conftest import wait_until
from .migrations import ALL, MIGRATIONS
from .test_busy_table import invalid_indexes
from .traffic import WAITING_BUILD, checksum, hold_old_snapshot, hold_read_lock, seed, start_migrate

RETRYING_ALTER = r"SELECT pid FROM pg_stat_activity WHERE query ~ '^\s*ALTER TABLE api_requests' AND pid <> pg_backend_pid()"


def prebuild_first_index_of(migration_id: str):
    """Build the migration's first index beforehand, with the migration's own statement."""
    def run(db):
        [migration] = [m for m in MIGRATIONS if m.id == migration_id]
        migration.load()
        with db.cursor() as cur:
            cur.execute(migration.module.steps[0].apply_sql)
    return run


# (migration killed, what the test holds, how to see the apply is there, extra set-up)
POINTS = {
    "000 building its first index": (ALL[0], hold_old_snapshot, WAITING_BUILD, None),
    "001 retrying its ALTER TABLE": (ALL[1], hold_read_lock, RETRYING_ALTER, None),
    "001 building its first index": (ALL[1], hold_old_snapshot, WAITING_BUILD, None),
    "002 building its first index": (ALL[2], hold_old_snapshot, WAITING_BUILD, None),
    "002 building its second index": (ALL[2], hold_old_snapshot, WAITING_BUILD, prebuild_first_index_of(ALL[2])),
}


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_apply_is_completed_by_the_next_run(point, yoyo, db, database_url):
    migration_id, hold, at_point, setup = POINTS[point]
    before_it = ALL[:ALL.index(migration_id)]
    if before_it:
        yoyo("apply", "-r", before_it[-1])
        seed(db, 5_000)
    if setup:
        setup(db)
    rows = checksum(db) if before_it else None

    holder = hold(database_url)
    apply = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_LOCK_ATTEMPTS="1000")
    with db.cursor() as cur:
        def at():
            cur.execute(at_point)
            return cur.fetchone()
        [backend] = wait_until(at, point)
    os.killpg(apply.pid, signal.SIGKILL)
    apply.wait()
    with db.cursor() as cur:
        wait_until(lambda: cur.execute("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)",
                                     (backend,)) or cur.fetchone()[0], "the killed apply's session to end")
    holder.close()
    assert applied_migrations(db) == before_it, "the killed migration is not recorded"
    assert invalid_indexes(db) == (1 if at_point == WAITING_BUILD else 0), "the build was cut short"

    yoyo("break-lock")  # the killed apply could not remove yoyo's lock row
    again = start_migrate("apply", "--batch", DATABASE_URL=database_url)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert applied_migrations(db) == ALL
    assert verify(db) == [] and invalid_indexes(db) == 0
    if rows:
        assert checksum(db) == rows
