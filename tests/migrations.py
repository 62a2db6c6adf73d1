"""The project's migrations as yoyo reads them, for tests that walk them in order."""

from yoyo import read_migrations

from nexus_migrate import MIGRATIONS_DIR


def migration_ids() -> list[str]:
    return [m.id for m in read_migrations(str(MIGRATIONS_DIR))]
