"""Backfills: a rule applied to every row of api_requests that still needs it,
in short batches, while the proxy keeps writing.

A migration states a rule as SQL, in three parts (see steps.backfill):

- find: a SELECT of the rows of one batch that still need the rule, with
  their new values. {batch} in it stands for the batch's predicate on the
  primary key of the table walked (alias t): `t.request_id BETWEEN first AND
  last`. What "still needs it" means is the rest of its WHERE clause, so a
  batch that died, an interrupted run or a second run just continues.
- update: an UPDATE of api_requests from `todo` (the rows find returned that
  this batch could lock, with find's columns), which checks again that the
  row still needs it: the proxy may have filled it since the batch read it.
- keep (optional): a statement over `changed` (the update's RETURNING rows),
  run in the same transaction: where a rollback must restore exactly what the
  update overwrote, keep saves it.

Each batch is one statement in a transaction of its own under the lock_timeout:

    WITH found AS MATERIALIZED (find), todo AS (found's rows, locked FOR NO KEY
    UPDATE [SKIP LOCKED]), changed AS (update) [, kept AS (keep)] SELECT counts

FOR NO KEY UPDATE, not FOR UPDATE: the proxy's inserts check their foreign
keys with FOR KEY SHARE on the referenced row, which FOR UPDATE would block.
A rule that changes rows one by one skips rows the proxy holds (SKIP LOCKED)
and comes back for them after the pass. A rule that changes a group of rows
together (a conversation) waits for them instead, at most lock_timeout, so
that a group is never half done; a batch that cannot get its locks is rolled
back and tried again, like a ddl step, and finally gives up with one line.

Batches follow the primary key (request_id). The size of the next batch is
the size of the last one scaled by how far its time was from the target
(NEXUS_BATCH_SECONDS), halved or doubled at most, as GitLab's batched
background migrations adapt theirs. Rows the proxy is updating wait for a
batch at most about that long.

Settings (environment): NEXUS_BATCH_SECONDS (target duration of a batch,
default 0.1), NEXUS_BATCH_ROWS (size of the first batch, default 1000),
NEXUS_BATCH_PAUSE_MS (pause between batches, default 0), and the lock and
progress settings of settings.py.
"""

from __future__ import annotations

import re
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .lock_retries import LockNotGranted, in_transactions_with_lock_retries
from .settings import backoff_seconds, lock_attempts, positive_setting, progress_seconds
from .statement import Statement

# A batch reads one range of keys and looks the rows it needs up by key: a few
# hundred rows, each an index lookup away. The statistics lag behind a running
# backfill (it changes the very columns its rules filter on), and an estimate
# of thousands of rows where there are dozens would make the planner hash or
# merge against a scan of the whole table, in every batch (008's took 0.9 s
# instead of 17 ms at 200,000 rows). So a batch's planner is held to nested
# loops over index lookups.
NESTED_LOOPS_ONLY = "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

FIRST_KEY = uuid.UUID(int=0)
LAST_KEY = uuid.UUID(int=2 ** 128 - 1)
SMALLEST_BATCH, LARGEST_BATCH = 10, 100_000


def batch_seconds() -> float:
    return positive_setting("NEXUS_BATCH_SECONDS", 0.1)


def first_batch_rows() -> int:
    return max(1, int(positive_setting("NEXUS_BATCH_ROWS", 1000)))


def batch_pause_seconds() -> float:
    return positive_setting("NEXUS_BATCH_PAUSE_MS", 0, zero_ok=True) / 1000


PARAMETER = re.compile(r"%\((\w+)\)s")
RETURNING = re.compile(r"\bRETURNING\b", re.I)


def literal(value) -> str:
    """value as an SQL literal: a UUID, a number, a string or a list of strings."""
    if isinstance(value, (list, tuple)):
        return f"ARRAY[{', '.join(literal(v) for v in value)}]" if value else "'{}'"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "NULL"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("'", "''")
    # E'' keeps a backslash a backslash whatever standard_conforming_strings says
    return f"E'{text.replace(chr(92), chr(92) * 2)}'" if "\\" in text else f"'{text}'"


def substitute(sql: str, params: dict) -> str:
    """sql with each %(name)s replaced by params[name] as a literal. The
    statements are sent as text, without the driver's parameters, so that
    they are exactly what `scripts/migrate sql` prints."""
    return PARAMETER.sub(lambda m: literal(params[m.group(1)]), sql)


