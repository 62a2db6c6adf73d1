"""
001 add conversation tracking: thread requests into conversations and branches.

The proxy hashes the last message of each request (current_message_hash) and the
one before it (parent_message_hash). Before it inserts a request, it looks up
earlier requests by those hashes to find the conversation and branch that the new
one continues.
"""

from nexus_migrate.steps import check, ddl, index, migration

__depends__ = {"000-init-database"}
# Outside a transaction: CREATE INDEX CONCURRENTLY cannot run in one. Each ddl
# step takes a short transaction of its own (see nexus_migrate/steps/).
__transactional__ = False

steps = migration(
    # One ALTER takes the table lock once. Constant defaults keep every ADD
    # COLUMN catalog-only: existing rows are not rewritten.
    ddl(
        """
        ALTER TABLE api_requests
            ADD COLUMN IF NOT EXISTS current_message_hash CHAR(64),
            ADD COLUMN IF NOT EXISTS parent_message_hash  CHAR(64),
            ADD COLUMN IF NOT EXISTS conversation_id      UUID,
            ADD COLUMN IF NOT EXISTS branch_id            VARCHAR(255) DEFAULT 'main',
            ADD COLUMN IF NOT EXISTS message_count        INTEGER DEFAULT 0;
        COMMENT ON COLUMN api_requests.current_message_hash IS
            'SHA-256 (hex) of the last message of the request';
        COMMENT ON COLUMN api_requests.parent_message_hash IS
            'SHA-256 (hex) of the message before it; NULL where a conversation starts';
        COMMENT ON COLUMN api_requests.conversation_id IS
            'Groups the requests of one conversation';
        COMMENT ON COLUMN api_requests.branch_id IS
            'Branch of the conversation this request continues';
        COMMENT ON COLUMN api_requests.message_count IS
            'Messages in the conversation up to and including this request'
        """,
        """
        ALTER TABLE api_requests
            DROP COLUMN IF EXISTS message_count,
            DROP COLUMN IF EXISTS branch_id,
            DROP COLUMN IF EXISTS conversation_id,
            DROP COLUMN IF EXISTS parent_message_hash,
            DROP COLUMN IF EXISTS current_message_hash
        """,
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_current_message_hash ON api_requests (current_message_hash)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_current_message_hash",
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_parent_message_hash ON api_requests (parent_message_hash)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_parent_message_hash",
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_id",
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_branch_id ON api_requests (branch_id)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_branch_id",
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_conversation_branch ON api_requests (conversation_id, branch_id)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_branch",
    ),
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_message_count ON api_requests (message_count)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_message_count",
    ),
    # Post-check: ADD COLUMN IF NOT EXISTS keeps a column that was already there,
    # whatever its type. The proxy's lookups compare these three with a uuid and
    # 64-character hex digests, so another type there is a failure, not a detail.
    check(
        """
        DO $$
        DECLARE
            actual text;
        BEGIN
            SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attname)
              INTO actual
              FROM pg_attribute
             WHERE attrelid = 'api_requests'::regclass AND NOT attisdropped
               AND attname IN ('conversation_id', 'current_message_hash', 'parent_message_hash');
            IF actual IS DISTINCT FROM
               'conversation_id uuid, current_message_hash character(64), parent_message_hash character(64)' THEN
                RAISE EXCEPTION '001: api_requests has %; the proxy needs conversation_id uuid and both hashes character(64)', actual;
            END IF;
        END
        $$
        """,
    ),
)
