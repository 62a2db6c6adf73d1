"""The step kinds of 003 and later on databases that already hold some of what
they add: a constraint that is there under another name, or NOT VALID, or
broken by stored rows; an index of our name but another definition; an index
retired only once its replacement is valid."""

from __future__ import annotations

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot
from nexus_migrate.proxy.verify import verify

from .conftest import assert_one_line_error, run_script
from .migrations import ALL

BEFORE_007 = ALL[ALL.index("007-add-parent-request-id") - 1]


def migrate(database_url: str, *args: str):
    return run_script(PROJECT_ROOT, "migrate", *args, DATABASE_URL=database_url)


def constraints(db) -> dict[str, str]:
    with db.cursor() as cur:
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'api_requests'::regclass AND contype IN ('c', 'f')")
        return dict(cur.fetchall())


def test_a_constraint_there_under_another_name_is_kept_not_added_twice(yoyo, db, database_url):
    yoyo("apply", "-r", BEFORE_007)
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN parent_request_id uuid, "
                    "ADD CONSTRAINT operators_own_check CHECK (parent_request_id <> request_id)")
    result = migrate(database_url, "apply", "--batch")
    assert result.returncode == 0, result.stderr
    assert "chk_parent_request_not_self: not added, operators_own_check is the same constraint" in result.stdout
    checks = {name for name, definition in constraints(db).items() if definition.startswith("CHECK")}
    assert checks == {"operators_own_check"}
    assert verify(db) == []


def test_a_not_valid_constraint_found_is_validated(yoyo, db):
    yoyo("apply", "-r", BEFORE_007)
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN parent_request_id uuid, "
                    "ADD CONSTRAINT chk_parent_request_not_self CHECK (parent_request_id <> request_id) NOT VALID")
    assert "NOT VALID" in constraints(db)["chk_parent_request_not_self"]
    yoyo("apply")
    assert constraints(db)["chk_parent_request_not_self"] == "CHECK ((parent_request_id <> request_id))"
    assert verify(db) == []


def test_rows_that_break_a_constraint_stop_the_apply_in_one_line_and_a_fix_lets_it_finish(yoyo, db, database_url):
    """The constraint is in place for new rows from the moment it is added;
    validating the old ones fails, and says which constraint and what to do."""
    yoyo("apply", "-r", BEFORE_007)
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN parent_request_id uuid")
        cur.execute("INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, "
                    "parent_request_id) VALUES ('00000000-0000-0000-0000-000000000001', now(), 'd', 'POST', '/', "
                    "'{}', '00000000-0000-0000-0000-000000000001')")
    result = migrate(database_url, "apply", "--batch")
    assert_one_line_error(result, "chk_parent_request_not_self", "existing rows break it", "apply again")
    assert applied_migrations(db) == ALL[:ALL.index("007-add-parent-request-id")]
    assert verify(db, ALL[:8]) == [  # 007's other steps are done: only the validation is left
        "constraint chk_parent_request_not_self of api_requests is NOT VALID: rows written before it were never "
        "checked; ALTER TABLE api_requests VALIDATE CONSTRAINT chk_parent_request_not_self checks them without "
        "blocking writes"]

    with db.cursor() as cur:
        cur.execute("UPDATE api_requests SET parent_request_id = NULL")
    assert migrate(database_url, "apply", "--batch").returncode == 0
    assert applied_migrations(db) == ALL and verify(db) == []


def test_a_foreign_key_of_our_name_in_another_definition_is_replaced(yoyo, db, database_url):
    """Upstream's foreign keys take no action on delete, which makes any
    delete of a parent request fail: ours set the link to NULL."""
    yoyo("apply", "-r", BEFORE_007)
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN parent_request_id uuid REFERENCES api_requests (request_id)")
    result = migrate(database_url, "apply", "--batch")
    assert result.returncode == 0, result.stderr
    assert "api_requests_parent_request_id_fkey: replacing" in result.stdout
    assert constraints(db)["api_requests_parent_request_id_fkey"].endswith("ON DELETE SET NULL")
    assert verify(db) == []


def test_an_index_of_our_name_but_another_definition_stops_the_apply(yoyo, db, database_url):
    yoyo("apply", "-r", "004-optimize-conversation-window-functions")
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN account_id varchar(255)")
        cur.execute("CREATE INDEX idx_requests_account_timestamp ON api_requests (account_id)")
    before = snapshot(db)
    result = migrate(database_url, "apply", "--batch")
    assert_one_line_error(result, "an index named idx_requests_account_timestamp exists", "(account_id)",
                          "ALTER INDEX idx_requests_account_timestamp RENAME TO")
    assert applied_migrations(db) == ALL[:5]
    assert {row[0] for row in snapshot(db)["indexes"]} == {row[0] for row in before["indexes"]}


def test_a_retired_index_stays_while_its_replacement_is_missing(yoyo, db, database_url):
    yoyo("apply", "-r", "003-add-subtask-tracking")
    with db.cursor() as cur:
        cur.execute("DROP INDEX idx_requests_conversation_detail")
    before = snapshot(db)
    assert "idx_requests_conversation_timestamp" in {row[0] for row in before["indexes"]}
    result = migrate(database_url, "apply", "--batch")
    assert_one_line_error(result, "idx_requests_conversation_timestamp is not dropped",
                          "idx_requests_conversation_detail", "missing or INVALID")
    assert snapshot(db) == before  # 004 changed nothing: its index is kept whole
    assert applied_migrations(db) == ALL[:4]
