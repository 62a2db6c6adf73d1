"""How a backfill walks its table: batch after batch, each a transaction of
its own, until the table ends; then once more over the rows written behind
the walk while it ran, and over the batches that skipped rows another session
held.

Two walks (Rule.walk_by):

- Physical order (the default): ranges of heap pages, `t.ctid >= '(first,0)'
  AND t.ctid < '(end,0)'`, which the server reads as a TID Range Scan. A batch
  changes rows that lie together, so a page written after a checkpoint is
  logged whole once for many rows, not once for each (rows in key order lie
  all over a heap that a random UUID keys). The walk ends where the table ends
  when it gets there: it reads the table's size again at the end, and goes on
  over what grew meanwhile.
- An indexed column's values (008's sub-task starts): `t.col BETWEEN first
  AND last`, with each batch's last value found by a walk of the column's
  index, so that only the rows that have a value are visited.

A row that an update moved behind a physical walk (the proxy recording a
response; any insert into a page that autovacuum freed) is a row version
newer than the walk's start. The catch-up pass reads the table again and
applies the rule to those alone (`age(t.xmin) <= age(start)`), changing
nothing else. A row written after that pass has passed is left to
`scripts/migrate backfill`, as a row written after the apply is.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .autovacuum import AutovacuumKeptOff, analyze_changed
from .lock_retries import LockNotGranted, in_transactions_with_lock_retries
from .settings import backoff_seconds, lock_attempts, positive_setting, progress_seconds
from .statement import labelled
from .timeouts import lifted
from .throttle import Throttle

# A batch reads one range of the walk and looks the rows it needs up by key: a
# few hundred rows, each an index lookup away. The statistics lag behind a
# running backfill (it changes the very columns its rules filter on), and an
# estimate of thousands of rows where there are dozens would make the planner
# hash or merge against a scan of the whole table, in every batch (008's took
# 0.9 s instead of 17 ms at 200,000 rows). So a batch's planner is held to
# nested loops over index lookups and TID range scans.
NESTED_LOOPS_ONLY = "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

# The table's pages a batch dirties are written out by this session as they
# leave shared buffers, into the kernel's cache, where they would wait for the
# kernel's writeback or a checkpoint's fsync to send hundreds of MB to disk at
# once; every commit of the proxy waits for its WAL flush behind that burst.
# PostgreSQL's backend_flush_after (0 by default) has the kernel write them as
# they go, in runs this long, so the disk's queue stays short. Measured in
# docs/design.md ("Writing out as it goes").
FLUSH_AS_WRITTEN = "SET LOCAL backend_flush_after = '256kB'"

# What a batch says it is (statement.labelled).
BATCH = "a batch"

FIRST_KEY = uuid.UUID(int=0)
LAST_KEY = uuid.UUID(int=2 ** 128 - 1)


def batch_seconds() -> float:
    return positive_setting("NEXUS_BATCH_SECONDS", 0.1)


def first_batch_rows() -> int:
    return max(1, int(positive_setting("NEXUS_BATCH_ROWS", 1000)))


def batch_pause_seconds() -> float:
    return positive_setting("NEXUS_BATCH_PAUSE_MS", 0, zero_ok=True) / 1000


class PageWalk:
    """Ranges of heap pages [first, end) of table, in physical order."""

    SMALLEST, LARGEST = 1, 10_000  # pages of 8 kB: at most 80 MB a batch

    def __init__(self, conn, table: str, since: str | None = None):
        self.table, self.since = table, since
        with conn.cursor() as cur:
            self.end = self._pages(cur)

    def _pages(self, cur) -> int:
        cur.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", (self.table,))
        return cur.fetchone()[0]

    def first_size(self, conn, rows: int) -> int:
        """Pages that hold about rows rows, by the statistics."""
        with conn.cursor() as cur:
            cur.execute("SELECT reltuples, relpages FROM pg_class WHERE oid = to_regclass(%s)", (self.table,))
            tuples, pages = cur.fetchone()
        per_page = tuples / pages if tuples > 0 and pages > 0 else 50
        return max(self.SMALLEST, min(self.LARGEST, round(rows / per_page)))

    start = 0

    def bounds(self, cur, first: int, size: int) -> tuple[int, int] | None:
        """The next range from page first, or None once the table ends there."""
        if first >= self.end:
            self.end = self._pages(cur)  # what grew while the walk went on
            if first >= self.end:
                return None
        return first, min(first + size, self.end)

    def predicate(self, bounds: tuple[int, int]) -> str:
        first, end = bounds
        where = f"t.ctid >= '({first},0)'::tid AND t.ctid < '({end},0)'::tid"
        return where + (f" AND age(t.xmin) <= age('{self.since}'::xid)" if self.since else "")

    @staticmethod
    def after(bounds: tuple[int, int]) -> int:
        return bounds[1]

    def describe(self, bounds: tuple[int, int]) -> str:
        return f"pages {bounds[0]} to {bounds[1] - 1}"


class KeyWalk:
    """Ranges of the values of table.column, in the order of its index,
    visiting only the rows where it is not NULL."""

    SMALLEST, LARGEST = 1, 100_000  # rows
    start = FIRST_KEY

    def __init__(self, table: str, column: str):
        self.table, self.column = table, column

    def first_size(self, conn, rows: int) -> int:
        return rows

    def bounds(self, cur, first: uuid.UUID | None, size: int) -> tuple[uuid.UUID, uuid.UUID] | None:
        """first and the value that ends a batch of size rows (an index-only
        walk); fewer rows than asked: the last batch, to the end of the values."""
        if first is None:
            return None
        cur.execute(f"""
            SELECT count(*), (array_agg({self.column} ORDER BY {self.column} DESC))[1]
              FROM (SELECT {self.column} FROM {self.table} WHERE {self.column} >= %s
                     ORDER BY {self.column} LIMIT %s) AS batch""", (str(first), size))
        rows, last = cur.fetchone()
        return first, LAST_KEY if rows < size else uuid.UUID(str(last))

    def predicate(self, bounds: tuple[uuid.UUID, uuid.UUID]) -> str:
        return f"t.{self.column} BETWEEN '{bounds[0]}' AND '{bounds[1]}'"

    @staticmethod
    def after(bounds: tuple[uuid.UUID, uuid.UUID]) -> uuid.UUID | None:
        return None if bounds[1] == LAST_KEY else uuid.UUID(int=bounds[1].int + 1)

    def describe(self, bounds: tuple[uuid.UUID, uuid.UUID]) -> str:
        return f"{self.column} from {bounds[0]}"


@dataclass
class _Counts:
    rows: int  # rows of the table walked in the batch's range
    found: int  # of them, those that still needed the rule
    locked: int  # of those, the ones the batch could lock
    changed: int


def _batch(conn, name: str, rule, params: dict, walk, first, size: int | None, bounds=None, throttle=None):
    """One batch in a transaction of its own: the range of size from first
    (or the range bounds, when given). Returns (range, counts), or (None,
    None) when the walk has ended. The statement starts with the backfill's
    name, which pg_stat_activity shows."""

    def work(cur):
        cur.execute(NESTED_LOOPS_ONLY)
        cur.execute(FLUSH_AS_WRITTEN)
        found_bounds = bounds or walk.bounds(cur, first, size)
        if found_bounds is None:
            return None, None
        cur.execute(labelled(name, BATCH, rule.statement(params, walk.predicate(found_bounds))))
        return found_bounds, _Counts(*cur.fetchone())

    # (No wait for long holders: a batch takes only row locks and ROW
    # EXCLUSIVE, which an autovacuum or a report does not hold up.)
    where = walk.describe(bounds) if bounds else f"from {first}"
    return in_transactions_with_lock_retries(
        conn, work, what=f"the locks for a batch of «{_first_words(rule)}» ({where})",
        nothing_changed="the batches before it are done and nothing of this one was changed",
        committed=throttle.committed if throttle else None)


def _first_words(rule) -> str:
    return " ".join(rule.update.split())[:60]


def _estimate(conn, rule) -> int | None:
    """How many rows the walk visits: for an index walk, counted (an index-only
    scan of the few rows that have a value); else the table's rows from the
    statistics, counted when it is small and has none yet; None when unknown.
    A read that blocks nothing: past the session's statement timeouts."""
    with conn.cursor() as cur, lifted(cur):
        if rule.walk_by:
            cur.execute(f"SELECT count(*) FROM {rule.walk} WHERE {rule.walk_by} IS NOT NULL")
            return cur.fetchone()[0]
        cur.execute("SELECT reltuples::bigint, pg_relation_size(oid) FROM pg_class WHERE oid = to_regclass(%s)",
                    (rule.walk,))
        row = cur.fetchone()
        if row is None:
            return None
        estimate, size = row
        if estimate >= 0:
            return estimate
        if size < 100 * 2 ** 20:
            cur.execute(f"SELECT count(*) FROM {rule.walk}")
            return cur.fetchone()[0]
        return None