@dataclass
class Rule:
    """One direction of a backfill: see the module's docstring."""

    find: str
    update: str
    keep: str | None = None
    walk: str = "api_requests"  # the table whose primary key (request_id) the batches follow
    groups: bool = False  # rows change together: wait for their locks instead of skipping them

    def __post_init__(self):
        if "{batch}" not in self.find:
            raise ValueError(f"a backfill's find names its batch predicate as {{batch}}: {self.find!r}")

    def statement(self, params: dict, first=FIRST_KEY, last=LAST_KEY, *, batched: bool = True) -> str:
        """The statement of the batch of keys first..last: what each batch
        sends. batched=False: the rule as one plain UPDATE over the whole
        table, which locks no row ahead and skips none (the original scripts'
        way, for the benchmark)."""
        predicate = f"t.request_id BETWEEN '{first}' AND '{last}'" if batched else "true"
        find = self.find.replace("{batch}", predicate)
        if batched:
            # In key order, so that two sessions locking the same rows never deadlock.
            wait = "" if self.groups else " SKIP LOCKED"
            todo = (f"SELECT found.* FROM found JOIN api_requests a ON a.request_id = found.request_id\n"
                    f"     ORDER BY a.request_id FOR NO KEY UPDATE OF a{wait}")
        else:
            todo = "SELECT * FROM found"
        update = textwrap.dedent(self.update.strip("\n")).rstrip()
        if not RETURNING.search(update):
            update += "\nRETURNING t.request_id"
        parts = [f"found AS MATERIALIZED (\n{_indent(find)}\n)", f"todo AS (\n    {todo}\n)",
                 f"changed AS (\n{_indent(update)}\n)"]
        if self.keep:
            parts.append(f"kept AS (\n{_indent(self.keep)}\n)")
        sql = ("WITH " + ",\n".join(parts) +
               "\nSELECT (SELECT count(*) FROM found), (SELECT count(*) FROM todo), (SELECT count(*) FROM changed)")
        return substitute(sql, params)


def _indent(sql: str) -> str:
    return textwrap.indent(textwrap.dedent(sql.strip("\n")).rstrip(), "    ")


@dataclass
class Backfill:
    """A step that applies a rule (and on rollback, its undoing if it has
    one) to api_requests in batches. name is how progress lines call it."""

    name: str
    forward: Rule
    backward: Rule | None = None
    params: Callable[[], dict] = dict  # the values of the rule's %(name)s, read when it runs
    # When it returns a line, the backfill is not run and the line is printed
    # instead (005 without a mapping says how many rows wait for one).
    unless: Callable[[object], str | None] | None = None

    @property
    def restores(self) -> str | None:
        """The table of kept values that the rollback puts back, and empties:
        the data-loss guard does not count its rows as lost when it is dropped."""
        return self.backward.walk if self.backward and self.backward.walk != "api_requests" else None

    def _rule(self, direction: str) -> Rule | None:
        return self.forward if direction == "apply" else self.backward

    @property
    def apply_sql(self) -> str:
        return self.forward.statement(self.params())

    @property
    def rollback_sql(self) -> str | None:
        return self.backward.statement(self.params()) if self.backward else None

    def statements(self, direction: str) -> list[Statement]:
        """One batch over the whole key range: run by psql, it gives the
        result of the whole backfill (in one transaction)."""
        rule = self._rule(direction)
        return [Statement(f"-- {self.name}: one batch, over every key\n" + rule.statement(self.params()), True)] \
            if rule else []

    def blocking_statements(self) -> list[str]:
        """The rule as the original scripts ran it: one UPDATE over the whole table."""
        return [self.forward.statement(self.params(), batched=False)]

    def apply(self, conn) -> None:
        self._run(conn, "apply")

    def rollback(self, conn) -> None:
        self._run(conn, "rollback")

    def _run(self, conn, direction: str) -> None:
        rule = self._rule(direction)
        if rule is None:
            return
        if direction == "apply" and self.unless:
            notice = self.unless(conn)
            if notice:
                print(notice, flush=True)
                return
        if direction == "rollback" and not _exists(conn, rule.walk):
            # 008 applied by a version without its record: nothing kept, nothing to put back
            print(f"{self.name} (rollback): {rule.walk} does not exist, nothing to put back", flush=True)
            return
        name = self.name if direction == "apply" else f"{self.name} (rollback)"
        run(conn, name, rule, self.params())


@dataclass
class _Counts:
    rows: int  # rows of the table walked in the batch's key range
    found: int  # of them, those that still needed the rule
    locked: int  # of those, the ones the batch could lock
    changed: int


