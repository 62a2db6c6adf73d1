"""The chain part's streaming standby and its replay lag, as the primary
sees it (pg_stat_replication): what an operator's failover standby or the
dashboard's read replica would be behind while a migration writes.

The lag is read two ways. replay_lag, the view's own, is the time between
the primary flushing some WAL and the standby saying it has replayed it; it
is only as fresh as the standby's last reply, and goes stale while replay is
stuck. So the benchmark also keeps, every LAG_SAMPLE_SECONDS, where the
primary's WAL stood (pg_current_wal_lsn()) and when: the standby's
replay_lsn then maps to the moment the primary's WAL passed that point
(interpolated between two samples), and the lag is the time since. A
standby that has replayed everything the primary wrote has no lag.

On the project's local server the benchmark makes the standby itself (a
copy by pg_basebackup, on a socket of its own in a folder under the local
server's or under --standby-folder, which only its owner may enter) and
removes it at the end; with --database-url it follows the standby named by
--standby-url, and none without one. Where several standbys stream from the
server, the worst lag counts.
"""

from __future__ import annotations

import bisect
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from ..database.localpg import LocalServer
from ..errors import OperatorError, mask_password
from ..steps import throttle
from .report import size
from .scratch import Server, connect, every_seconds

LAG_SAMPLE_SECONDS = 0.1
STANDBY_FOLDER = "benchmark-standby"  # under the local server's home, or the folder --standby-folder names
STREAMING_SECONDS = 120  # for a new standby to start streaming
CATCH_UP_SECONDS = 900  # for a standby to replay what the benchmark's copies wrote
MAX_REPLICA_LAG = "NEXUS_MAX_REPLICA_LAG"  # seconds, the throttle's bound and the benchmark's target

# The primary's WAL position and, of the standbys streaming from it, the
# least replayed position and the largest replay_lag (NULL when none is
# streaming, or none has replied yet), how many there are, and how many this
# role may see the state of (a role without pg_monitor sees only their pids).
REPLICATION = """
    SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
           min(pg_wal_lsn_diff(replay_lsn, '0/0'))::bigint, max(extract(epoch FROM replay_lag))::float8, count(*),
           count(state)
      FROM pg_stat_replication"""


def max_replica_lag() -> float:
    """The bound on a standby's replay lag, in seconds: the backfills' own (steps/throttle.py)."""
    return throttle.max_replica_lag()


@dataclass
class Choice:
    """Which standby the chain part follows: one it makes of a local server
    (primary, home), an existing one (url), or none; line says which."""

    line: str
    primary: LocalServer | None = None
    home: Path | None = None
    url: str | None = None


def local_choice(primary: LocalServer, home: Path | None = None) -> Choice:
    home = home or primary.home / STANDBY_FOLDER
    return Choice(f"standby: a streaming copy of the server made with pg_basebackup in {home}, removed at the end",
                  primary=primary, home=home)


def choose(*, off: bool, standby_url: str | None, database_url: str | None, folder: Path | None = None) -> Choice:
    """What the command line asked for: the local server's own standby unless
    --no-standby or --database-url (in a folder of its own under folder, if
    given: another disk's, say); with --database-url, --standby-url's."""
    if off:
        return Choice("standby: none (--no-standby)")
    if standby_url:
        return Choice(f"standby: {mask_password(standby_url, standby_url)} (--standby-url)", url=standby_url)
    if database_url:
        return Choice("standby: none (the server is not the project's own: --standby-url URL follows an existing one)")
    from ..database.local import local_server
    # a folder of its own, never folder itself: the end removes the standby's folder whole
    return local_choice(local_server(), folder / STANDBY_FOLDER if folder else None)


@contextmanager
def attached(server: Server, choice: Choice | None):
    """A Standby sampling the replay lag for the duration (None when there is
    none); a standby made here is removed at the end."""
    if choice is None:
        yield None
        return
    print(choice.line, flush=True)
    try:
        if choice.primary is not None:
            # a copy left by a killed run may lack WAL the server has recycled since: a new one
            choice.primary.remove_standby(choice.home)
            standby_url = choice.primary.start_standby(choice.home).url()
        elif choice.url:
            _check_is_standby(choice.url)
            standby_url = choice.url
        else:
            yield None
            return
        standby = Standby(server.url, standby_url)
        try:
            if not standby.wait_streaming():
                print("standby: this role cannot see the standbys' positions (pg_stat_replication needs "
                      "pg_monitor): replay lag not measured", flush=True)
                yield None
                return
            with standby.sampling():
                yield standby
        finally:
            standby.close()
    finally:
        if choice.primary is not None:  # (also what a failed pg_basebackup left)
            choice.primary.remove_standby(choice.home)


