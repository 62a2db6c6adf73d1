"""
013, made for tests/test_data_loss.py: after the real 012, an enum type with
a column of it on api_requests, and a table. Its rollback drops the type
with CASCADE, which takes the column along, and empties the table with
TRUNCATE, as a hurried rollback might. The data-loss guard must see both.
"""

from nexus_migrate.steps import ddl, migration

__depends__ = {"012-drop-unused-indexes"}
__transactional__ = False

steps = migration(
    ddl("""
        DO $$
        BEGIN
            IF to_regtype('guard_mood') IS NULL THEN
                CREATE TYPE guard_mood AS ENUM ('calm', 'busy');
            END IF;
        END
        $$
        """, "DROP TYPE IF EXISTS guard_mood CASCADE"),
    ddl("ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS guard_mood guard_mood", None),  # goes with its type
    ddl("CREATE TABLE IF NOT EXISTS guard_log (line text)", "TRUNCATE guard_log"),
)
