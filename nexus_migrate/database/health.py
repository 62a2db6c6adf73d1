"""What the server says of its own health, as a backfill's throttle reads it
between batches: where each standby has replayed to, which sessions wait for
the WAL to be written, whether a checkpoint is flushing the data files. Every
read is of PostgreSQL's statistics views."""

from __future__ import annotations

from dataclasses import dataclass

# Sessions of other roles show their wait only to members of pg_read_all_stats
# (pg_monitor has it); a walsender's positions likewise.
MONITOR_GRANT = "GRANT pg_monitor TO the migrating role"

STANDBYS = """
    SELECT coalesce(nullif(application_name, ''), client_addr::text, 'standby ' || pid), state,
           pg_current_wal_lsn(), replay_lsn, extract(epoch FROM replay_lag)
      FROM pg_stat_replication"""

# Statements of other clients that wait for the WAL to reach the disk (not
# the server's own processes: the WAL writer and the checkpointer wait so by
# design), and how long the longest of them has run so far.
WAL_WAITERS = """
    SELECT count(*), coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)
      FROM pg_stat_activity
     WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = 'active'
       AND (wait_event_type, wait_event) IN (('IO', 'WalSync'), ('IO', 'WalWrite'),
                                                                         ('LWLock', 'WALWrite'))"""


# The checkpointer's fsync of the data files a checkpoint wrote: the end of
# every checkpoint, when the disk is busiest.
CHECKPOINT_SYNCING = """
    SELECT count(*) > 0 FROM pg_stat_activity
     WHERE backend_type = 'checkpointer' AND (wait_event_type, wait_event) = ('IO', 'DataFileSync')"""


@dataclass(frozen=True)
class Standby:
    name: str
    seen: bool  # this role may see its state and positions (pg_monitor)
    written: int  # the primary's WAL position when read (bytes)
    replayed: int | None  # its replay position; None when not seen, or when it replays nothing (pg_receivewal)
    replay_lag: float | None  # seconds, as the view says (stale while replay is stuck)


def _lsn(text: str | None) -> int | None:
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def standbys(cur) -> list[Standby]:
    cur.execute(STANDBYS)
    return [Standby(name, state is not None, _lsn(written), _lsn(replayed), lag)
            for name, state, written, replayed, lag in cur.fetchall()]


@dataclass(frozen=True)
class WalWaiters:
    count: int  # other sessions' statements waiting on the WAL now
    longest: float  # seconds the longest of them has run


def wal_waiters(cur) -> WalWaiters | None:
    """Other sessions waiting on the WAL; None when this role cannot see
    other roles' waits (pg_read_all_stats)."""
    cur.execute("SELECT pg_has_role('pg_read_all_stats', 'USAGE')")
    if not cur.fetchone()[0]:
        return None
    cur.execute(WAL_WAITERS)
    return WalWaiters(*cur.fetchone())


def checkpoint_syncing(cur) -> bool:
    """The checkpointer is flushing data files to disk now (seen only by a
    member of pg_read_all_stats, as wal_waiters says)."""
    cur.execute(CHECKPOINT_SYNCING)
    return cur.fetchone()[0]
