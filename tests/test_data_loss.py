"""A rollback that would drop recorded proxy traffic refuses, changes nothing,
and says how to allow it; with the allowance, or with nothing stored, it runs."""

from __future__ import annotations

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot

from .conftest import assert_one_line_error, run_script
from .migrations import ALL
from .traffic import seed


def conversation_rows(db) -> None:
    with db.cursor() as cur:
        cur.execute("UPDATE api_requests SET conversation_id = gen_random_uuid(), message_count = 3"
                    " WHERE request_id IN (SELECT request_id FROM api_requests LIMIT 10)")


def test_rolling_back_tables_with_rows_refuses_and_changes_nothing(yoyo, db, database_url):
    yoyo("apply")
    seed(db, 100)
    yoyo("rollback", "-r", ALL[1])  # 002 and 001: indexes, and columns that hold only defaults
    before = snapshot(db)
    result = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "--all", DATABASE_URL=database_url)
    line = assert_one_line_error(result, "refusing to roll back", "table api_requests (it holds rows)",
                                 "nothing was changed", "NEXUS_ALLOW_DATA_LOSS=1", "--allow-data-loss")
    assert "streaming_chunks" not in line, "an empty table is not data"
    assert result.returncode == 2
    assert snapshot(db) == before and applied_migrations(db) == ALL[:1]

    allowed = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "--all", "--allow-data-loss",
                         DATABASE_URL=database_url)
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == [] and snapshot(db)["relations"] == []


def test_rolling_back_conversation_columns_with_values_refuses(yoyo, db, database_url):
    yoyo("apply", "-r", ALL[1])
    seed(db, 100)
    conversation_rows(db)
    result = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[1], DATABASE_URL=database_url)
    line = assert_one_line_error(result, "column api_requests.conversation_id (it holds values)",
                                 "column api_requests.message_count (it holds values)")
    assert "branch_id" not in line, "'main' everywhere is only the column's default"
    assert applied_migrations(db) == ALL[:2]

    allowed = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[1],
                         DATABASE_URL=database_url, NEXUS_ALLOW_DATA_LOSS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == ALL[:1]