def _check_is_standby(url: str) -> None:
    try:
        conn = psycopg2.connect(url, connect_timeout=10)
    except psycopg2.Error as exc:
        raise OperatorError(f"--standby-url: cannot connect to {mask_password(url, url)}: "
                            f"{mask_password(str(exc).strip().splitlines()[0], url)}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            if not cur.fetchone()[0]:
                raise OperatorError(f"--standby-url: {mask_password(url, url)} is not a standby "
                                    "(pg_is_in_recovery() is false)")
    finally:
        conn.close()


class WalClock:
    """When the primary's WAL passed each position: its position sampled
    over time, and from that, how long ago a position was passed."""

    def __init__(self):
        self.times: list[float] = []
        self.positions: list[int] = []  # never decreasing

    def add(self, when: float, position: int) -> None:
        self.times.append(when)
        self.positions.append(max(position, self.positions[-1] if self.positions else position))

    def lag(self, now: float, replayed: int) -> float:
        """Seconds since the WAL passed replayed (0 when replayed is where it stands)."""
        if replayed >= self.positions[-1]:
            return 0.0
        i = bisect.bisect_left(self.positions, replayed)
        if i == 0:  # before the first sample: at least this long
            return now - self.times[0]
        (t0, p0), (t1, p1) = (self.times[i - 1], self.positions[i - 1]), (self.times[i], self.positions[i])
        return max(0.0, now - (t0 + (t1 - t0) * (replayed - p0) / (p1 - p0)))


class Standby:
    """The replay lag of the standbys of the server at primary_url, sampled
    from the primary every LAG_SAMPLE_SECONDS while sampling() runs; url is
    the standby's own, where its checkpointer may be read."""

    def __init__(self, primary_url: str, url: str | None = None):
        self.url = url
        self.conn = connect(primary_url, application_name="nexus-benchmark-standby-lag")
        self.clock = WalClock()
        # (time, lag s, the view's replay_lag s or None); lag None: no standby streamed
        self.samples: list[tuple[float, float | None, float | None]] = []
        self.replayed = 0  # the standby's position at the last sample

    def _read(self):
        with self.conn.cursor() as cur:
            before = time.monotonic()
            cur.execute(REPLICATION)
            primary, replay, view_lag, standbys, seen = cur.fetchone()
            return (before + time.monotonic()) / 2, primary, replay, view_lag, standbys, seen

    def wait_streaming(self, timeout: float = STREAMING_SECONDS) -> bool:
        """Until a standby has said how far it replayed; False when the role cannot see that."""
        give_up = time.monotonic() + timeout
        while True:
            _, _, replay, _, standbys, seen = self._read()
            if replay is not None:
                return True
            if standbys and not seen:
                return False
            if time.monotonic() > give_up:
                raise OperatorError(f"standby: none streams from the server after {timeout:g} s")
            time.sleep(0.2)

    def sample(self) -> None:
        now, primary, replay, view_lag, _, _ = self._read()
        self.clock.add(now, primary)
        if replay is not None:
            self.replayed = replay
        self.samples.append((now, None if replay is None else self.clock.lag(now, replay), view_lag))

    @contextmanager
    def sampling(self, every: float = LAG_SAMPLE_SECONDS):
        self.sample()
        with every_seconds(every, self.sample, "standby: sampling its lag"):
            yield self

    def wait_caught_up(self, timeout: float = CATCH_UP_SECONDS) -> float:
        """Until the standby has replayed what the primary had written when
        called (the benchmark's copies of a large database, say); seconds waited."""
        start = time.monotonic()
        while not self.clock.times or self.clock.times[-1] < start:
            time.sleep(LAG_SAMPLE_SECONDS / 2)
        wanted = self.clock.positions[-1]
        told = False
        while self.replayed < wanted:
            if not told and time.monotonic() - start > 1:  # a moment behind is no news
                print(f"waiting for the standby to replay {size(wanted - self.replayed)} of WAL ...", flush=True)
                told = True
            if time.monotonic() - start > timeout:
                raise OperatorError(f"standby: still behind after {timeout:g} s; is it replaying?")
            time.sleep(LAG_SAMPLE_SECONDS)
        return time.monotonic() - start

    def lag_in(self, start: float, end: float) -> dict:
        """The largest lag sampled in [start, end] and the first sample after
        it (which sees the end's lag), both ways of reading it (seconds)."""
        inside = [n for n, sample in enumerate(self.samples) if start <= sample[0] <= end]
        after = next((n for n, sample in enumerate(self.samples) if sample[0] > end), None)
        window = [self.samples[n][1:] for n in inside + ([after] if after is not None else [])]
        lags = [lag for lag, _ in window if lag is not None]
        views = [view for _, view in window if view is not None]
        return {"replay_lag_max_s": round(max(lags), 3) if lags else None,
                "replay_lag_view_max_s": round(max(views), 3) if views else None,
                "lag_samples": len(lags), "no_standby_samples": len(window) - len(lags)}

    def chart_points(self, start: float, end: float, origin: float) -> list:
        """(seconds since origin, lag ms, the view's replay_lag ms or None) of the samples in [start, end]."""
        return [(round(t - origin, 3), round(lag * 1000, 1), None if view is None else round(view * 1000, 1))
                for t, lag, view in self.samples if start <= t <= end and lag is not None]

    def close(self) -> None:
        self.conn.close()
