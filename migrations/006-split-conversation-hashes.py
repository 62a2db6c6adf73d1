"""
006 split conversation hashes: a hash of the system prompt of its own.

The proxy hashes a request's system prompt apart from its messages
(system_hash), so that a conversation is recognised by its messages whatever
system prompt came with them.
"""

from nexus_migrate.steps import ddl, migration, widen_varchar

__depends__ = {"005-populate-account-ids"}
__transactional__ = False  # see 000: each step takes a short transaction of its own

steps = migration(
    ddl(
        """
        ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS system_hash VARCHAR(64);
        COMMENT ON COLUMN api_requests.system_hash IS 'SHA-256 (hex) of the system prompt alone'
        """,
        "ALTER TABLE api_requests DROP COLUMN IF EXISTS system_hash",
    ),
    # A hash this migration cares for beside system_hash: the proxy stores the
    # SHA-256 hex digest of the request's API key, 64 characters, which
    # api_key_hash VARCHAR(50) would refuse as soon as a key is passed.
    widen_varchar("api_requests", "api_key_hash", 64),
    # No index on system_hash: the proxy looks it up only beside a message
    # hash and the domain, and the message hash's index already narrows that
    # look-up to a row or two.
)
