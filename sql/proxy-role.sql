-- The rights of the proxy's database role, nexus_proxy: read and write rows,
-- nothing else. It may not create, alter or drop anything, nor touch yoyo's
-- tables; migrations run as the role that owns the schema.
--
-- Run as that owner, after the migrations (docs/operating.md, "Least privilege"):
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/proxy-role.sql
-- The role must exist first (a DBA: CREATE ROLE nexus_proxy LOGIN PASSWORD '...').
-- A migration that adds a table or sequence adds it here too; the test suite
-- checks that every one of them is granted.

-- requests and their streamed chunks: the proxy inserts, completes, reads and
-- deletes them (ON CONFLICT DO NOTHING needs no more than INSERT)
GRANT SELECT, INSERT, UPDATE, DELETE ON api_requests, streaming_chunks TO nexus_proxy;

-- streaming_chunks.id is a serial: inserting a chunk takes its next value
GRANT USAGE ON SEQUENCE streaming_chunks_id_seq TO nexus_proxy;

-- the analysis queue: the API queues analyses, the worker claims and completes
-- them; bigserial keys take their sequence's next value
GRANT SELECT, INSERT, UPDATE, DELETE ON conversation_analyses TO nexus_proxy;
GRANT USAGE ON SEQUENCE conversation_analyses_id_seq TO nexus_proxy;

-- the audit log of analysis requests: the API appends to it and nothing else;
-- a log its writer could change or erase would prove nothing
GRANT INSERT ON analysis_audit_log TO nexus_proxy;
GRANT USAGE ON SEQUENCE analysis_audit_log_id_seq TO nexus_proxy;

-- api_requests_subtask_moves (008: where each sub-task row was before it
-- moved, for 008's rollback) is the migrations' own record: not granted

-- the dashboard reads the hourly rollup; refreshing it is the owner's job
-- (REFRESH MATERIALIZED VIEW needs ownership: see docs/operating.md)
GRANT SELECT ON hourly_stats TO nexus_proxy;