def _batch(conn, name: str, rule: Rule, params: dict, first: uuid.UUID, size: int | None,
           last: uuid.UUID | None = None):
    """One batch in a transaction of its own, from key first: size rows of
    the table walked, or up to key last. Returns (last key, counts). The
    statement starts with the backfill's name, which pg_stat_activity shows."""

    def work(cur):
        cur.execute(NESTED_LOOPS_ONLY)
        if last is None:
            # The key that ends this batch: an index-only walk of the primary
            # key. Fewer rows than asked: this is the last batch, and it
            # reaches to the end of the key space.
            cur.execute(f"""
                SELECT count(*), (array_agg(request_id ORDER BY request_id DESC))[1]
                  FROM (SELECT request_id FROM {rule.walk} WHERE request_id >= %s
                         ORDER BY request_id LIMIT %s) AS batch""", (str(first), size))
            rows, end = cur.fetchone()
            end = LAST_KEY if rows < size else uuid.UUID(str(end))
        else:
            rows, end = None, last
        cur.execute(f"-- {name}: a batch\n" + rule.statement(params, first, end))
        found, locked, changed = cur.fetchone()
        return end, _Counts(rows if rows is not None else found, found, locked, changed)

    # (No wait for long holders: a batch takes only row locks and ROW
    # EXCLUSIVE, which an autovacuum or a report does not hold up.)
    return in_transactions_with_lock_retries(
        conn, work, what=f"the locks for a batch of «{_first_words(rule)}» (keys from {first})",
        nothing_changed="the batches before it are done and nothing of this one was changed")


def _first_words(rule: Rule) -> str:
    return " ".join(rule.update.split())[:60]


def _exists(conn, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        return cur.fetchone()[0]


def _estimate(conn, table: str) -> int | None:
    """How many rows table has, from the statistics; counted when it is small
    and has none yet; None when unknown."""
    with conn.cursor() as cur:
        cur.execute("SELECT reltuples::bigint, pg_relation_size(oid) FROM pg_class WHERE oid = to_regclass(%s)",
                    (table,))
        row = cur.fetchone()
        if row is None:
            return None
        estimate, size = row
        if estimate >= 0:
            return estimate
        if size < 100 * 2 ** 20:
            cur.execute(f"SELECT count(*) FROM {table}")
            return cur.fetchone()[0]
        return None


class Progress:
    """A line every NEXUS_PROGRESS_SECONDS: rows looked at of those to look
    at, rows changed, rows per second and the time left; one line at the end."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total = name, total
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

    def _so_far(self, now: float) -> str:
        rate = self.rows / max(now - self.started, 1e-6)
        total = max(self.total or 0, self.rows)
        text = f"{self.rows:,} rows"
        if self.total:
            text = f"{100 * self.rows // total}% ({self.rows:,} of about {total:,} rows)"
        text += f", {self.changed:,} changed, {rate:,.0f} rows/s"
        if self.total:
            text += f", about {(total - self.rows) / rate if rate else 0:,.0f} s left"
        return text

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.changed:
            print(f"{self.name}: done, {self.changed:,} rows changed of {self.rows:,} looked at, in {elapsed:.2f} s",
                  flush=True)
        else:
            print(f"{self.name}: nothing left to do ({self.rows:,} rows looked at in {elapsed:.2f} s)", flush=True)


def run(conn, name: str, rule: Rule, params: dict) -> None:
    """rule over every row of the table it walks, in batches, then once more
    over the batches that skipped rows another session held."""
    target, pause = batch_seconds(), batch_pause_seconds()
    size = first_batch_rows()
    progress = Progress(name, _estimate(conn, rule.walk))
    again: list[tuple[uuid.UUID, uuid.UUID]] = []  # key ranges that skipped rows
    first = FIRST_KEY
    while True:
        started = time.monotonic()
        last, counts = _batch(conn, name, rule, params, first, size)
        elapsed = time.monotonic() - started
        progress.add(counts)
        if counts.locked < counts.found and not rule.groups:
            again.append((first, last))
        if last == LAST_KEY:
            break
        first = uuid.UUID(int=last.int + 1)
        size = int(min(LARGEST_BATCH, max(SMALLEST_BATCH, size * min(2.0, max(0.5, target / max(elapsed, 1e-6))))))
        if pause:
            time.sleep(pause)
    attempts = lock_attempts()
    for attempt in range(1, attempts + 1):
        if not again:
            break
        time.sleep(backoff_seconds(attempt))
        ranges, again = again, []
        for first, last in ranges:
            _, counts = _batch(conn, name, rule, params, first, None, last)
            progress.changed += counts.changed
            if counts.locked < counts.found:
                again.append((first, last))
    if again:
        raise LockNotGranted(
            f"{name}: gave up after {attempts} visits to rows that another session kept locked (in "
            f"{len(again)} batches); every other row is done, run the same command again once it is gone")
    progress.done()


def backfill(name: str, *, find: str, update: str, keep: str | None = None, groups: bool = False,
             undo=None, params=dict, unless=None):
    """A step that applies a rule to api_requests in batches (undo: its rollback's rule)."""
    return Backfill(name, Rule(find, update, keep, groups=groups), undo, params, unless)


def backfill_undo(*, walk: str, find: str, update: str, keep: str | None = None):
    """The rollback of a backfill: walks the table where its keep saved what
    it overwrote, puts it back and (keep) deletes what it put back. The rows
    of a group go back together."""
    return Rule(find, update, keep, walk=walk, groups=True)
