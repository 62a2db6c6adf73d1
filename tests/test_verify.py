"""verify() notices what an operator would: each kind of drift, in plain words;
compare() also notes the differences it tolerates, and why."""

from __future__ import annotations

import re

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.proxy.verify import TOLERATED, compare, verify

from .conftest import SECRET, assert_one_line_error, run_script
from .migrations import ALL, MIGRATIONS

BEFORE_012 = "011-add-conversation-analyses"


def test_nothing_applied_promises_nothing(db):
    assert verify(db) == []


def test_each_kind_of_drift_is_named(yoyo, db):
    yoyo("apply", "-r", BEFORE_012)  # 012 drops some of the indexes drifted here
    with db.cursor() as cur:
        cur.execute("""
            ALTER TABLE api_requests ALTER COLUMN branch_id TYPE varchar(100);
            ALTER TABLE api_requests ALTER COLUMN total_tokens DROP DEFAULT;
            ALTER TABLE api_requests ALTER COLUMN message_count SET NOT NULL;
            ALTER TABLE api_requests DROP COLUMN first_token_ms;
            DROP INDEX idx_requests_message_count;
            DROP INDEX idx_api_requests_model;
            CREATE INDEX idx_api_requests_model ON api_requests (model, domain);
            DROP INDEX idx_hourly_stats_hour_domain_model;
            COMMENT ON COLUMN api_requests.usage_data IS NULL;
            DROP FUNCTION refresh_hourly_stats();
            ALTER TABLE streaming_chunks DROP CONSTRAINT streaming_chunks_request_id_fkey;
        """)
    assert sorted(verify(db)) == sorted([
        "column api_requests.branch_id is character varying(100), expected character varying(255)",
        "column api_requests.total_tokens defaults to nothing, expected 0",
        "column api_requests.message_count is NOT NULL, expected nullable",
        "column api_requests.first_token_ms is missing",
        "index idx_requests_message_count is missing",
        "index idx_api_requests_model is ON api_requests (model, domain), expected ON api_requests (model)",
        "index idx_hourly_stats_hour_domain_model is missing",
        "api_requests.usage_data has no comment",
        "function refresh_hourly_stats() is missing",
        "table streaming_chunks lacks the constraint "
        "FOREIGN KEY (request_id) REFERENCES api_requests(request_id) ON DELETE CASCADE",
    ])


def test_an_invalid_index_and_a_missing_table_are_named(yoyo, db):
    yoyo("apply", "-r", ALL[0])
    with db.cursor() as cur:
        cur.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_api_requests_domain'::regclass")
        cur.execute("DROP TABLE streaming_chunks")
    problems = verify(db)
    assert "index idx_api_requests_domain is INVALID (a failed concurrent build?): rebuild it with REINDEX INDEX CONCURRENTLY idx_api_requests_domain" in problems
    assert "streaming_chunks is missing" in problems


def test_a_fresh_database_has_neither_problems_nor_notes(yoyo, db):
    yoyo("apply")
    assert compare(db) == compare(db, ALL)
    report = compare(db)
    assert (report.problems, report.notes) == ([], [])


def test_differences_the_proxy_cannot_notice_are_notes_with_their_reason(yoyo, db):
    """The shapes of databases built before this project: a wider string type,
    a missing NOT NULL, a default where the schema has none."""
    yoyo("apply")
    with db.cursor() as cur:
        cur.execute("""
            ALTER TABLE api_requests ALTER COLUMN request_type TYPE varchar(80);
            ALTER TABLE api_requests ALTER COLUMN api_key_hash TYPE text;
            ALTER TABLE api_requests ALTER COLUMN headers DROP NOT NULL;
            ALTER TABLE api_requests ALTER COLUMN input_tokens SET DEFAULT 0;
        """)
    report = compare(db)
    assert report.problems == []
    assert sorted(report.notes) == sorted([
        f"column api_requests.request_type is character varying(80), expected character varying(50): {TOLERATED['wider']}",
        f"column api_requests.api_key_hash is text, expected character varying(64): {TOLERATED['wider']}",
        f"column api_requests.headers is nullable, expected NOT NULL: {TOLERATED['nullable']}",
        f"column api_requests.input_tokens defaults to 0, expected nothing: {TOLERATED['default']}",
    ])


def test_an_index_under_another_name_counts_and_a_duplicate_is_pointed_out(yoyo, db):
    yoyo("apply", "-r", BEFORE_012)  # 012 drops some of the indexes drifted here
    with db.cursor() as cur:
        cur.execute("""
            DROP INDEX idx_api_requests_timestamp;
            CREATE INDEX idx_requests_timestamp ON api_requests (timestamp DESC);
            CREATE INDEX idx_streaming_chunks_request_id ON streaming_chunks (request_id, chunk_index);
            CREATE INDEX domain_a ON api_requests (domain);
            CREATE INDEX domain_b ON api_requests (domain);
            CREATE INDEX domain_and_model ON api_requests (domain, model);
        """)
    report = compare(db)
    assert report.problems == []
    assert sorted(without_sizes(report.notes)) == sorted([
        "index idx_api_requests_timestamp is present as idx_requests_timestamp, which has the same columns",
        # a promised index or a constraint's is never the one to drop; of two twins only one is named
        "index domain_a repeats idx_api_requests_domain (same key columns): every write to api_requests "
        "updates both; DROP INDEX CONCURRENTLY domain_a would save that work",
        "index domain_b repeats idx_api_requests_domain (same key columns): every write to api_requests "
        "updates both; DROP INDEX CONCURRENTLY domain_b would save that work",
        "index idx_streaming_chunks_request_id repeats streaming_chunks_request_id_chunk_index_key (same key "
        "columns): every write to streaming_chunks updates both; DROP INDEX CONCURRENTLY "
        "idx_streaming_chunks_request_id would save that work",
    ])


