"""
005 populate account ids: the account each request was billed to.

The proxy writes account_id from the accountId of each domain's credential
file; the dashboard adds up an account's tokens over a time window with it.
"""

from nexus_migrate.steps import ddl, index, migration

__depends__ = {"004-optimize-conversation-window-functions"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        "ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS account_id VARCHAR(255)",
        "ALTER TABLE api_requests DROP COLUMN IF EXISTS account_id",
    ),
    ddl(
        "COMMENT ON COLUMN api_requests.account_id IS 'The account of the credentials the request was sent with'",
        "COMMENT ON COLUMN api_requests.account_id IS NULL",
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
)
