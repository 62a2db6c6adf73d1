"""Upstream's indexes on api_requests after its whole chain, 000 to 011 (the
facts: "(a) Final schema after 011"), each with the upstream migration that
builds it. Written once, here: the write-cost part builds them on its copy of
the table, and tests/shapes.py builds those of 003 and later for a database
that upstream's scripts migrated.

Upstream's 002 never committed (it indexes total_tokens, which no upstream
migration adds), so a database its scripts migrated lacks 002's index; the
full set assumes it was built, as the facts do. Upstream's 004 drops 002's
other index, which is why only the covering one is here.
"""

from __future__ import annotations

UPSTREAM_INDEXES: tuple[tuple[str, str], ...] = (
    ("000", "CREATE INDEX IF NOT EXISTS idx_api_requests_domain ON api_requests (domain)"),
    ("000", "CREATE INDEX IF NOT EXISTS idx_api_requests_timestamp ON api_requests (timestamp)"),
    ("000", "CREATE INDEX IF NOT EXISTS idx_api_requests_model ON api_requests (model)"),
    ("000", "CREATE INDEX IF NOT EXISTS idx_api_requests_request_type ON api_requests (request_type)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_current_message_hash ON api_requests (current_message_hash)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_parent_message_hash ON api_requests (parent_message_hash)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_conversation_id ON api_requests (conversation_id)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_branch_id ON api_requests (branch_id)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_conversation_branch ON api_requests (conversation_id, branch_id)"),
    ("001", "CREATE INDEX IF NOT EXISTS idx_requests_message_count ON api_requests (message_count)"),
    # all seven columns as keys: upstream's 002 has no INCLUDE
    ("002", """CREATE INDEX IF NOT EXISTS idx_requests_conversation_detail
                   ON api_requests (conversation_id, timestamp, request_id, domain, model, total_tokens, branch_id)
                   WHERE conversation_id IS NOT NULL"""),
    ("003", """CREATE INDEX IF NOT EXISTS idx_requests_parent_task_request_id
                   ON api_requests (parent_task_request_id)"""),
    ("003", "CREATE INDEX IF NOT EXISTS idx_requests_is_subtask ON api_requests (is_subtask)"),
    ("003", """CREATE INDEX IF NOT EXISTS idx_requests_task_tool_invocation_gin
                   ON api_requests USING gin (task_tool_invocation) WHERE task_tool_invocation IS NOT NULL"""),
    ("004", """CREATE INDEX IF NOT EXISTS idx_requests_conversation_timestamp_id
                   ON api_requests (conversation_id, timestamp DESC, request_id DESC)
                   WHERE conversation_id IS NOT NULL"""),
    ("004", """CREATE INDEX IF NOT EXISTS idx_requests_conversation_subtask
                   ON api_requests (conversation_id, is_subtask, timestamp, request_id)
                   WHERE conversation_id IS NOT NULL"""),
    ("004", "CREATE INDEX IF NOT EXISTS idx_requests_request_id ON api_requests (request_id)"),
    ("005", """CREATE INDEX IF NOT EXISTS idx_requests_account_timestamp
                   ON api_requests (account_id, timestamp DESC) WHERE account_id IS NOT NULL"""),
    ("006", "CREATE INDEX IF NOT EXISTS idx_api_requests_system_hash ON api_requests (system_hash)"),
    ("007", "CREATE INDEX IF NOT EXISTS idx_api_requests_parent_request_id ON api_requests (parent_request_id)"),
    ("008", """CREATE INDEX IF NOT EXISTS idx_api_requests_response_body_task
                   ON api_requests USING gin (response_body) WHERE response_body IS NOT NULL"""),
    ("008", """CREATE INDEX IF NOT EXISTS idx_api_requests_domain_timestamp_response
                   ON api_requests (domain, timestamp DESC) WHERE response_body IS NOT NULL"""),
    # its predicate matches no jsonb text (which has a space after each colon): it stays empty
    ("008", """CREATE INDEX IF NOT EXISTS idx_api_requests_task_name ON api_requests ((response_body::text))
                   WHERE response_body IS NOT NULL AND response_body::text LIKE '%"name":"Task"%'"""),
    ("009", "CREATE INDEX IF NOT EXISTS idx_api_requests_response_body_gin ON api_requests USING gin (response_body)"),
    ("010", """CREATE INDEX IF NOT EXISTS idx_api_requests_conv_id_timestamp
                   ON api_requests (conversation_id, timestamp)"""),
    ("010", """CREATE INDEX IF NOT EXISTS idx_subtask_seq ON api_requests (conversation_id, timestamp)
                   WHERE branch_id LIKE 'subtask_%'"""),
)


def upstream_indexes(since: str = "000") -> list[str]:
    """The CREATE INDEX statements of upstream's migrations numbered since and
    later, in order, each on one line."""
    return [" ".join(statement.split()) for number, statement in UPSTREAM_INDEXES if number >= since]
