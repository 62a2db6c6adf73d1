"""The statements the proxy and its dashboard run against the store.

They are the other side of the contract the migrations keep, written once here
so that the tests (and the benchmark) exercise the store the way the proxy does.
psycopg2 parameters: %(name)s for one row, %s for execute_values' VALUES list.
"""

# One row per request, before the response exists; a retried insert is a no-op.
# Today's proxy writes these twenty-one columns.
INSERT_REQUEST = """
    INSERT INTO api_requests (request_id, domain, account_id, timestamp, method, path, headers, body,
                              api_key_hash, model, request_type, current_message_hash, parent_message_hash,
                              conversation_id, branch_id, system_hash, message_count, parent_task_request_id,
                              is_subtask, task_tool_invocation, parent_request_id)
    VALUES (%(request_id)s, %(domain)s, %(account_id)s, %(timestamp)s, 'POST', '/v1/messages', %(headers)s,
            %(body)s, %(api_key_hash)s, %(model)s, %(request_type)s, %(current)s, %(parent)s,
            %(conversation_id)s, %(branch_id)s, %(system_hash)s, %(message_count)s, %(parent_task_request_id)s,
            %(is_subtask)s, %(task_tool_invocation)s, %(parent_request_id)s)
    ON CONFLICT (request_id) DO NOTHING"""

# The same insert as the proxy of migration 002's time wrote it, which an older
# proxy still runs while a newer schema is being applied (a rolling upgrade).
INSERT_REQUEST_002 = """
    INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, body,
                              api_key_hash, model, request_type, current_message_hash,
                              parent_message_hash, conversation_id, branch_id, message_count)
    VALUES (%(request_id)s, %(timestamp)s, %(domain)s, 'POST', '/v1/messages', %(headers)s, %(body)s,
            %(api_key_hash)s, %(model)s, %(request_type)s, %(current)s, %(parent)s,
            %(conversation_id)s, %(branch_id)s, %(message_count)s)
    ON CONFLICT (request_id) DO NOTHING"""

# The response completes its request's row.
UPDATE_RESPONSE = """
    UPDATE api_requests
       SET response_status = %(status)s, response_headers = %(headers)s, response_body = %(body)s,
           response_streaming = %(streaming)s, input_tokens = %(input)s, output_tokens = %(output)s,
           total_tokens = %(input)s + %(output)s, first_token_ms = %(first_token_ms)s,
           duration_ms = %(duration_ms)s, error = %(error)s, tool_call_count = %(tools)s,
           cache_creation_input_tokens = %(cache_creation)s, cache_read_input_tokens = %(cache_read)s,
           usage_data = %(usage)s
     WHERE request_id = %(request_id)s"""

# A response that called the Task tool: its calls, as [{id, name, input}].
MARK_TASK_CALLS = "UPDATE api_requests SET task_tool_invocation = %(calls)s WHERE request_id = %(request_id)s"

# Streamed chunks, up to 100 rows per statement (psycopg2.extras.execute_values).
INSERT_CHUNKS = """
    INSERT INTO streaming_chunks (request_id, chunk_index, timestamp, data, token_count)
    VALUES %s ON CONFLICT DO NOTHING"""

# Dashboard: every request of a set of conversations, in time order.
ONE_CONVERSATION = """
    SELECT request_id, timestamp, domain, model, total_tokens, branch_id
      FROM api_requests
     WHERE conversation_id = ANY(%s::uuid[])
     ORDER BY timestamp"""

# Dashboard: the latest conversations with their branches.
LATEST_CONVERSATIONS = """
    SELECT conversation_id, array_agg(DISTINCT branch_id) AS branches, count(*) AS requests,
           sum(total_tokens) AS tokens, max(timestamp) AS last_activity
      FROM api_requests
     WHERE conversation_id IS NOT NULL
     GROUP BY conversation_id
     ORDER BY last_activity DESC
     LIMIT 20"""

# Dashboard: the conversation list. Window functions number each
# conversation's requests newest first (its latest request) and, apart for
# sub-task rows and the rest, oldest first (the first sub-task row names the
# task that started it); the parent task's conversation is joined in.
CONVERSATION_LIST = """
    WITH numbered AS (
        SELECT request_id, conversation_id, domain, account_id, timestamp, input_tokens, output_tokens,
               branch_id, model, is_subtask, parent_task_request_id,
               row_number() OVER (PARTITION BY conversation_id ORDER BY timestamp DESC, request_id DESC) AS newest,
               row_number() OVER (PARTITION BY conversation_id, is_subtask ORDER BY timestamp, request_id) AS oldest
          FROM api_requests
         WHERE conversation_id IS NOT NULL
    ), conversations AS (
        SELECT conversation_id, domain, account_id,
               min(timestamp) AS first_message_time, max(timestamp) AS last_message_time,
               count(*) AS message_count,
               sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) AS total_tokens,
               count(DISTINCT branch_id) AS branch_count,
               count(DISTINCT branch_id) FILTER (WHERE branch_id LIKE 'subtask_%%') AS subtask_branch_count,
               (array_agg(request_id ORDER BY newest) FILTER (WHERE newest = 1))[1] AS latest_request_id,
               bool_or(is_subtask) AS is_subtask,
               (array_agg(parent_task_request_id ORDER BY oldest)
                    FILTER (WHERE is_subtask AND oldest = 1))[1] AS parent_task_request_id
          FROM numbered
         GROUP BY conversation_id, domain, account_id
    )
    SELECT c.*, parent.conversation_id AS parent_conversation_id
      FROM conversations c
      LEFT JOIN api_requests parent ON parent.request_id = c.parent_task_request_id
     ORDER BY c.last_message_time DESC
     LIMIT %(limit)s"""

