"""
002 optimize conversation indexes: serve the dashboard's conversation views
from indexes alone.

The dashboard reads one conversation's requests in time order, and lists the
latest conversations with their branches. Both touch only the seven columns
below, so an index that carries all seven answers them with index-only scans,
never visiting the heap rows with their large JSONB bodies.
"""

from yoyo import step

__depends__ = {"001-add-conversation-tracking"}

steps = [
    step(
        """
        CREATE INDEX IF NOT EXISTS idx_requests_conversation_timestamp
            ON api_requests (conversation_id, timestamp)
            WHERE conversation_id IS NOT NULL
        """,
        "DROP INDEX IF EXISTS idx_requests_conversation_timestamp",
    ),
    # Key columns versus INCLUDE: both queries search and order by
    # (conversation_id, timestamp) only; timestamp is all but unique within a
    # conversation, so further key columns would never narrow a search or give
    # an order a query asks for. As INCLUDE payload they are still returned by
    # an index-only scan, but live only in leaf pages: the upper levels of the
    # tree hold just the two keys, and the payload needs no B-tree operator
    # class. (Deduplication, which INCLUDE turns off, would not apply anyway:
    # request_id makes every entry distinct.)
    step(
        """
        CREATE INDEX IF NOT EXISTS idx_requests_conversation_detail
            ON api_requests (conversation_id, timestamp)
            INCLUDE (request_id, domain, model, total_tokens, branch_id)
            WHERE conversation_id IS NOT NULL
        """,
        "DROP INDEX IF EXISTS idx_requests_conversation_detail",
    ),
    # Post-check: IF NOT EXISTS keeps any index that already has one of these
    # names, even one left INVALID by a failed concurrent build, which no query
    # can use. Fail loudly rather than record 002 as applied.
    step(
        """
        DO $$
        DECLARE
            unusable text;
        BEGIN
            SELECT string_agg(name, ', ')
              INTO unusable
              FROM unnest(ARRAY['idx_requests_conversation_timestamp',
                                'idx_requests_conversation_detail']) AS name
              LEFT JOIN pg_index ON indexrelid = to_regclass(name)
             WHERE NOT coalesce(indisvalid, false)
                OR indrelid <> 'api_requests'::regclass;
            IF unusable IS NOT NULL THEN
                RAISE EXCEPTION '002: index % is missing or invalid; drop it and apply again', unusable;
            END IF;
        END
        $$
        """,
        None,
    ),
    # Fresh statistics let the planner pick the new indexes straight away.
    step("ANALYZE api_requests", None),
]
