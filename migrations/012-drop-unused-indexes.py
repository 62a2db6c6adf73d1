"""
012 drop unused indexes: six indexes of 000 and 001 that no query uses.

This migration is the project's own; upstream's chain ends at 011. Every
request costs api_requests an insert and an update, and each index costs both
(docs/benchmark.md measures it). Of the indexes of 000 and 001, these serve no
query of the proxy's or the dashboard's (tests/test_proxy_today.py plans each
of their reads without them):

- (domain) and (conversation_id): 008's (domain, timestamp DESC) and 001's
  (conversation_id, branch_id) begin with the same column, and serve every
  look-up by it;
- (model), (request_type), (branch_id), (message_count): no query looks rows up
  by one of them alone; the dashboard's counts per model and request type cover
  a time window, which the timestamp index finds.

A rollback builds each again with its own migration's statement. Indexes of
your own on these columns stay (verify notes them).
"""

from nexus_migrate.steps import migration, retired_index

__depends__ = {"011-add-conversation-analyses"}
__transactional__ = False  # see 000: DROP INDEX CONCURRENTLY cannot run in a transaction

steps = migration(
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_api_requests_domain",
                  replaced_by="idx_api_requests_domain_newest_first"),
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_requests_conversation_id",
                  replaced_by="idx_requests_conversation_branch"),
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_api_requests_model", replaced_by=None),
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_api_requests_request_type", replaced_by=None),
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_requests_branch_id", replaced_by=None),
    retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_requests_message_count", replaced_by=None),
)
