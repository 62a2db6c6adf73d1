"""
008 sub-task updates and Task indexes: find a domain's recent Task calls.

Before it links a new conversation to the Task call that started it, the proxy
reads the domain's requests of the last 24 hours that have a response, newest
first, and tests each response's content for that call.
"""

from nexus_migrate.steps import index, migration

__depends__ = {"007-add-parent-request-id"}
__transactional__ = False  # see 000: CREATE INDEX CONCURRENTLY cannot run in a transaction

steps = migration(
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
)
