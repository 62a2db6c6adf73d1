"""
007 add parent request id: each request points at the one it continues.

The proxy sets parent_request_id to the request whose last message the new
request's previous message is (by message hash), or, for a sub-task's first
request, to the request that called the Task tool.
"""

from nexus_migrate.steps import constraint, ddl, index, migration

__depends__ = {"006-split-conversation-hashes"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        "ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS parent_request_id UUID",
        "ALTER TABLE api_requests DROP COLUMN IF EXISTS parent_request_id",
    ),
    ddl(
        "COMMENT ON COLUMN api_requests.parent_request_id IS 'The request this one continues in its conversation'",
        "COMMENT ON COLUMN api_requests.parent_request_id IS NULL",
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
)
