"""
002 optimize conversation indexes: serve the dashboard's conversation views
from indexes alone.

The dashboard reads one conversation's requests in time order, and lists the
latest conversations with their branches. Both touch only the seven columns
below, so an index that carries all seven answers them with index-only scans,
never visiting the heap rows with their large JSONB bodies.
"""

from nexus_migrate.steps import ddl, index, migration

__depends__ = {"001-add-conversation-tracking"}
# Outside a transaction: CREATE INDEX CONCURRENTLY cannot run in one. Each ddl
# step takes a short transaction of its own (see nexus_migrate/steps/).
__transactional__ = False

steps = migration(
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_conversation_timestamp
            ON api_requests (conversation_id, timestamp)
            WHERE conversation_id IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_timestamp",
    ),
    # Key columns versus INCLUDE: both queries search and order by
    # (conversation_id, timestamp) only; timestamp is all but unique within a
    # conversation, so further key columns would never narrow a search or give
    # an order a query asks for. As INCLUDE payload they are still returned by
    # an index-only scan, but live only in leaf pages: the upper levels of the
    # tree hold just the two keys, and the payload needs no B-tree operator
    # class. (Deduplication, which INCLUDE turns off, would not apply anyway:
    # request_id makes every entry distinct.)
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_conversation_detail
            ON api_requests (conversation_id, timestamp)
            INCLUDE (request_id, domain, model, total_tokens, branch_id)
            WHERE conversation_id IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_detail",
    ),
    # Fresh statistics let the planner pick the new indexes straight away.
    ddl("ANALYZE api_requests", None),
)
