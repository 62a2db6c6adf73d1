"""What the server wrote while something ran: WAL bytes (the WAL position,
pg_current_wal_insert_lsn(): the write position, pg_current_wal_lsn(), lags
it by the WAL still in wal_buffers, a few MB while a long transaction is
open), WAL records and full-page images (pg_stat_wal) and
checkpoints begun (requested and timed). All of them are the whole server's,
whoever wrote; the writer's own share, where the server can tell it, and a
statement's own WAL as EXPLAIN (ANALYZE, WAL) counts it, are here too.

Two things to know when reading them. pg_stat_wal holds what each session
has reported, and a session reports when it goes idle outside a transaction
(at most once a second unless asked: pg_stat_force_next_flush()), so the
WAL of a transaction still open is not in it; the WAL position is. And the
checkpointer counts a checkpoint when it starts it and reports the count
while it spreads the checkpoint's writes: one begun in a step's last moment
may show in the next.
"""

from __future__ import annotations

from .scratch import connect

# Where the checkpointer's counts are: pg_stat_checkpointer from PostgreSQL
# 17, pg_stat_bgwriter before.
CHECKPOINTS = {17: "SELECT num_requested, num_timed FROM pg_stat_checkpointer",
               0: "SELECT checkpoints_req, checkpoints_timed FROM pg_stat_bgwriter"}
# pg_stat_wal came with PostgreSQL 14; before, only the WAL position is known.
WAL_STATS = {14: "SELECT wal_records, wal_fpi FROM pg_stat_wal", 0: "SELECT NULL::bigint, NULL::bigint"}
COUNTERS = """
    SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint, w.*, c.*
      FROM ({wal}) AS w, ({checkpoints}) AS c"""
COUNTER_KEYS = ("wal_bytes", "wal_records", "wal_fpi", "checkpoints_requested", "checkpoints_timed")
# The WAL that a writer's sessions wrote (PostgreSQL 18: the backends' own
# statistics), as they last reported it.
SESSIONS_WAL = """
    SELECT coalesce(sum(w.wal_bytes), 0)::bigint, coalesce(sum(w.wal_records), 0)::bigint,
           coalesce(sum(w.wal_fpi), 0)::bigint
      FROM pg_stat_activity a CROSS JOIN LATERAL pg_stat_get_backend_wal(a.pid) w
     WHERE a.application_name = ANY(%s) AND a.datname = current_database()"""
SESSIONS_WAL_SINCE = 18
EXPLAINED = "EXPLAIN (ANALYZE, WAL, TIMING OFF, FORMAT JSON) "  # counts rows and WAL, not time


def _since(queries: dict[int, str], version: int) -> str:
    """The query of the newest version in queries that is not newer than version."""
    return queries[max(v for v in queries if v <= version)]


class Counters:
    """Reads the server's counters on a connection of its own (autocommit,
    each read a fresh snapshot of the statistics)."""

    def __init__(self, url: str, version: int):
        self.version = version
        self.conn = connect(url, application_name="nexus-benchmark-counters")
        self.query = COUNTERS.format(wal=_since(WAL_STATS, version), checkpoints=_since(CHECKPOINTS, version))

    def read(self) -> dict:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(self.query)
            return dict(zip(COUNTER_KEYS, (None if n is None else int(n) for n in cur.fetchone())))

    def sessions_wal(self, *application_names: str) -> dict | None:
        """The WAL of the sessions of this database with these application
        names, as they last reported it; None where the server keeps no such
        count (before 18)."""
        if self.version < SESSIONS_WAL_SINCE:
            return None
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(SESSIONS_WAL, (list(application_names),))
            return dict(zip(("wal_bytes", "wal_records", "wal_fpi"), map(int, cur.fetchone())))

    def close(self) -> None:
        self.conn.close()


def difference(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    return {key: None if after[key] is None or before[key] is None else after[key] - before[key] for key in after}


def plan_wal(plans: list) -> dict:
    """What EXPLAIN (ANALYZE, WAL, FORMAT JSON) says its statements wrote
    (the top node counts its whole statement) and the rows they updated (the
    rows an UPDATE returned: every backfill statement returns its changed rows)."""
    found = {"wal_bytes": 0, "wal_records": 0, "wal_fpi": 0, "rows_updated": 0}
    for plan in plans:
        top = plan[0]["Plan"]
        found["wal_bytes"] += int(top.get("WAL Bytes", 0))
        found["wal_records"] += int(top.get("WAL Records", 0))
        found["wal_fpi"] += int(top.get("WAL FPI", 0))
        found["rows_updated"] += sum(int(node.get("Actual Rows", 0)) for node in _nodes(top)
                                     if node.get("Node Type") == "ModifyTable" and node.get("Operation") == "Update")
    return found


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)
