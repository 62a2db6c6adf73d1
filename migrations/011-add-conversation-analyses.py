"""
011 add conversation analyses: the queue and results of AI analyses of
conversations, and the audit log of the requests for them.

The API queues an analysis of a conversation's branch as a 'pending' row; a
worker claims the oldest pending one (FOR UPDATE SKIP LOCKED), marks it
'processing' and writes the result, or puts it back with one more retry.
"""

from nexus_migrate.steps import check, ddl, index, migration

__depends__ = {"010-add-temporal-awareness-indexes"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    # A table of this name from an earlier proxy, with another key and status,
    # is not one the worker can use, and CREATE TABLE IF NOT EXISTS would keep
    # it: refuse before changing anything.
    check(
        """
        DO $$
        DECLARE
            differs text;
        BEGIN
            SELECT string_agg(format('%s is %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ')
              INTO differs
              FROM pg_attribute a
              JOIN (VALUES ('id', 'bigint'), ('conversation_id', 'uuid'),
                           ('status', 'conversation_analysis_status')) AS want (name, type) ON want.name = a.attname
             WHERE a.attrelid = to_regclass('conversation_analyses') AND NOT a.attisdropped
               AND format_type(a.atttypid, NULL) <> want.type;
            IF differs IS NOT NULL THEN
                RAISE EXCEPTION '011: conversation_analyses is an older table of that name (%), which the analysis '
                    'worker cannot use; nothing was changed. Move it aside (ALTER TABLE conversation_analyses '
                    'RENAME TO conversation_analyses_old), apply again, then copy from it what you need', differs;
            END IF;
        END
        $$
        """,
    ),
    # PostgreSQL has no CREATE TYPE IF NOT EXISTS.
    ddl(
        """
        DO $$
        BEGIN
            IF to_regtype('conversation_analysis_status') IS NULL THEN
                CREATE TYPE conversation_analysis_status AS ENUM ('pending', 'processing', 'completed', 'failed');
            END IF;
        END
        $$
        """,
        "DROP TYPE IF EXISTS conversation_analysis_status",
    ),
    ddl(
        """
        CREATE TABLE IF NOT EXISTS conversation_analyses (
            id                     BIGSERIAL PRIMARY KEY,
            conversation_id        UUID NOT NULL,
            branch_id              VARCHAR(255) NOT NULL DEFAULT 'main',
            status                 conversation_analysis_status NOT NULL DEFAULT 'pending',
            model_used             VARCHAR(255) DEFAULT 'gemini-2.5-pro',
            analysis_content       TEXT,
            analysis_data          JSONB,
            raw_response           JSONB,
            error_message          TEXT,
            retry_count            INTEGER DEFAULT 0,
            generated_at           TIMESTAMPTZ,
            processing_duration_ms INTEGER,
            prompt_tokens          INTEGER,
            completion_tokens      INTEGER,
            created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (conversation_id, branch_id)
        );
        COMMENT ON TABLE conversation_analyses IS
            'AI analyses of conversation branches: the queue of pending ones and their results'
        """,
        "DROP TABLE IF EXISTS conversation_analyses",
    ),
    # The two columns that the first version of this table lacked, apart, so
    # that they complete such a table. (A rollback run again finds it gone.)
    ddl(
        """
        ALTER TABLE conversation_analyses
            ADD COLUMN IF NOT EXISTS completed_at  TIMESTAMPTZ,
            ADD COLUMN IF NOT EXISTS custom_prompt TEXT;
        COMMENT ON COLUMN conversation_analyses.custom_prompt IS 'The prompt asked for instead of the default one'
        """,
        """
        ALTER TABLE IF EXISTS conversation_analyses
            DROP COLUMN IF EXISTS custom_prompt,
            DROP COLUMN IF EXISTS completed_at
        """,
    ),
    # Upstream named this function trigger_set_timestamp() and replaced any
    # function of that name; this name can be no one else's.
    ddl(
        """
        CREATE OR REPLACE FUNCTION conversation_analyses_set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at = now();
            RETURN NEW;
        END
        $$
        """,
        "DROP FUNCTION IF EXISTS conversation_analyses_set_updated_at()",
    ),
    ddl(
        """
        CREATE OR REPLACE TRIGGER set_timestamp_on_conversation_analyses
            BEFORE UPDATE ON conversation_analyses
            FOR EACH ROW EXECUTE FUNCTION conversation_analyses_set_updated_at()
        """,
        "DROP TRIGGER IF EXISTS set_timestamp_on_conversation_analyses ON conversation_analyses",
    ),
    # The worker's claim of the oldest pending analysis. (Not built: upstream's
    # (conversation_id, branch_id) index, a copy of the UNIQUE constraint's,
    # and its index on custom_prompt IS NOT NULL, whose every key is true.)
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_conversation_analyses_status
            ON conversation_analyses (status) WHERE status = 'pending'
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_conversation_analyses_status",
    ),
    # request_id is the proxy's own request-id string, not the table's UUID.
    # Nothing reads this log (the API only appends to it), so it has no index
    # but its key; upstream built four.
    ddl(
        """
        CREATE TABLE IF NOT EXISTS analysis_audit_log (
            id              SERIAL PRIMARY KEY,
            event_type      VARCHAR(50) NOT NULL,
            outcome         VARCHAR(50) NOT NULL,
            conversation_id UUID NOT NULL,
            branch_id       VARCHAR(255) NOT NULL,
            domain          VARCHAR(255) NOT NULL,
            request_id      VARCHAR(255) NOT NULL,
            user_context    JSONB DEFAULT '{}',
            metadata        JSONB DEFAULT '{}',
            timestamp       TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE analysis_audit_log IS 'Every request for an analysis and its outcome, appended by the API'
        """,
        "DROP TABLE IF EXISTS analysis_audit_log",
    ),
)
