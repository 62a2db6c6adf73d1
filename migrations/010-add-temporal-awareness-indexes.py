"""
010 add temporal awareness indexes: the next sub-task number of a conversation.

When a Task call starts a sub-task, the proxy numbers its branch subtask_N
after the largest number already used in the parent's conversation before that
moment: conversation_id = $1 AND branch_id LIKE 'subtask_%' AND timestamp < $2.
"""

from nexus_migrate.steps import index, migration

__depends__ = {"009-add-response-body-gin-index"}
__transactional__ = False  # see 000: CREATE INDEX CONCURRENTLY cannot run in a transaction

steps = migration(
    # Only sub-task rows are in it. Its predicate is the proxy's condition to
    # the letter, which is what lets the planner use a partial index. (Upstream's
    # other 010 index, (conversation_id, timestamp) over the whole table, has
    # the keys of 002's covering index: not built.)
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_subtask_seq
            ON api_requests (conversation_id, timestamp) WHERE branch_id LIKE 'subtask_%'
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_subtask_seq",
    ),
)
