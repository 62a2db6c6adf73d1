"""
003 add sub-task tracking: link a sub-task's conversation to the request that
spawned it.

Claude's Task tool starts a sub-agent: a response holds a tool_use named Task,
and the sub-agent's first request carries that call's prompt as its user text.
The proxy stores each response's Task calls in task_tool_invocation, and marks
the sub-agent's requests with is_subtask and the spawning request,
parent_task_request_id.
"""

from nexus_migrate.steps import constraint, ddl, index, migration

__depends__ = {"002-optimize-conversation-indexes"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        """
        ALTER TABLE api_requests
            ADD COLUMN IF NOT EXISTS parent_task_request_id UUID,
            ADD COLUMN IF NOT EXISTS is_subtask             BOOLEAN DEFAULT false,
            ADD COLUMN IF NOT EXISTS task_tool_invocation   JSONB
        """,
        """
        ALTER TABLE api_requests
            DROP COLUMN IF EXISTS task_tool_invocation,
            DROP COLUMN IF EXISTS is_subtask,
            DROP COLUMN IF EXISTS parent_task_request_id
        """,
    ),
    ddl(
        """
        COMMENT ON COLUMN api_requests.parent_task_request_id IS
            'The request whose response called the Task tool that started this sub-task';
        COMMENT ON COLUMN api_requests.is_subtask IS 'The request belongs to a sub-task''s conversation';
        COMMENT ON COLUMN api_requests.task_tool_invocation IS
            'The Task tool calls of the response, as [{id, name, input}], in the order of its content'
        """,
        """
        COMMENT ON COLUMN api_requests.task_tool_invocation IS NULL;
        COMMENT ON COLUMN api_requests.is_subtask IS NULL;
        COMMENT ON COLUMN api_requests.parent_task_request_id IS NULL
        """,
    ),
    # ON DELETE SET NULL: deleting an old request (a retention job) leaves its
    # sub-tasks, no longer linked. NO ACTION would make that DELETE fail, and
    # CASCADE would delete the sub-tasks' history along with it.
    constraint(
        """
        ALTER TABLE api_requests ADD CONSTRAINT api_requests_parent_task_request_id_fkey
            FOREIGN KEY (parent_task_request_id) REFERENCES api_requests (request_id) ON DELETE SET NULL NOT VALID
        """,
        "ALTER TABLE api_requests DROP CONSTRAINT IF EXISTS api_requests_parent_task_request_id_fkey",
    ),
    # The children of a task (the dashboard: parent_task_request_id = $1, or
    # = ANY($1) and grouped), and the foreign key's look-up when a parent is
    # deleted. Only sub-task rows have a value, so only they are indexed.
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_parent_task_request_id
            ON api_requests (parent_task_request_id) WHERE parent_task_request_id IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_parent_task_request_id",
    ),
    # The writer's look-up of the Task call a new conversation answers: the
    # requests of the last hours that hold Task calls, newest first, tested
    # with jsonb_path_exists(). Few requests hold one, so the index is small.
    # (Upstream built a GIN index over task_tool_invocation for this, which no
    # function call can use, and one on is_subtask, a boolean no query filters
    # on alone: neither is built.)
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_task_invocation_timestamp
            ON api_requests (timestamp) WHERE task_tool_invocation IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_task_invocation_timestamp",
    ),
)
