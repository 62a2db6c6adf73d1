"""verify() notices what an operator would: each kind of drift, in plain words."""

from __future__ import annotations

from nexus_migrate.schema import verify

from .migrations import ALL


def test_nothing_applied_promises_nothing(db):
    assert verify(db) == []


def test_each_kind_of_drift_is_named(yoyo, db):
    yoyo("apply")
    with db.cursor() as cur:
        cur.execute("""
            ALTER TABLE api_requests ALTER COLUMN branch_id TYPE varchar(100);
            ALTER TABLE api_requests ALTER COLUMN total_tokens DROP DEFAULT;
            ALTER TABLE api_requests ALTER COLUMN method DROP NOT NULL;
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
        "column api_requests.method is nullable, expected NOT NULL",
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
