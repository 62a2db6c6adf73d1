"""Backfills: a rule applied to every row of api_requests that still needs it,
in short batches, while the proxy keeps writing.

A migration states a rule as SQL, in three parts (see steps.backfill):

- find: a SELECT of the rows of one batch that still need the rule, with
  their new values. {batch} in it stands for the batch's predicate on the
  table walked (alias t): a range of its pages, `t.ctid >= '(first,0)' AND
  t.ctid < '(end,0)'`, or with walk_by a range of an indexed column's values
  (see batches.py). What "still needs it" means is the rest of its WHERE clause, so a
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

Batches follow the table's pages in physical order (batches.py). The size of
the next batch is the size of the last one scaled by how far its time was from the target
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
from collections.abc import Callable
from dataclasses import dataclass, field

from .batches import run
from .statement import Statement, labelled

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
    walk: str = "api_requests"  # the table the batches walk (alias t in find)
    changes: str = "api_requests"  # the table update writes: autovacuum is kept off it meanwhile (autovacuum.py)
    groups: bool = False  # rows change together: wait for their locks instead of skipping them
    # None: the batches walk the table's pages in physical order. A column: they
    # walk its values in the order of its index (where it is NOT NULL), visiting
    # only the rows that have one (008's sub-task starts).
    walk_by: str | None = None

    def __post_init__(self):
        if "{batch}" not in self.find:
            raise ValueError(f"a backfill's find names its batch predicate as {{batch}}: {self.find!r}")

    def whole(self) -> str:
        """The batch predicate that covers the whole walk."""
        return f"t.{self.walk_by} IS NOT NULL" if self.walk_by else "t.ctid >= '(0,0)'::tid"

    def statement(self, params: dict, predicate: str | None = None, *, batched: bool = True) -> str:
        """The statement of one batch, whose rows of the table walked are those
        of predicate (by default the whole walk): what each batch sends.
        batched=False: the rule as one plain UPDATE over the whole table, which
        locks no row ahead and skips none (the original scripts' way, for the
        benchmark)."""
        predicate = (predicate or self.whole()) if batched else "true"
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
        looked_at = f"(SELECT count(*) FROM {self.walk} t WHERE {predicate})" if batched else "NULL"
        sql = ("WITH " + ",\n".join(parts) + f"\nSELECT {looked_at}, (SELECT count(*) FROM found), "
               "(SELECT count(*) FROM todo), (SELECT count(*) FROM changed)")
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
    # Of its last run in this process: seconds held for the server, and holds.
    held: tuple[float, int] = field(default=(0.0, 0), compare=False, repr=False)

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
        """One batch over the whole walk: run by psql, it gives the result of
        the whole backfill (in one transaction)."""
        rule = self._rule(direction)
        return [Statement(labelled(self.name, "one batch, over the whole table", rule.statement(self.params())),
                          True)] if rule else []

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
        self.held = run(conn, name, rule, self.params())


def _exists(conn, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        return cur.fetchone()[0]


def backfill(name: str, *, find: str, update: str, keep: str | None = None, groups: bool = False,
             walk_by: str | None = None, undo=None, params=dict, unless=None):
    """A step that applies a rule to api_requests in batches (undo: its
    rollback's rule). walk_by: an indexed column whose rows alone need the
    rule; the batches visit only those."""
    return Backfill(name, Rule(find, update, keep, groups=groups, walk_by=walk_by), undo, params, unless)


def backfill_undo(*, walk: str, find: str, update: str, keep: str | None = None):
    """The rollback of a backfill: walks the table where its keep saved what
    it overwrote, puts it back and (keep) deletes what it put back. The rows
    of a group go back together."""
    return Rule(find, update, keep, walk=walk, groups=True)
