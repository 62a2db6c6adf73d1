"""
007 add parent request id: each request points at the one it continues.

The proxy sets parent_request_id to the request whose last message the new
request's previous message is (by message hash), or, for a sub-task's first
request, to the request that called the Task tool.

Older rows are filled in the same way (docs/design.md, "Backfills"), where
upstream's 007 took any row with the hash, later ones and retries included.
"""

from nexus_migrate.steps import backfill, constraint, ddl, index, migration

__depends__ = {"006-split-conversation-hashes"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        """
        ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS parent_request_id UUID;
        COMMENT ON COLUMN api_requests.parent_request_id IS 'The request this one continues in its conversation'
        """,
        "ALTER TABLE api_requests DROP COLUMN IF EXISTS parent_request_id",
    ),
    # The foreign key's look-up when a request is deleted: without it, each
    # deleted row would cost a scan of the whole table for its children.
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_api_requests_parent_request_id
            ON api_requests (parent_request_id) WHERE parent_request_id IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_api_requests_parent_request_id",
    ),
    # ON DELETE SET NULL, as in 003: deleting an old request makes the next
    # one the start of its chain instead of failing (NO ACTION) or deleting
    # the rest of the conversation (CASCADE).
    constraint(
        """
        ALTER TABLE api_requests ADD CONSTRAINT api_requests_parent_request_id_fkey
            FOREIGN KEY (parent_request_id) REFERENCES api_requests (request_id) ON DELETE SET NULL NOT VALID
        """,
        "ALTER TABLE api_requests DROP CONSTRAINT IF EXISTS api_requests_parent_request_id_fkey",
    ),
    constraint(
        """
        ALTER TABLE api_requests ADD CONSTRAINT chk_parent_request_not_self
            CHECK (parent_request_id <> request_id) NOT VALID
        """,
        "ALTER TABLE api_requests DROP CONSTRAINT IF EXISTS chk_parent_request_not_self",
    ),
    # The parent of a request with a parent message hash is the latest
    # request of the same domain and conversation, not after it, whose
    # current hash is that hash (ties: the largest request_id); a sub-task's
    # first request (one user message, linked by 003) continues the request
    # that called the Task tool. No match: the row stays NULL.
    backfill(
        "007 parent requests",
        find="""
            SELECT found.request_id, found.parent_request_id
              FROM (SELECT t.request_id,
                           CASE WHEN t.parent_message_hash IS NULL THEN t.parent_task_request_id
                                ELSE (SELECT p.request_id
                                        FROM api_requests p
                                       WHERE p.current_message_hash = t.parent_message_hash
                                         AND p.domain = t.domain AND p.conversation_id = t.conversation_id
                                         AND p.request_id <> t.request_id AND p.timestamp <= t.timestamp
                                       ORDER BY p.timestamp DESC, p.request_id DESC
                                       LIMIT 1)
                           END AS parent_request_id
                      FROM api_requests t
                     WHERE {batch} AND t.parent_request_id IS NULL
                       AND (t.parent_message_hash IS NOT NULL
                            OR (t.parent_task_request_id IS NOT NULL AND jsonb_typeof(t.body->'messages') = 'array'
                                AND t.body->'messages'->1 IS NULL AND t.body->'messages'->0->>'role' = 'user'))
                   ) AS found
             WHERE found.parent_request_id IS NOT NULL
        """,
        update="""
            UPDATE api_requests t SET parent_request_id = todo.parent_request_id
              FROM todo
             WHERE t.request_id = todo.request_id AND t.parent_request_id IS NULL
        """,
    ),
)