class Progress:
    """A line every NEXUS_PROGRESS_SECONDS: rows looked at of those to look
    at, rows changed, rows per second and the time left; one line at the end."""

    def __init__(self, name: str, total: int | None, throttle: Throttle):
        self.name, self.total, self.throttle = name, total, throttle
        self.rows = self.changed = 0
        self.started = self.printed = time.monotonic()
        self.every = progress_seconds()

    def add(self, counts: _Counts) -> None:
        self.rows += counts.rows
        self.changed += counts.changed
        now = time.monotonic()
        if now - self.printed >= self.every:
            self.printed = now
            print(f"{self.name}: {self._so_far(now)}", flush=True)
            self.throttle.show(self._short(now))

    def _short(self, now: float) -> str:
        """How far, in a few words (application_name keeps 63 bytes)."""
        if self.total:
            return f"{100 * self.rows // max(self.total, self.rows)}% of {self.total:,} rows"
        return f"{self.rows:,} rows"

    def _so_far(self, now: float) -> str:
        rate = self.rows / max(now - self.started, 1e-6)
        total = max(self.total or 0, self.rows)
        text = f"{self.rows:,} rows"
        if self.total:
            text = f"{100 * self.rows // total}% ({self.rows:,} of about {total:,} rows)"
        text += f", {self.changed:,} changed, {rate:,.0f} rows/s"
        if self.total:
            text += f", about {(total - self.rows) / rate if rate else 0:,.0f} s left"
        if self.throttle.held:
            text += f", held {self.throttle.held:,.1f} s in {self.throttle.holds:,} holds"
        return text

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        held = (f" ({self.throttle.held:.1f} s of it held, in {self.throttle.holds:,} holds)"
                if self.throttle.held else "")
        if self.changed:
            print(f"{self.name}: done, {self.changed:,} rows changed of {self.rows:,} looked at, in {elapsed:.2f} s"
                  f"{held}", flush=True)
        else:
            print(f"{self.name}: nothing left to do ({self.rows:,} rows looked at in {elapsed:.2f} s)", flush=True)


