"""
014, made for tests/test_data_loss.py: widens 013's guard_kept.code and adds a
schema with a table of its own. Its rollback narrows the column again (which
fails on, or changes, longer values) and drops the schema with its table.
"""

from nexus_migrate.steps import ddl, migration

__depends__ = {"013-drop-what-holds-rows"}
__transactional__ = False

steps = migration(
    ddl("ALTER TABLE guard_kept ALTER COLUMN code TYPE varchar(64)",
        "ALTER TABLE guard_kept ALTER COLUMN code TYPE varchar(8)"),
    ddl("CREATE SCHEMA IF NOT EXISTS guard_archive; CREATE TABLE IF NOT EXISTS guard_archive.old_notes (note text)",
        "DROP SCHEMA IF EXISTS guard_archive CASCADE"),
)
