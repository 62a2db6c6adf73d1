"""
005 populate account ids: the account each request was billed to.

The proxy writes account_id from the accountId of each domain's credential
file; the dashboard adds up an account's tokens over a time window with it.

Older rows get theirs from the operator's mapping of domains to accounts,
NEXUS_ACCOUNT_MAP (a file of domain,account_id lines, or the proxy's
credentials directory; see nexus_migrate/proxy/accounts.py). Without it the column
and its index are built, and one line says how many rows wait for an account
and how to fill them later (scripts/migrate backfill 005-populate-account-ids).
Upstream's 005 filled in its own maintainers' domains instead.
"""

from nexus_migrate.proxy import accounts
from nexus_migrate.steps import backfill, ddl, index, migration

__depends__ = {"004-optimize-conversation-window-functions"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        """
        ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS account_id VARCHAR(255);
        COMMENT ON COLUMN api_requests.account_id IS 'The account of the credentials the request was sent with'
        """,
        "ALTER TABLE api_requests DROP COLUMN IF EXISTS account_id",
    ),
    # Account usage and its time series: account_id = $1 AND timestamp in a
    # window. (The proxy's initializer also built a plain (account_id) index,
    # which this one serves; upstream stopped building it here.)
    index(
        """
        CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_requests_account_timestamp
            ON api_requests (account_id, timestamp DESC) WHERE account_id IS NOT NULL
        """,
        "DROP INDEX CONCURRENTLY IF EXISTS idx_requests_account_timestamp",
    ),
    # Only where the proxy wrote none, and only for a domain of the mapping,
    # exactly as written (with its port, if any).
    backfill(
        "005 accounts",
        find="""
            SELECT t.request_id, map.account_id
              FROM api_requests t
              JOIN unnest(%(domains)s::text[], %(accounts)s::text[]) AS map (domain, account_id)
                ON map.domain = t.domain
             WHERE {batch} AND t.account_id IS NULL
        """,
        update="""
            UPDATE api_requests t SET account_id = todo.account_id
              FROM todo
             WHERE t.request_id = todo.request_id AND t.account_id IS NULL
        """,
        params=accounts.params,
        unless=accounts.without_map,
    ),
)