def _oldest_running_xid(conn) -> str:
    """The oldest transaction still running: every row version written from
    now on has this xmin or a newer one."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296")
        return str(cur.fetchone()[0])


def _walk(conn, name: str, rule, params: dict, walk, progress: Progress, again: list, throttle: Throttle, *,
          catching_up: bool = False) -> None:
    """Every batch of walk; the ranges that skipped rows another session held go to again."""
    target, pause = batch_seconds(), batch_pause_seconds()
    size = walk.first_size(conn, first_batch_rows())
    first = walk.start
    while True:
        throttle.before_batch()
        started = time.monotonic()
        bounds, counts = _batch(conn, name, rule, params, walk, first, size, throttle=throttle)
        if bounds is None:
            return
        elapsed = time.monotonic() - started
        if catching_up:
            progress.changed += counts.changed
        else:
            progress.add(counts)
        if counts.locked < counts.found and not rule.groups:
            again.append(bounds)
        first = walk.after(bounds)
        size = int(min(walk.LARGEST, max(walk.SMALLEST, size * min(2.0, max(0.5, target / max(elapsed, 1e-6))))))
        if pause:
            time.sleep(pause)


def run(conn, name: str, rule, params: dict) -> tuple[float, int]:
    """rule over every row of the table it walks, in batches; then the catch-up
    pass of a physical walk; then once more over the batches that skipped rows
    another session held. Returns the seconds held and the holds."""
    throttle = Throttle(conn, name)
    progress = Progress(name, _estimate(conn, rule), throttle)
    try:
        with AutovacuumKeptOff(conn, rule.changes):
            _run(conn, name, rule, params, progress, throttle)
            if progress.changed:
                throttle.show("analyzing")
                started = time.monotonic()
                what = analyze_changed(conn, rule.changes, name)
                print(f"{name}: {what} in {time.monotonic() - started:.2f} s", flush=True)
    finally:
        if not conn.closed:
            throttle.close()
    return throttle.held, throttle.holds


def _run(conn, name: str, rule, params: dict, progress: Progress, throttle: Throttle) -> None:
    again: list = []
    if rule.walk_by:
        walk = KeyWalk(rule.walk, rule.walk_by)
        _walk(conn, name, rule, params, walk, progress, again, throttle)
    else:
        since = _oldest_running_xid(conn)
        walk = PageWalk(conn, rule.walk)
        _walk(conn, name, rule, params, walk, progress, again, throttle)
        throttle.show("catching up")
        _walk(conn, name, rule, params, PageWalk(conn, rule.walk, since), progress, again, throttle,
              catching_up=True)
    attempts = lock_attempts()
    for attempt in range(1, attempts + 1):
        if not again:
            break
        time.sleep(backoff_seconds(attempt))
        ranges, again = again, []
        for bounds in ranges:
            throttle.before_batch()
            _, counts = _batch(conn, name, rule, params, walk, None, None, bounds, throttle=throttle)
            progress.changed += counts.changed
            if counts.locked < counts.found:
                again.append(bounds)
    if again:
        raise LockNotGranted(
            f"{name}: gave up after {attempts} visits to rows that another session kept locked (in "
            f"{len(again)} batches); every other row is done, run the same command again once it is gone")
    progress.done()
