"""The pace of a backfill: before each batch it reads the server's health and
holds while the batches would hurt the proxy or its standbys, as gh-ost and
GitLab's batched background migrations hold theirs.

It holds while
- a standby's replay lags more than NEXUS_MAX_REPLICA_LAG seconds (default 1)
  behind this server. The lag is timed here: the batches remember when this
  server's WAL passed each position, and a standby is as far behind as the
  oldest position it has not replayed (pg_stat_replication's replay_lag, which
  it also reads, stops growing while replay is stuck);
- two or more statements of other sessions (the proxy's commits) wait for
  the WAL to be written at the same moment (IO:WalSync, IO:WalWrite,
  LWLock:WALWrite in pg_stat_activity), or one has waited so and run for
  over 50 ms: the proxy's commits queue behind the batches' WAL. (Holding
  only for the second let the batches outpace a proxy whose every commit
  waited 10 to 40 ms at 1,000,000 requests: docs/benchmark.md);
- a checkpoint is flushing the data files it wrote (the checkpointer waits on
  IO:DataFileSync): the proxy's commits then share the disk with that flush,
  and a batch's writes would only lengthen it;
- the batch's own commit took over four times as long as its first commits
  did: for ten times that long, the server's disk catches up.

While it holds, one line says why, and another how long it held once it goes
on (for a hold as the last one, again only after NEXUS_PROGRESS_SECONDS);
the progress line counts held time and holds apart. A hold longer than
NEXUS_MAX_HOLD_SECONDS (default 300) stops the run with one line: every batch
before it is kept, and the same command continues. A role that may not see a
standby's lag or other sessions' waits is told so once, and the backfill goes
on without that signal. A client that takes the WAL and replays none of it
(pg_receivewal, a base backup's stream) has no lag to hold for: it is named
once.

The session's application_name says which backfill runs, how far it is and
why it holds, for pg_stat_activity and `scripts/migrate status`.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from ..database.health import MONITOR_GRANT, checkpoint_syncing, standbys, wal_waiters
from ..errors import OperatorError
from .settings import positive_setting, progress_seconds

CHECK_SECONDS = 0.1  # between two reads of the server's health while holding
BASELINE_COMMITS = 5
SLOW_COMMIT_FACTOR, SLOW_COMMIT_FLOOR = 4.0, 0.02
COOL_DOWN_FACTOR, COOL_DOWN_MAX = 10.0, 5.0
WAL_WAITERS_HOLD = 2  # commits waiting for the WAL at once
WAL_WAIT_HOLD_SECONDS = 0.05  # half the longest write the proxy should see
APPLICATION_NAME_BYTES = 63  # what PostgreSQL keeps


def max_replica_lag() -> float:
    return positive_setting("NEXUS_MAX_REPLICA_LAG", 1.0)


def max_hold_seconds() -> float:
    return positive_setting("NEXUS_MAX_HOLD_SECONDS", 300)


class HeldTooLong(OperatorError):
    """A backfill held longer than NEXUS_MAX_HOLD_SECONDS."""


class Throttle:
    def __init__(self, conn, name: str):
        self.conn, self.name = conn, name
        self.bound, self.limit = max_replica_lag(), max_hold_seconds()
        self.held = 0.0  # seconds held so far
        self.written: deque[tuple[float, int]] = deque()  # (when, this server's WAL position)
        self.commits: list[float] = []
        self.cool_until = 0.0
        self.told: set[str] = set()
        self.holds = 0
        self.last_said: tuple[str, float] = ("", 0.0)  # the signal of the last hold said, and when
        self.quiet = progress_seconds()
        self.status = ""
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('application_name')")
            self.application_name = cur.fetchone()[0]
        # "scripts/migrate apply pid 123 on host" keeps its command; plain yoyo names no session
        self.prefix = self.application_name.split(" pid ")[0] if self.application_name else "nexus-migrate (yoyo)"

    # The health signals: each returns why to hold, or None.

    def _replica_lag(self, cur, now: float) -> str | None:
        worst = None
        for standby in standbys(cur):
            self.written.append((now, standby.written))
            if not standby.seen:
                self._tell_once("lag", f"{self.name}: cannot see the replay lag of standby {standby.name} "
                                       f"({MONITOR_GRANT} to let the backfill hold for it); going on without it")
                continue
            if standby.replayed is None:  # a WAL receiver such as pg_receivewal or a base backup's stream
                self._tell_once(f"replays none {standby.name}",
                                f"{self.name}: {standby.name} takes the WAL but reports no replay position "
                                f"(pg_receivewal, a base backup): the backfill does not hold for it")
                continue
            lag = 0.0
            for when, position in self.written:
                if position > standby.replayed:
                    lag = now - when
                    break
            lag = max(lag, standby.replay_lag or 0.0)
            if lag > self.bound and (worst is None or lag > worst[1]):
                worst = (standby.name, lag)
        while len(self.written) > 1 and now - self.written[0][0] > 3600:  # a bound on memory
            self.written.popleft()
        if worst:
            return f"standby {worst[0]} replays {worst[1]:.1f} s behind (NEXUS_MAX_REPLICA_LAG {self.bound:g} s)"
        return None

    def _wal_waits(self, cur) -> str | None:
        waiting = wal_waiters(cur)
        if waiting is None:
            self._tell_once("waits", f"{self.name}: cannot see other sessions' waits for the WAL "
                                     f"({MONITOR_GRANT}); going on without that signal")
            return None
        if waiting.count >= WAL_WAITERS_HOLD:
            return f"{waiting.count} commits of other sessions wait for the WAL"
        if waiting.count and waiting.longest > WAL_WAIT_HOLD_SECONDS:
            return f"a commit of another session waits for the WAL ({1000 * waiting.longest:.0f} ms so far)"
        return None

    def _checkpoint_sync(self, cur) -> str | None:
        if "waits" not in self.told and checkpoint_syncing(cur):  # (told: this role cannot see it)
            return "a checkpoint is flushing the data files to disk"
        return None

    def _slow_commit(self, now: float) -> str | None:
        if now < self.cool_until:
            return "the server was slow to commit the last batch"
        return None

    def committed(self, seconds: float) -> None:
        """A batch's COMMIT took seconds: much slower than its first ones,
        the server's disk is behind, and the next batch waits a while."""
        self.commits.append(seconds)
        if len(self.commits) <= BASELINE_COMMITS:
            return
        baseline = statistics.median(self.commits[:BASELINE_COMMITS])
        if seconds > max(SLOW_COMMIT_FACTOR * baseline, SLOW_COMMIT_FLOOR):
            self.cool_until = time.monotonic() + min(COOL_DOWN_FACTOR * seconds, COOL_DOWN_MAX)

    def _why(self) -> tuple[str, str] | None:
        """(which signal, why) of the first signal that says hold, or None."""
        now = time.monotonic()
        with self.conn.cursor() as cur:
            for signal, read in (("lag", lambda: self._replica_lag(cur, now)), ("wal", lambda: self._wal_waits(cur)),
                                 ("checkpoint", lambda: self._checkpoint_sync(cur)),
                                 ("commit", lambda: self._slow_commit(now))):
                why = read()
                if why:
                    return signal, why
        return None

    def _tell_once(self, what: str, line: str) -> None:
        if what not in self.told:
            self.told.add(what)
            print(line, flush=True)

    def before_batch(self) -> None:
        """Return once the server is healthy; hold (saying why) while it is not."""
        found = self._why()
        if found is None:
            return
        started = time.monotonic()
        signal, why = found
        # a hold for the same reason as the last one said, soon after it: counted, not said again
        said = signal != self.last_said[0] or started - self.last_said[1] >= self.quiet
        if said:
            print(f"{self.name}: holding: {why}", flush=True)
            self.last_said = (signal, started)
        self.holds += 1
        self.show(f"held: {why}")
        while found is not None:
            held = time.monotonic() - started
            if not said and held >= self.quiet:  # a quiet hold that lasts is said after all
                print(f"{self.name}: holding: {found[1]}", flush=True)
                said, self.last_said = True, (found[0], time.monotonic())
            if held > self.limit:
                self.held += held
                raise HeldTooLong(
                    f"{self.name}: held for {held:.0f} s, longer than NEXUS_MAX_HOLD_SECONDS ({self.limit:g} s), "
                    f"because {found[1]}; every batch before is kept, run the same command again once the server "
                    "has caught up")
            time.sleep(CHECK_SECONDS)
            found = self._why()
        held = time.monotonic() - started
        self.held += held
        if said:
            print(f"{self.name}: going on after holding {held:.1f} s", flush=True)
        self.show(self.status)

    def show(self, status: str) -> None:
        """status in the session's application_name (pg_stat_activity)."""
        if not status.startswith("held"):
            self.status = status
        text = f"{self.prefix}: {self.name} {status}".encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")
        with self.conn.cursor() as cur:
            cur.execute("SELECT set_config('application_name', %s, false)", (text,))

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT set_config('application_name', %s, false)", (self.application_name,))
