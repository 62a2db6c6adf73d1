"""The statements the proxy and its dashboard run against the store.

They are the other side of the contract the migrations keep, written once here
so that the tests (and the benchmark) exercise the store the way the proxy does.
psycopg2 parameters: %(name)s for one row, %s for execute_values' VALUES list.
"""

# One row per request, before the response exists; a retried insert is a no-op.
INSERT_REQUEST = """
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
