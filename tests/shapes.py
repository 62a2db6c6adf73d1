"""Databases as operators of the original proxy have them, built the way they
were built then (docs: the schema facts, "Databases that already exist"), and
filled with sample traffic.

This SQL is the originals' shape, not ours: it restates no migration. It keeps
the originals' quirks on purpose: no api_key_hash/total_tokens/first_token_ms in
the original 000, a refresh function that cannot work, a chunk index that
repeats the UNIQUE constraint's, path VARCHAR(255) and nullable headers in the
proxy's own initializer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_migrate.benchmark.upstream import upstream_indexes

# The original 000-init-database script.
ORIGINAL_000 = """
CREATE TABLE api_requests (
    request_id UUID PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    domain VARCHAR(255) NOT NULL,
    method VARCHAR(10) NOT NULL,
    path VARCHAR(1024) NOT NULL,
    headers JSONB NOT NULL,
    body JSONB,
    request_type VARCHAR(50),
    api_key_id VARCHAR(50),
    model VARCHAR(100),
    ip_address VARCHAR(45),
    response_status INTEGER,
    response_headers JSONB,
    response_body JSONB,
    response_streaming BOOLEAN DEFAULT false,
    duration_ms INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_creation_input_tokens INTEGER DEFAULT 0,
    cache_read_input_tokens INTEGER DEFAULT 0,
    usage_data JSONB,
    tool_call_count INTEGER DEFAULT 0,
    error TEXT,
    completed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_api_requests_domain ON api_requests (domain);
CREATE INDEX idx_api_requests_timestamp ON api_requests (timestamp);
CREATE INDEX idx_api_requests_model ON api_requests (model);
CREATE INDEX idx_api_requests_request_type ON api_requests (request_type);

CREATE TABLE streaming_chunks (
    id SERIAL PRIMARY KEY,
    request_id UUID NOT NULL REFERENCES api_requests (request_id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    data TEXT NOT NULL,
    token_count INTEGER DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (request_id, chunk_index)
);
CREATE INDEX idx_streaming_chunks_request_id ON streaming_chunks (request_id, chunk_index);

CREATE MATERIALIZED VIEW hourly_stats AS
SELECT date_trunc('hour', timestamp) AS hour, domain, model,
       COUNT(*) AS request_count,
       SUM(input_tokens) AS total_input_tokens,
       SUM(output_tokens) AS total_output_tokens,
       SUM(cache_creation_input_tokens) AS total_cache_creation_tokens,
       SUM(cache_read_input_tokens) AS total_cache_read_tokens,
       AVG(duration_ms) AS avg_response_time,
       SUM(tool_call_count) AS total_tool_calls
  FROM api_requests
 WHERE timestamp > NOW() - INTERVAL '7 days'
 GROUP BY date_trunc('hour', timestamp), domain, model;
CREATE INDEX idx_hourly_stats_hour_domain ON hourly_stats (hour DESC, domain);

-- Without a unique index on hourly_stats this fails whenever it is called.
CREATE FUNCTION refresh_hourly_stats() RETURNS void AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY hourly_stats;
END;
$$ LANGUAGE plpgsql;

COMMENT ON TABLE api_requests IS 'Claude API requests and their responses';
COMMENT ON TABLE streaming_chunks IS 'Chunks of streamed responses';
COMMENT ON MATERIALIZED VIEW hourly_stats IS 'Hourly request statistics';
COMMENT ON COLUMN api_requests.input_tokens IS 'Input tokens';
COMMENT ON COLUMN api_requests.output_tokens IS 'Output tokens';
COMMENT ON COLUMN api_requests.cache_creation_input_tokens IS 'Tokens written to the cache';
COMMENT ON COLUMN api_requests.cache_read_input_tokens IS 'Tokens read from the cache';
COMMENT ON COLUMN api_requests.usage_data IS 'Usage object of the response';
"""

# The original 001-add-conversation-tracking script; guarded, so that it also
# ran on databases the proxy's initializer had built.
ORIGINAL_001 = """
ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS current_message_hash CHAR(64);
ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS parent_message_hash CHAR(64);
ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS conversation_id UUID;
ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS branch_id VARCHAR(255) DEFAULT 'main';
ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS message_count INTEGER DEFAULT 0;
CREATE INDEX IF NOT EXISTS idx_requests_current_message_hash ON api_requests (current_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_parent_message_hash ON api_requests (parent_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id);
CREATE INDEX IF NOT EXISTS idx_requests_branch_id ON api_requests (branch_id);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_branch ON api_requests (conversation_id, branch_id);
CREATE INDEX IF NOT EXISTS idx_requests_message_count ON api_requests (message_count);
COMMENT ON COLUMN api_requests.current_message_hash IS 'Hash of the last message';
COMMENT ON COLUMN api_requests.parent_message_hash IS 'Hash of the previous message';
COMMENT ON COLUMN api_requests.conversation_id IS 'Conversation of the request';
COMMENT ON COLUMN api_requests.branch_id IS 'Branch within the conversation';
COMMENT ON COLUMN api_requests.message_count IS 'Messages so far';
"""

# The columns of the proxy's start-up initializer, which later versions kept.
_INITIALIZER_COLUMNS = """
    request_id UUID PRIMARY KEY,
    domain VARCHAR(255) NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    method VARCHAR(10) NOT NULL,
    path VARCHAR(255) NOT NULL,
    headers JSONB,
    body JSONB,
    api_key_hash VARCHAR(50),
    model VARCHAR(100),
    request_type VARCHAR(50),
    response_status INTEGER,
    response_headers JSONB,
    response_body JSONB,
    response_streaming BOOLEAN DEFAULT false,
    input_tokens INTEGER DEFAULT 0,
    output_tokens INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    cache_creation_input_tokens INTEGER DEFAULT 0,
    cache_read_input_tokens INTEGER DEFAULT 0,
    usage_data JSONB,
    first_token_ms INTEGER,
    duration_ms INTEGER,
    error TEXT,
    tool_call_count INTEGER DEFAULT 0,
    current_message_hash CHAR(64),
    parent_message_hash CHAR(64),
    conversation_id UUID,
    created_at TIMESTAMPTZ DEFAULT NOW()"""

_CHUNKS_AS_IN_000 = """
CREATE TABLE IF NOT EXISTS streaming_chunks (
    id SERIAL PRIMARY KEY,
    request_id UUID NOT NULL REFERENCES api_requests (request_id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    data TEXT NOT NULL,
    token_count INTEGER DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (request_id, chunk_index)
);"""

# The proxy's own start-up initializer.
INITIALIZER = f"""
CREATE TABLE IF NOT EXISTS api_requests ({_INITIALIZER_COLUMNS}
);
{_CHUNKS_AS_IN_000}
CREATE INDEX IF NOT EXISTS idx_api_requests_domain_timestamp ON api_requests (domain, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_api_requests_timestamp ON api_requests (timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_streaming_chunks_request_id ON streaming_chunks (request_id, chunk_index);
CREATE INDEX IF NOT EXISTS idx_requests_current_message_hash ON api_requests (current_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_parent_message_hash ON api_requests (parent_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id);
"""

# The columns that later versions of the proxy's init SQL add to the
# initializer's, with the constraints that come with them.
_LATER_COLUMNS = """,
    branch_id VARCHAR(255) DEFAULT 'main',
    message_count INTEGER DEFAULT 0,
    parent_task_request_id UUID REFERENCES api_requests (request_id),
    is_subtask BOOLEAN DEFAULT false,
    task_tool_invocation JSONB,
    account_id VARCHAR(255),
    parent_request_id UUID REFERENCES api_requests (request_id),
    system_hash VARCHAR(64),
    CONSTRAINT chk_parent_request_not_self CHECK (parent_request_id != request_id)"""

_ANALYSIS_STATUS = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'conversation_analysis_status') THEN
        CREATE TYPE conversation_analysis_status AS ENUM ('pending', 'processing', 'completed', 'failed');
    END IF;
END $$;
CREATE OR REPLACE FUNCTION trigger_set_timestamp() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;"""

# conversation_analyses as the first 011 made it: no completed_at, no custom_prompt.
_FIRST_ANALYSES = """
CREATE TABLE IF NOT EXISTS conversation_analyses (
    id BIGSERIAL PRIMARY KEY,
    conversation_id UUID NOT NULL,
    branch_id VARCHAR(255) NOT NULL DEFAULT 'main',
    status conversation_analysis_status NOT NULL DEFAULT 'pending',
    model_used VARCHAR(255) DEFAULT 'gemini-2.5-pro',
    analysis_content TEXT,
    analysis_data JSONB,
    raw_response JSONB,
    error_message TEXT,
    retry_count INTEGER DEFAULT 0,
    generated_at TIMESTAMPTZ,
    processing_duration_ms INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (conversation_id, branch_id)
);
DROP TRIGGER IF EXISTS set_timestamp_on_conversation_analyses ON conversation_analyses;
CREATE TRIGGER set_timestamp_on_conversation_analyses BEFORE UPDATE ON conversation_analyses
    FOR EACH ROW EXECUTE FUNCTION trigger_set_timestamp();
CREATE INDEX IF NOT EXISTS idx_conversation_analyses_status ON conversation_analyses (status) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_conversation_analyses_conversation ON conversation_analyses (conversation_id, branch_id);"""

# The columns and the audit log that the last 011 adds to the first.
_LAST_ANALYSES = """
ALTER TABLE conversation_analyses ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ;
ALTER TABLE conversation_analyses ADD COLUMN IF NOT EXISTS custom_prompt TEXT;
CREATE INDEX IF NOT EXISTS idx_conversation_analyses_has_custom_prompt ON conversation_analyses ((custom_prompt IS NOT NULL))
    WHERE custom_prompt IS NOT NULL;
CREATE TABLE IF NOT EXISTS analysis_audit_log (
    id SERIAL PRIMARY KEY,
    event_type VARCHAR(50) NOT NULL,
    outcome VARCHAR(50) NOT NULL,
    conversation_id UUID NOT NULL,
    branch_id VARCHAR(255) NOT NULL,
    domain VARCHAR(255) NOT NULL,
    request_id VARCHAR(255) NOT NULL,
    user_context JSONB DEFAULT '{}',
    metadata JSONB DEFAULT '{}',
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_audit_conversation ON analysis_audit_log (conversation_id, branch_id);
CREATE INDEX IF NOT EXISTS idx_audit_domain ON analysis_audit_log (domain);
CREATE INDEX IF NOT EXISTS idx_audit_timestamp ON analysis_audit_log (timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_event_type ON analysis_audit_log (event_type);"""

# The init SQL of a later proxy version, from before the last 011: indexes
# under other names, and the first conversation_analyses.
CONSOLIDATED = f"""
CREATE TABLE IF NOT EXISTS api_requests ({_INITIALIZER_COLUMNS}{_LATER_COLUMNS}
);
{_CHUNKS_AS_IN_000}
CREATE INDEX IF NOT EXISTS idx_requests_domain ON api_requests (domain);
CREATE INDEX IF NOT EXISTS idx_requests_timestamp ON api_requests (timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_requests_model ON api_requests (model);
CREATE INDEX IF NOT EXISTS idx_requests_request_type ON api_requests (request_type);
CREATE INDEX IF NOT EXISTS idx_requests_parent_hash ON api_requests (parent_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_current_hash ON api_requests (current_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id);
CREATE INDEX IF NOT EXISTS idx_requests_branch ON api_requests (branch_id);
CREATE INDEX IF NOT EXISTS idx_requests_domain_timestamp ON api_requests (domain, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_requests_account_id ON api_requests (account_id);
CREATE INDEX IF NOT EXISTS idx_requests_parent_task ON api_requests (parent_task_request_id)
    WHERE parent_task_request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_chunks_request_id ON streaming_chunks (request_id);
{_ANALYSIS_STATUS}
{_FIRST_ANALYSES}
"""

# Today's init SQL: what a fresh install of the current proxy has.
INIT_SQL_TODAY = f"""
CREATE TABLE IF NOT EXISTS api_requests ({_INITIALIZER_COLUMNS}{_LATER_COLUMNS}
);
{_CHUNKS_AS_IN_000}
CREATE INDEX IF NOT EXISTS idx_requests_domain ON api_requests (domain);
CREATE INDEX IF NOT EXISTS idx_requests_timestamp ON api_requests (timestamp);
CREATE INDEX IF NOT EXISTS idx_requests_model ON api_requests (model);
CREATE INDEX IF NOT EXISTS idx_requests_request_type ON api_requests (request_type);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id);
CREATE INDEX IF NOT EXISTS idx_requests_branch_id ON api_requests (branch_id);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_branch ON api_requests (conversation_id, branch_id);
CREATE INDEX IF NOT EXISTS idx_requests_message_count ON api_requests (message_count);
CREATE INDEX IF NOT EXISTS idx_requests_parent_hash ON api_requests (parent_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_current_hash ON api_requests (current_message_hash);
CREATE INDEX IF NOT EXISTS idx_requests_account_id ON api_requests (account_id);
CREATE INDEX IF NOT EXISTS idx_requests_conversation_timestamp_id ON api_requests (conversation_id, timestamp DESC, request_id DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_requests_conversation_subtask ON api_requests (conversation_id, is_subtask, timestamp ASC, request_id ASC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_requests_request_id ON api_requests (request_id);
CREATE INDEX IF NOT EXISTS idx_api_requests_parent_request_id ON api_requests (parent_request_id);
CREATE INDEX IF NOT EXISTS idx_api_requests_system_hash ON api_requests (system_hash);
CREATE INDEX IF NOT EXISTS idx_api_requests_response_body_task ON api_requests USING gin (response_body)
    WHERE response_body IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_api_requests_domain_timestamp_response ON api_requests (domain, timestamp DESC)
    WHERE response_body IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_api_requests_task_name ON api_requests ((response_body::text))
    WHERE response_body IS NOT NULL AND response_body::text LIKE '%"name":"Task"%';
CREATE INDEX IF NOT EXISTS idx_chunks_request_id ON streaming_chunks (request_id);
{_ANALYSIS_STATUS}
{_FIRST_ANALYSES}
{_LAST_ANALYSES}
"""

_UPSTREAM_INDEXES_003_010 = "".join(f"{statement};\n" for statement in upstream_indexes(since="003"))

# The upstream scripts 003 to 011 run in order after the original 000 and 001
# (whose 002 never committed): their schema statements as the scripts ran them,
# the columns first, then their indexes (written once, in the benchmark).
UPSTREAM_003_011 = f"""
ALTER TABLE api_requests
    ADD COLUMN IF NOT EXISTS parent_task_request_id UUID REFERENCES api_requests (request_id),
    ADD COLUMN IF NOT EXISTS is_subtask BOOLEAN DEFAULT false,
    ADD COLUMN IF NOT EXISTS task_tool_invocation JSONB;
COMMENT ON COLUMN api_requests.parent_task_request_id IS 'Request that spawned this sub-task';
COMMENT ON COLUMN api_requests.is_subtask IS 'Whether this is a sub-task';
COMMENT ON COLUMN api_requests.task_tool_invocation IS 'Task tool call details';

DROP INDEX IF EXISTS idx_requests_conversation_timestamp;

ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS account_id VARCHAR(255);

ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS system_hash VARCHAR(64);
COMMENT ON COLUMN api_requests.system_hash IS 'Hash of the system prompt alone';

ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS parent_request_id UUID REFERENCES api_requests (request_id);
COMMENT ON COLUMN api_requests.parent_request_id IS 'Immediate parent request';
ALTER TABLE api_requests ADD CONSTRAINT chk_parent_request_not_self CHECK (parent_request_id != request_id);

{_UPSTREAM_INDEXES_003_010}
{_ANALYSIS_STATUS}
{_FIRST_ANALYSES}
{_LAST_ANALYSES}
"""

# conversation_analyses as the reverted 009 made it: a text key, a status that
# a CHECK keeps, content and metadata columns, one analysis at a time per branch.
REVERTED_009_ANALYSES = """
CREATE TABLE conversation_analyses (
    id VARCHAR(64) PRIMARY KEY,
    conversation_id UUID NOT NULL,
    branch_id VARCHAR(255) NOT NULL DEFAULT 'main',
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    content TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    EXCLUDE USING btree (conversation_id WITH =, branch_id WITH =) WHERE (status IN ('pending', 'processing'))
);
INSERT INTO conversation_analyses (id, conversation_id, status, content)
SELECT 'analysis-' || c, md5('conversation ' || c)::uuid, 'completed', 'Summary ' || c FROM generate_series(0, 9) AS c;
"""

# Sample traffic, one request per g: a value for each column a shape may have.
# Timestamps reach back 10 days, so hourly_stats leaves some out; every tenth
# request starts a conversation, and every fourth was streamed.
N_REQUESTS = 3000
REQUEST_VALUES = {
    "request_id": "md5('request' || g)::uuid",
    "timestamp": "now() - make_interval(mins => g * 5)",
    "domain": "(ARRAY['team.example.com', 'ci.example.com', 'lab.example.com'])[1 + g % 3]",
    "method": "'POST'",
    "path": "CASE WHEN g % 9 = 0 THEN '/v1/messages/count_tokens' ELSE '/v1/messages' END",
    "headers": "jsonb_build_object('content-type', 'application/json', 'x-request', g)",
    "body": "jsonb_build_object('model', 'claude-sonnet-4', 'messages', jsonb_build_array("
            "jsonb_build_object('role', 'user', 'content', repeat('lorem ipsum ', 40) || g)))",
    "request_type": "(ARRAY['inference', 'query_evaluation', 'quota'])[1 + g % 3]",
    "api_key_id": "'key-' || g % 5",
    "api_key_hash": "md5('key' || g % 5)",
    "model": "CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['claude-sonnet-4', 'claude-opus-4'])[1 + g % 2] END",
    "ip_address": "'10.0.0.' || g % 250",
    "response_status": "CASE WHEN g % 50 = 0 THEN 529 ELSE 200 END",
    "response_headers": "jsonb_build_object('request-id', 'req_' || g)",
    "response_body": "jsonb_build_object('content', jsonb_build_array(jsonb_build_object("
                     "'type', 'text', 'text', repeat('dolor sit amet ', 60))))",
    "response_streaming": "g % 4 = 0",
    "duration_ms": "100 + g % 3000",
    "input_tokens": "10 + g % 500",
    "output_tokens": "5 + g % 300",
    "total_tokens": "15 + g % 500 + g % 300",
    "first_token_ms": "50 + g % 200",
    "cache_creation_input_tokens": "g % 11",
    "cache_read_input_tokens": "g % 13",
    "usage_data": "jsonb_build_object('input_tokens', 10 + g % 500, 'output_tokens', 5 + g % 300)",
    "tool_call_count": "g % 3",
    "error": "CASE WHEN g % 50 = 0 THEN 'overloaded' END",
    "completed_at": "now() - make_interval(mins => g * 5) + interval '2 seconds'",
    "created_at": "now() - make_interval(mins => g * 5)",
    "current_message_hash": "encode(sha256(('message ' || g)::bytea), 'hex')",
    "parent_message_hash": "CASE WHEN g % 10 <> 1 THEN encode(sha256(('message ' || (g - 1))::bytea), 'hex') END",
    "conversation_id": "md5('conversation ' || (g - 1) / 10)::uuid",
    "branch_id": "CASE WHEN g % 17 = 0 THEN 'branch_1' ELSE 'main' END",
    "message_count": "(g - 1) % 10 + 1",
    "parent_task_request_id": "CASE WHEN g % 20 = 0 THEN md5('request' || (g - 1))::uuid END",
    "is_subtask": "g % 20 = 0",
    "task_tool_invocation": "CASE WHEN g % 20 = 0 THEN jsonb_build_object('tool', 'Task') END",
    "account_id": "'account-' || g % 3",
    "parent_request_id": "CASE WHEN g % 10 <> 1 THEN md5('request' || (g - 1))::uuid END",
    "system_hash": "encode(sha256(('system ' || g % 4)::bytea), 'hex')",
}

CHUNKS = f"""
INSERT INTO streaming_chunks (request_id, chunk_index, timestamp, data, token_count)
SELECT md5('request' || g)::uuid, i, now() - make_interval(mins => g * 5) + make_interval(secs => i),
       'data: {{"type": "content_block_delta", "index": ' || i || '}}', 1
  FROM generate_series(1, {N_REQUESTS}) AS g, generate_series(0, 4) AS i
 WHERE g % 4 = 0"""

ANALYSES = f"""
INSERT INTO conversation_analyses (conversation_id, status, model_used, analysis_content, analysis_data,
                                   prompt_tokens, completion_tokens)
SELECT md5('conversation ' || c)::uuid,
       (ARRAY['pending', 'processing', 'completed', 'failed'])[1 + c % 4]::conversation_analysis_status,
       'gemini-2.5-pro', 'Summary of conversation ' || c, jsonb_build_object('score', c % 10),
       1000 + c, 200 + c
  FROM generate_series(0, {N_REQUESTS // 10 - 1}) AS c
 WHERE c % 3 = 0"""

AUDIT_LOG = """
INSERT INTO analysis_audit_log (event_type, outcome, conversation_id, branch_id, domain, request_id, metadata)
SELECT 'ANALYSIS_REQUEST', 'SUCCESS', conversation_id, branch_id, 'team.example.com', 'req_' || id,
       jsonb_build_object('attempt', 1)
  FROM conversation_analyses"""


@dataclass(frozen=True)
class Shape:
    scripts: tuple[str, ...]  # run in order, as the operator did
    # our index name -> the operator's index that serves it, so ours is not built
    served_by: dict[str, str] = field(default_factory=dict)


SHAPES = {
    "original-000": Shape((ORIGINAL_000,)),
    "original-000-001": Shape((ORIGINAL_000, ORIGINAL_001)),
    "initializer": Shape((INITIALIZER,), served_by={
        "idx_api_requests_domain_newest_first": "idx_api_requests_domain_timestamp"}),
    "initializer-then-001": Shape((INITIALIZER, ORIGINAL_001), served_by={
        "idx_api_requests_domain_newest_first": "idx_api_requests_domain_timestamp"}),
    "consolidated": Shape((CONSOLIDATED,), served_by={
        "idx_api_requests_domain": "idx_requests_domain",
        "idx_api_requests_timestamp": "idx_requests_timestamp",
        "idx_api_requests_model": "idx_requests_model",
        "idx_api_requests_request_type": "idx_requests_request_type",
        "idx_requests_current_message_hash": "idx_requests_current_hash",
        "idx_requests_parent_message_hash": "idx_requests_parent_hash",
        "idx_requests_branch_id": "idx_requests_branch",
        "idx_requests_parent_task_request_id": "idx_requests_parent_task",
        "idx_api_requests_domain_newest_first": "idx_requests_domain_timestamp",
    }),
    "init-sql-today": Shape((INIT_SQL_TODAY,), served_by={
        "idx_api_requests_domain": "idx_requests_domain",
        "idx_api_requests_timestamp": "idx_requests_timestamp",
        "idx_api_requests_model": "idx_requests_model",
        "idx_api_requests_request_type": "idx_requests_request_type",
        "idx_requests_current_message_hash": "idx_requests_current_hash",
        "idx_requests_parent_message_hash": "idx_requests_parent_hash",
    }),
    "upstream-000-011": Shape((ORIGINAL_000, ORIGINAL_001, UPSTREAM_003_011)),
}


def build(conn, shape: Shape) -> None:
    """Create the shape in conn's database and fill it with traffic."""
    with conn.cursor() as cur:
        for script in shape.scripts:
            cur.execute(script)
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'api_requests'::regclass "
                    "AND attnum > 0 AND NOT attisdropped")
        columns = [name for (name,) in cur.fetchall()]
        unknown = set(columns) - set(REQUEST_VALUES)
        assert not unknown, f"no sample value for {unknown}"
        cur.execute(f"INSERT INTO api_requests ({', '.join(columns)}) "
                    f"SELECT {', '.join(REQUEST_VALUES[c] for c in columns)} "
                    f"FROM generate_series(1, {N_REQUESTS}) AS g")
        cur.execute(CHUNKS)
        # (the analyses of 011's table; the reverted 009's brings its own)
        cur.execute("SELECT to_regclass('conversation_analyses') IS NOT NULL "
                    "AND to_regtype('conversation_analysis_status') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute(ANALYSES)
        cur.execute("SELECT to_regclass('analysis_audit_log') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute(AUDIT_LOG)
        cur.execute("SELECT to_regclass('hourly_stats') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("REFRESH MATERIALIZED VIEW hourly_stats")
        cur.execute("ANALYZE")
