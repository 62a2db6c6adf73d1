"""
013, made for tests/test_data_loss.py: after the real 012, a table and a
column that the test fills, whose rollback drops them in the spelling that
NEXUS_TEST_DROP_SPELLING names (a key of SPELLINGS), as people write it. The
data-loss guard must see each spelling. guard_empty holds no rows: dropping
it loses nothing.
"""

import os

from nexus_migrate.steps import ddl, migration

__depends__ = {"012-drop-unused-indexes"}
__transactional__ = False

# name: (the rollback of the tables, the rollback of the column)
SPELLINGS = {
    # the spelling of the issue: no IF EXISTS, no COLUMN
    "plain": ("DROP TABLE guard_kept, guard_empty", "ALTER TABLE api_requests DROP guard_note"),
    "lower case, qualified, CASCADE, ONLY": (
        "drop table if exists public.guard_kept, public.guard_empty cascade",
        "alter table if exists only public.api_requests drop column if exists guard_note cascade",
    ),
    "quoted, a statement each, among other commands": (
        'DROP TABLE "guard_empty";\nDROP TABLE "guard_kept"',
        'ALTER TABLE "api_requests" ALTER "guard_note" DROP DEFAULT, DROP "guard_note"',
    ),
}
drop_tables, drop_column = SPELLINGS[os.environ.get("NEXUS_TEST_DROP_SPELLING", "plain")]

steps = migration(
    ddl(
        """
        CREATE TABLE IF NOT EXISTS guard_kept (id integer PRIMARY KEY, code varchar(8));
        CREATE TABLE IF NOT EXISTS guard_empty (id integer PRIMARY KEY)
        """,
        drop_tables,
    ),
    ddl("ALTER TABLE api_requests ADD COLUMN IF NOT EXISTS guard_note text DEFAULT 'none'", drop_column),
)
