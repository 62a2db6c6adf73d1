"""scripts/migrate rehearse: the pending migrations are applied, verified,
rolled back and applied again on a scratch copy of the target's schema; the
target itself is never written to, and the scratch database is gone afterwards."""

from __future__ import annotations

import uuid

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot

from .conftest import SECRET, assert_one_line_error, run_script
from .migrations import ALL
from .rows import fingerprint, store_traffic
from .test_backup import with_password


def rehearse(url: str):
    return run_script(PROJECT_ROOT, "migrate", "rehearse", DATABASE_URL=url)


def databases(db) -> set[str]:
    with db.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cur.fetchall()}


def state(db) -> tuple:
    """Everything a rehearsal must leave as it was: the catalog, every table's
    rows (yoyo's included) and the databases on the server."""
    return snapshot(db), fingerprint(db), databases(db)


def lock_report(output: str, heading: str) -> list[str]:
    """The lines of the lock report under `heading` (e.g. 'apply 001-...')."""
    lines = output.splitlines()
    start = lines.index(f"  {heading}") + 1
    found = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        found.append(line.strip())
    return found


def test_rehearsal_runs_every_phase_and_never_writes_to_the_target(database_url, db, yoyo):
    yoyo("apply", "-r", ALL[0])
    store_traffic(db)
    before = state(db)

    result = rehearse(with_password(database_url))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert SECRET not in out + result.stderr

    phases = [line.split()[:3] for line in out.splitlines()
              if line.split()[:1] in (["apply"], ["rollback"]) and not line.startswith(" ")]
    pending = [[mid, "ok"] for mid in ALL[1:]]
    assert phases == ([["apply", *p] for p in pending] + [["rollback", *p] for p in pending[::-1]]
                      + [["apply", *p] for p in pending])
    assert out.count("verify    ok") == 3
    assert "verify    the rollback restored the schema it started from" in out

    alter, *indexes, check = lock_report(out, f"apply {ALL[1]}")  # the ALTER carries the columns' comments
    assert alter.startswith("ALTER TABLE api_requests ADD COLUMN")
    assert alter.endswith("ACCESS EXCLUSIVE on api_requests (blocks reads and writes)")
    assert len(indexes) == 6 and all("SHARE UPDATE EXCLUSIVE on api_requests" in line for line in indexes)
    assert check.endswith("none")
    assert lock_report(out, f"rollback {ALL[1]}")[-1].endswith("ACCESS EXCLUSIVE on api_requests (blocks reads and writes)")

    assert state(db) == before
    assert applied_migrations(db) == ALL[:1]


def test_rehearsal_on_an_empty_database_leaves_it_empty(database_url, db):
    before = state(db)
    result = rehearse(database_url)
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("apply ")] == ALL + ALL
    assert state(db) == before
    assert fingerprint(db) == {}  # not even yoyo's tables


def test_nothing_pending_is_said_so(database_url, db, yoyo):
    yoyo("apply")
    before = state(db)
    result = rehearse(database_url)
    assert result.returncode == 0 and "nothing to rehearse" in result.stdout
    assert state(db) == before


def test_a_failing_migration_fails_the_rehearsal_and_the_scratch_is_dropped(database_url, db, yoyo):
    """001's post-check refuses a conversation_id that is text (see test_commands)."""
    yoyo("apply", "-r", ALL[0])
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN conversation_id text")
    before = state(db)
    result = rehearse(database_url)
    assert result.returncode == 1
    assert_one_line_error(result, "rehearsal failed", ALL[1], "conversation_id text", "the target was not touched")
    assert f"apply     {ALL[1]}" in result.stdout and "FAILED" in result.stdout
    assert state(db) == before


def test_a_role_that_may_not_create_databases_is_told_so(database_url, db, yoyo):
    yoyo("apply", "-r", ALL[0])
    role = f"operator_{uuid.uuid4().hex[:8]}"
    with db.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")  # it may read the target
    try:
        before = state(db)
        result = rehearse(database_url.replace("postgres@", f"{role}:{SECRET}@", 1))
        assert_one_line_error(result, "CREATEDB")
        assert state(db) == before
    finally:
        with db.cursor() as cur:
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")



def test_an_index_dropped_by_hand_fails_the_rehearsal_of_the_migration_that_retires_it(database_url, db, yoyo):
    """012 retires idx_api_requests_model, which an operator dropped already:
    012 applies (its DROP does nothing), but its rollback builds the index,
    so the schema after the rollback is not the target's, and the rehearsal
    says so in one line without touching the target."""
    yoyo("apply", "-r", ALL[-2])
    with db.cursor() as cur:
        cur.execute("DROP INDEX idx_api_requests_model")
    before = state(db)
    result = rehearse(database_url)
    assert result.returncode == 1
    assert_one_line_error(result, "rehearsal failed", "the rollback did not restore the schema",
                          "the target was not touched")
    assert f"apply     {ALL[-1]}" in result.stdout and f"rollback  {ALL[-1]}" in result.stdout
    assert state(db) == before
