"""The project's migrations as yoyo reads them, and what yoyo recorded of them."""

from yoyo import read_migrations

from nexus_migrate import MIGRATIONS_DIR

MIGRATIONS = list(read_migrations(str(MIGRATIONS_DIR)))
ALL = [m.id for m in MIGRATIONS]  # ids, in order


def logged(conn, operation: str) -> list[str]:
    """Migration ids in the order yoyo's log recorded the operation on them."""
    with conn.cursor() as cur:
        cur.execute("SELECT migration_id FROM _yoyo_log WHERE operation = %s ORDER BY created_at_utc",
                    (operation,))
        return [row[0] for row in cur.fetchall()]
