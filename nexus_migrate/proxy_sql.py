"""The proxy's and the dashboard's own statements against the migrated schema:
the other side of the contract. tests/test_proxy.py checks them against the
migrations, and scripts/benchmark times them and uses the proxy's insert as its
writer."""

# What the proxy writes when a request comes in; a retried insert does nothing.
INSERT_REQUEST = """
    INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, body,
                              api_key_hash, model, request_type, current_message_hash,
                              parent_message_hash, conversation_id, branch_id, message_count)
    VALUES (%(request_id)s, %(timestamp)s, %(domain)s, 'POST', '/v1/messages', %(headers)s, %(body)s,
            %(api_key_hash)s, %(model)s, %(request_type)s, %(current)s, %(parent)s,
            %(conversation_id)s, %(branch_id)s, %(message_count)s)
    ON CONFLICT (request_id) DO NOTHING"""

# ... and when its response has arrived.
UPDATE_RESPONSE = """
    UPDATE api_requests
       SET response_status = %(status)s, response_headers = %(headers)s, response_body = %(body)s,
           response_streaming = %(streaming)s, input_tokens = %(input)s, output_tokens = %(output)s,
           total_tokens = %(input)s + %(output)s, first_token_ms = %(first_token_ms)s,
           duration_ms = %(duration_ms)s, error = %(error)s, tool_call_count = %(tools)s,
           cache_creation_input_tokens = %(cache_creation)s, cache_read_input_tokens = %(cache_read)s,
           usage_data = %(usage)s
     WHERE request_id = %(request_id)s"""

# A batch of streamed chunks (psycopg2.extras.execute_values fills VALUES %s).
INSERT_CHUNKS = """
    INSERT INTO streaming_chunks (request_id, chunk_index, timestamp, data, token_count)
    VALUES %s ON CONFLICT DO NOTHING"""

# The dashboard: the requests of some conversations (an array of ids), in time order ...
ONE_CONVERSATION = """
    SELECT request_id, timestamp, domain, model, total_tokens, branch_id
      FROM api_requests
     WHERE conversation_id = ANY(%s::uuid[])
     ORDER BY timestamp"""

# ... and the latest conversations with their branches.
LATEST_CONVERSATIONS = """
    SELECT conversation_id, array_agg(DISTINCT branch_id) AS branches, count(*) AS requests,
           sum(total_tokens) AS tokens, max(timestamp) AS last_activity
      FROM api_requests
     WHERE conversation_id IS NOT NULL
     GROUP BY conversation_id
     ORDER BY last_activity DESC
     LIMIT 20"""
