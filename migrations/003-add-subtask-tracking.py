"""
003 add sub-task tracking: link a sub-task's conversation to the request that
spawned it.

Claude's Task tool starts a sub-agent: a response holds a tool_use named Task,
and the sub-agent's first request carries that call's prompt as its user text.
The proxy stores each response's Task calls in task_tool_invocation, and marks
the sub-agent's requests with is_subtask and the spawning request,
parent_task_request_id.

History written before this migration is filled in as today's proxy would
have written it (docs/design.md, "Backfills"): first the Task calls of each
response, then the sub-tasks they started, whose parent search uses the Task
calls just filled and the index on their timestamps.
"""

from nexus_migrate.steps import backfill, constraint, ddl, index, migration

# A request's user text, when its body is one message from the user: for
# string content the string, for an array the text items in order, each
# without empty ones, joined by newlines; in both, every <system-reminder>
# block (any case, up to its first closing tag) goes with the whitespace
# before it. (The tempered `(?:(?!</...>).)*` and not `.*?`: in PostgreSQL
# a pattern whose first quantifier is greedy is greedy throughout, and `.*?`
# would run to the last closing tag.)
REMINDER = r"'\s*<system-reminder>(?:(?!</system-reminder>).)*</system-reminder>'"
USER_TEXT = rf"""
    CASE jsonb_typeof(t.body->'messages'->0->'content')
        WHEN 'string' THEN regexp_replace(t.body->'messages'->0->>'content', {REMINDER}, '', 'gi')
        WHEN 'array' THEN (
            SELECT string_agg(item.text, E'\n' ORDER BY item.n)
              FROM jsonb_array_elements(t.body->'messages'->0->'content') WITH ORDINALITY AS block (value, n)
             CROSS JOIN LATERAL (SELECT regexp_replace(block.value->>'text', {REMINDER}, '', 'gi'), block.n)
                   AS item (text, n)
             WHERE block.value->>'type' = 'text' AND item.text ~ '\S')
    END"""

__depends__ = {"002-optimize-conversation-indexes"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        """
        ALTER TABLE api_requests
            ADD COLUMN IF NOT EXISTS parent_task_request_id UUID,
            ADD COLUMN IF NOT EXISTS is_subtask             BOOLEAN DEFAULT false,
            ADD COLUMN IF NOT EXISTS task_tool_invocation   JSONB;
        COMMENT ON COLUMN api_requests.parent_task_request_id IS
            'The request whose response called the Task tool that started this sub-task';
        COMMENT ON COLUMN api_requests.is_subtask IS 'The request belongs to a sub-task''s conversation';
        COMMENT ON COLUMN api_requests.task_tool_invocation IS
            'The Task tool calls of the response, as [{id, name, input}], in the order of its content'
        """,
        """
        ALTER TABLE api_requests
            DROP COLUMN IF EXISTS task_tool_invocation,
            DROP COLUMN IF EXISTS is_subtask,
            DROP COLUMN IF EXISTS parent_task_request_id
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
    # The Task calls of each response, as the proxy stores them: the tool_use
    # elements named Task of its content, in order, as {id, name, input}.
    # Content that is not an array is left alone.
    backfill(
        "003 Task calls",
        find="""
            SELECT t.request_id,
                   (SELECT jsonb_agg(jsonb_build_object('id', c.value->'id', 'name', c.value->'name',
                                                        'input', c.value->'input') ORDER BY c.n)
                      FROM jsonb_array_elements(t.response_body->'content') WITH ORDINALITY AS c (value, n)
                     WHERE c.value->>'type' = 'tool_use' AND c.value->>'name' = 'Task') AS calls
              FROM api_requests t
             WHERE {batch} AND t.task_tool_invocation IS NULL
               AND jsonb_typeof(t.response_body->'content') = 'array'
               AND t.response_body->'content' @> '[{"type": "tool_use", "name": "Task"}]'
        """,
        update="""
            UPDATE api_requests t SET task_tool_invocation = todo.calls
              FROM todo
             WHERE t.request_id = todo.request_id AND t.task_tool_invocation IS NULL
        """,
    ),
    # Sub-task starts, as the proxy links them: a request whose body is one
    # user message with a user text, which began a conversation of its own
    # (history written before this migration), is started by the earliest
    # request of the same domain in the 24 hours before it that holds a Task
    # call with that text as its prompt. The start and every row of its
    # conversation that has no parent task yet are marked, all together.
    # (parent_message_hash IS NULL only spares reading the bodies of
    # requests with earlier messages: the proxy leaves it NULL for one message.)
    backfill(
        "003 sub-task links",
        find=f"""
            SELECT linked.request_id, start.parent_task_request_id
              FROM (SELECT t.request_id, t.conversation_id, parent.request_id AS parent_task_request_id
                      FROM api_requests t
                     CROSS JOIN LATERAL (SELECT {USER_TEXT}) AS u (text)
                     CROSS JOIN LATERAL (
                           SELECT p.request_id
                             FROM api_requests p
                            WHERE p.task_tool_invocation IS NOT NULL
                              AND p.timestamp < t.timestamp AND p.timestamp > t.timestamp - interval '24 hours'
                              AND p.domain = t.domain
                              AND p.task_tool_invocation @> jsonb_build_array(
                                      jsonb_build_object('input', jsonb_build_object('prompt', u.text)))
                            ORDER BY p.timestamp, p.request_id
                            LIMIT 1) AS parent
                     WHERE {{batch}} AND t.parent_task_request_id IS NULL AND t.parent_message_hash IS NULL
                       AND jsonb_typeof(t.body->'messages') = 'array' AND t.body->'messages'->1 IS NULL
                       AND t.body->'messages'->0->>'role' = 'user' AND u.text <> ''
                       AND NOT EXISTS (SELECT FROM api_requests e  -- the first request of its conversation
                                        WHERE e.conversation_id = t.conversation_id AND e.timestamp <= t.timestamp
                                          AND (e.timestamp < t.timestamp OR e.request_id < t.request_id))
                   ) AS start
             CROSS JOIN LATERAL (SELECT start.request_id
                                  UNION
                                 SELECT c.request_id FROM api_requests c
                                  WHERE c.conversation_id = start.conversation_id
                                    AND c.parent_task_request_id IS NULL) AS linked (request_id)
        """,
        update="""
            UPDATE api_requests t SET parent_task_request_id = todo.parent_task_request_id, is_subtask = true
              FROM todo
             WHERE t.request_id = todo.request_id AND t.parent_task_request_id IS NULL
        """,
        groups=True,
    ),
)
