"""
013, made for tests/test_conventions.py: breaks the convention that a step
without a rollback changes no schema object. Its column would outlive a
rollback of this migration.
"""

from nexus_migrate.steps import ddl, migration

__depends__ = {"012-drop-unused-indexes"}
__transactional__ = False

steps = migration(
    ddl("ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS unpaired_note text", None),
)