def test_of_two_identical_indexes_only_one_is_called_redundant(yoyo, db):
    yoyo("apply", "-r", ALL[0])
    with db.cursor() as cur:
        cur.execute("CREATE INDEX twin_a ON api_requests (api_key_hash); CREATE INDEX twin_b ON api_requests (api_key_hash)")
    assert [note.split(" (")[0] for note in compare(db).notes] == ["index twin_b"]
    assert without_sizes(compare(db).notes)[0].startswith("index twin_b repeats twin_a")


def without_sizes(notes: list[str]) -> list[str]:
    """The notes with each index's size taken out (it depends on the server,
    and grows as a GIN index merges its pending list)."""
    return [re.sub(r" \(\d+ (bytes|kB|MB|GB)\)", "", note) for note in notes]


def test_indexes_that_serve_no_query_are_noted_with_size_reason_and_drop(yoyo, db):
    """Two that upstream's scripts built: a GIN index no query of the proxy's
    can use, and one whose predicate matches no row."""
    yoyo("apply")
    with db.cursor() as cur:
        cur.execute("""
            CREATE INDEX idx_api_requests_response_body_gin ON api_requests USING gin (response_body);
            CREATE INDEX idx_api_requests_task_name ON api_requests ((response_body::text))
                WHERE response_body IS NOT NULL AND response_body::text LIKE '%"name":"Task"%';
            CREATE INDEX response_body_btree ON api_requests ((response_body::text));
        """)
    report = compare(db)
    assert report.problems == []
    notes = sorted(report.notes)
    assert all(re.match(r"index \w+ \(\d+ (bytes|kB)\) serves no query: ", note) for note in notes), notes
    assert [note.split(" serves no query: ")[0] for note in without_sizes(notes)] == [
        "index idx_api_requests_response_body_gin", "index idx_api_requests_task_name"]
    assert "response_body->'content' @>" in notes[0] and "is empty" in notes[1]
    assert all(note.endswith(f"DROP INDEX CONCURRENTLY {name} would save its upkeep on every write to api_requests")
               for note, name in zip(notes, ["idx_api_requests_response_body_gin", "idx_api_requests_task_name"]))


def migrate_verify(database_url: str | None, *args: str):
    return run_script(PROJECT_ROOT, "migrate", "verify", *args, DATABASE_URL=database_url)


def test_the_verify_command_says_ok_and_exits_0_on_a_migrated_database(yoyo, database_url):
    yoyo("apply")
    result = migrate_verify(database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["OK: the database has everything its migrations promise"]


def test_the_verify_command_prints_each_difference_and_exits_1(yoyo, db, database_url):
    yoyo("apply", "-r", BEFORE_012)  # 012 drops some of the indexes drifted here
    with db.cursor() as cur:
        cur.execute("""
            DROP INDEX idx_requests_branch_id;
            ALTER TABLE api_requests ALTER COLUMN total_tokens DROP DEFAULT;
            ALTER TABLE api_requests ALTER COLUMN headers DROP NOT NULL;
        """)
    result = migrate_verify(database_url)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"note: column api_requests.headers is nullable, expected NOT NULL: {TOLERATED['nullable']}",
        "column api_requests.total_tokens defaults to nothing, expected 0",
        "index idx_requests_branch_id is missing",
        "2 differences from what the migrations promise",
    ]


def test_verify_all_tells_what_apply_would_still_add(yoyo, database_url):
    yoyo("apply", "-r", ALL[-3])
    assert migrate_verify(database_url).returncode == 0
    result = migrate_verify(database_url, "--all")
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if not line.startswith("note: ")]
    assert problems == [  # what 011 would add; nothing is named twice
        "conversation_analyses is missing",
        "analysis_audit_log is missing",
        "function conversation_analyses_set_updated_at() is missing",
        "type conversation_analysis_status is missing",
        "4 differences from what the migrations promise",
    ]
    # and the indexes 012 would drop, as indexes no query uses
    [migration_012] = [m for m in MIGRATIONS if m.id == ALL[-1]]
    migration_012.load()
    noted = {line.split()[2] for line in result.stdout.splitlines() if " serves no query: " in line}
    assert noted == {step.name for step in migration_012.module.steps}


def test_the_verify_command_fails_in_one_line():
    unreachable = migrate_verify(f"postgresql://nexus:{SECRET}@127.0.0.1:1/x")
    assert_one_line_error(unreachable, "nothing accepts connections at 127.0.0.1:1")
    assert unreachable.returncode == 2
    assert_one_line_error(migrate_verify("postgresql://nexus@127.0.0.1:1/x", "--bogus"), "--bogus", "--help")


def test_verify_help_fits_on_one_screen_and_needs_no_database():
    result = migrate_verify(None, "--help")
    assert result.returncode == 0
    assert "verify" in result.stdout and len(result.stdout.splitlines()) <= 24