# Dashboard: an account's tokens in a time window (usage, and its time series).
ACCOUNT_USAGE = """
    SELECT count(*) AS requests, coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens
      FROM api_requests
     WHERE account_id = %(account_id)s AND timestamp >= %(since)s AND timestamp < %(until)s"""

# Dashboard: the sub-task requests of a set of task requests, per task.
TASK_CHILDREN = """
    SELECT parent_task_request_id, count(*) AS requests, min(timestamp) AS started, max(timestamp) AS ended
      FROM api_requests
     WHERE parent_task_request_id = ANY(%(task_request_ids)s::uuid[])
     GROUP BY parent_task_request_id"""

# The proxy: the largest sub-task number of a conversation before a moment,
# to number the next sub-task branch.
SUBTASK_SEQUENCE = """
    SELECT coalesce(max(substring(branch_id FROM 'subtask_(\\d+)')::integer), 0)
      FROM api_requests
     WHERE conversation_id = %(conversation_id)s AND branch_id LIKE 'subtask_%%' AND timestamp < %(before)s"""

# The proxy: a domain's Task calls of a time window, newest first, whose
# response holds a Task call with the given prompt (the linker's look-up).
TASK_LOOKUP = """
    SELECT request_id, conversation_id, branch_id, timestamp, response_body
      FROM api_requests
     WHERE domain = %(domain)s AND timestamp >= %(since)s AND timestamp <= %(until)s
       AND response_body IS NOT NULL
       AND response_body->'content' @> %(task_call)s
     ORDER BY timestamp DESC"""

# The proxy: the latest request of the last hours whose Task calls have the
# given prompt or description (the writer's matcher).
TASK_MATCH = """
    SELECT request_id, timestamp
      FROM api_requests
     WHERE task_tool_invocation IS NOT NULL
       AND timestamp >= %(at)s::timestamptz - interval '12 hours' AND timestamp <= %(at)s
       AND jsonb_path_exists(task_tool_invocation,
                             '$[*] ? (@.input.prompt == $prompt || @.input.description == $prompt)',
                             jsonb_build_object('prompt', %(prompt)s::text))
     ORDER BY timestamp DESC
     LIMIT 1"""

# The API: queue an analysis of a conversation's branch.
REQUEST_ANALYSIS = """
    INSERT INTO conversation_analyses (conversation_id, branch_id, custom_prompt)
    VALUES (%(conversation_id)s, %(branch_id)s, %(custom_prompt)s)
    ON CONFLICT (conversation_id, branch_id) DO NOTHING
    RETURNING id"""

# The worker: claim the oldest pending analysis that has retries left.
CLAIM_ANALYSIS = """
    UPDATE conversation_analyses
       SET status = 'processing'
     WHERE id = (SELECT id FROM conversation_analyses
                  WHERE status = 'pending' AND retry_count < %(max_retries)s
                  ORDER BY created_at
                  LIMIT 1
                    FOR UPDATE SKIP LOCKED)
    RETURNING id, conversation_id, branch_id, updated_at"""

# The API: each request about an analysis, appended to the audit log.
AUDIT_ANALYSIS = """
    INSERT INTO analysis_audit_log (event_type, outcome, conversation_id, branch_id, domain, request_id,
                                    user_context, metadata)
    VALUES (%(event_type)s, %(outcome)s, %(conversation_id)s, %(branch_id)s, %(domain)s, %(request_id)s,
            %(user_context)s, %(metadata)s)"""

# Dashboard: a domain's latest requests, newest first.
LATEST_REQUESTS = """
    SELECT request_id, domain, model, timestamp, input_tokens, output_tokens, duration_ms, response_status,
           error, request_type
      FROM api_requests
     WHERE domain = %(domain)s
     ORDER BY timestamp DESC
     LIMIT %(limit)s"""

# Dashboard: requests per model over a recent window (and likewise per request type).
REQUESTS_PER_MODEL = """
    SELECT model, count(*) AS requests
      FROM api_requests
     WHERE timestamp > %(since)s
     GROUP BY model
     ORDER BY requests DESC"""

# The proxy: whether a parent message already has children in the
# conversation (then the new request starts a branch), and on which branches.
CHILDREN_OF_MESSAGE = """
    SELECT count(*), array_agg(DISTINCT branch_id)
      FROM api_requests
     WHERE conversation_id = %(conversation_id)s AND parent_message_hash = %(parent)s"""

# The analysis worker: the requests of the conversation branch it analyses.
BRANCH_REQUESTS = """
    SELECT request_id, timestamp, body, response_body
      FROM api_requests
     WHERE conversation_id = %(conversation_id)s AND branch_id = %(branch_id)s
     ORDER BY created_at"""
