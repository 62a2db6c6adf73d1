"""
008 sub-task updates and Task indexes: sub-tasks in their parent's
conversation, and a domain's recent Task calls found fast.

Today's proxy writes a sub-task into the conversation of the request that
called the Task tool, on a branch subtask_N of its own. Sub-tasks of older
history, which 003 linked to their parent task, move there too, each with all
its rows on one branch, numbered after the largest subtask_ number already in
that conversation; where each row was is kept, so that the rollback puts every
row back in its own conversation and branch (docs/design.md, "Backfills").

Before it links a new conversation to the Task call that started it, the proxy
reads the domain's requests of the last 24 hours that have a response, newest
first, and tests each response's content for that call.
"""

from nexus_migrate.steps import backfill, backfill_undo, ddl, index, migration

__depends__ = {"007-add-parent-request-id"}
__transactional__ = False  # see 000: CREATE INDEX CONCURRENTLY cannot run in a transaction


def pending(start: str, parent: str) -> str:
    """start is the first request of a sub-task conversation of its own that
    003 (or a proxy of its time) linked to parent, a request of another
    conversation: it has yet to move there."""
    return f"""{start}.parent_task_request_id IS NOT NULL AND {parent}.conversation_id IS NOT NULL
                   AND {start}.conversation_id IS DISTINCT FROM {parent}.conversation_id
                   AND NOT EXISTS (SELECT FROM api_requests e
                                    WHERE e.conversation_id = {start}.conversation_id
                                      AND e.timestamp <= {start}.timestamp
                                      AND (e.timestamp < {start}.timestamp OR e.request_id < {start}.request_id))"""


steps = migration(
    # Lives as long as 008 is applied: its rollback reads it, then drops it.
    ddl(
        """
        CREATE TABLE IF NOT EXISTS api_requests_subtask_moves (
            request_id      UUID PRIMARY KEY,
            conversation_id UUID,
            branch_id       VARCHAR(255)
        );
        COMMENT ON TABLE api_requests_subtask_moves IS
            'The conversation and branch of each request that 008 moved into its parent''s conversation, for its rollback'
        """,
        "DROP TABLE IF EXISTS api_requests_subtask_moves",
    ),
    # Upstream's version of this index leaves out rows without a response,
    # which only the Task look-up can use. Over the whole table it also serves
    # the dashboard's latest requests of a domain and its per-domain counts of
    # the last hours; the rows it adds (requests still waiting for their
    # response) are few. (The proxy's own initializer built this very index,
    # under a name of its own.)
    # Not built: two GIN indexes over response_body, which the look-up's test
    # of response_body->'content' cannot use, and a text index whose predicate
    # matches no row.
    index(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_api_requests_domain_newest_first ON api_requests (domain, timestamp DESC)",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_api_requests_domain_newest_first",
    ),
    # For each conversation that a start of the batch joins, every sub-task
    # still to move there, in the order of their starts, is numbered after the
    # largest subtask_ number the conversation holds (the proxy's, and those
    # given before): numbers never collide, and nothing moved is renumbered.
    backfill(
        "008 sub-tasks into their parent's conversation",
        find=f"""
            WITH joined AS MATERIALIZED (  -- first, the few conversations this batch's starts join
                SELECT DISTINCT p.conversation_id
                  FROM api_requests t JOIN api_requests p ON p.request_id = t.parent_task_request_id
                 WHERE {{batch}} AND {pending("t", "p")}
            ), sub AS (
                SELECT s.request_id AS start_id, s.conversation_id AS own_conversation_id,
                       target.conversation_id, target.base,
                       row_number() OVER (PARTITION BY target.conversation_id ORDER BY s.timestamp, s.request_id) AS n
                  FROM joined
                 CROSS JOIN LATERAL (
                       SELECT joined.conversation_id,
                              coalesce(max(substring(x.branch_id FROM '^subtask_(\\d+)')::integer), 0)
                         FROM api_requests x
                        WHERE x.conversation_id = joined.conversation_id AND x.branch_id LIKE 'subtask_%'
                       ) AS target (conversation_id, base)
                  JOIN api_requests p ON p.conversation_id = target.conversation_id
                  JOIN api_requests s ON s.parent_task_request_id = p.request_id
                 WHERE {pending("s", "p")}
            )
            SELECT c.request_id, c.conversation_id AS was_conversation_id, c.branch_id AS was_branch_id,
                   sub.conversation_id, 'subtask_' || (sub.base + sub.n) AS branch_id
              FROM sub
             CROSS JOIN LATERAL (SELECT sub.start_id
                                  UNION
                                 SELECT r.request_id FROM api_requests r
                                  WHERE r.conversation_id = sub.own_conversation_id) AS moving (request_id)
              JOIN api_requests c ON c.request_id = moving.request_id
        """,
        update="""
            UPDATE api_requests t SET conversation_id = todo.conversation_id, branch_id = todo.branch_id
              FROM todo
             WHERE t.request_id = todo.request_id AND t.conversation_id IS NOT DISTINCT FROM todo.was_conversation_id
            RETURNING t.request_id, todo.was_conversation_id, todo.was_branch_id
        """,
        keep="""
            INSERT INTO api_requests_subtask_moves (request_id, conversation_id, branch_id)
            SELECT request_id, was_conversation_id, was_branch_id FROM changed
                ON CONFLICT (request_id) DO NOTHING
        """,
        groups=True,
        walk_by="parent_task_request_id",  # only sub-task starts have one (003's partial index)
        undo=backfill_undo(
            walk="api_requests_subtask_moves",
            find="SELECT t.request_id, t.conversation_id, t.branch_id FROM api_requests_subtask_moves t WHERE {batch}",
            update="""
                UPDATE api_requests t SET conversation_id = todo.conversation_id, branch_id = todo.branch_id
                  FROM todo
                 WHERE t.request_id = todo.request_id
            """,
            keep="DELETE FROM api_requests_subtask_moves k USING todo WHERE k.request_id = todo.request_id",
        ),
    ),
)
