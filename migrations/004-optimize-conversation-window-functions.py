"""
004 optimize conversation window functions: one index fewer on api_requests.

The dashboard's conversation list numbers the requests of every conversation
twice (newest first, and oldest first apart for sub-task rows) with window
functions. Upstream's 004 built an index in each of those orders. But the list
reads every row of every conversation, and the planner sorts them faster than
it could read them in either index's order, so neither index would be used
(docs/design.md has the plans and timings); each would cost every insert and
every response an index update. They are not built, nor upstream's copy of the
primary key.

What stays of upstream's 004 is its drop of 002's (conversation_id, timestamp)
index: 002's covering index has the same keys and predicate, and serves every
query that one did.
"""

from nexus_migrate.steps import migration, retired_index

__depends__ = {"003-add-subtask-tracking"}
__transactional__ = False  # see 000: DROP INDEX CONCURRENTLY cannot run in a transaction

steps = migration(
    # Rolled back, the index is built again with 002's own statement.
    retired_index(
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_timestamp",
        replaced_by="idx_requests_conversation_detail",
    ),
)
