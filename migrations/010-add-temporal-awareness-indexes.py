"""
010 add temporal awareness indexes: nothing to build.

When a Task call starts a sub-task, the proxy numbers its branch subtask_N after
the largest number already used in the parent's conversation before that
moment: conversation_id = $1 AND branch_id LIKE 'subtask_%' AND timestamp < $2.
Upstream's 010 indexes the sub-task rows for it. But 002's covering index
holds every request of a conversation in time order with its branch_id, so the
look-up is an index-only scan of the conversation's entries, which never visits
the table; an index of sub-task rows alone would have to visit the table for
each row's branch_id (tests/test_proxy_today.py shows the plan). Upstream's
other 010 index, (conversation_id, timestamp) over the whole table, has the
covering index's keys. The file stays, so that the chain keeps upstream's
numbers.
"""

from nexus_migrate.steps import migration

__depends__ = {"009-add-response-body-gin-index"}
__transactional__ = False

steps = migration()
