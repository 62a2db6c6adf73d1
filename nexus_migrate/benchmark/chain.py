"""The chain part: migrations 003 to 012 applied to the seeded history (the
schema of 000 to 002, with Task calls, sub-agents and hash chains) while the
writer writes as a proxy of 002's time does during a rolling upgrade: an
insert per request continuing live conversations, and a second after each
request was due, its response. Upstream's way and ours, each on a copy.

For every backfill step: how long it took, the rows it says it updated, the
row updates the table's statistics counted (pg_stat_user_tables.n_tup_upd, less
the writer's own response updates), and the distinct rows it changed, so that
a row updated twice shows. A seeded row is one the writer never touches, so
the seeded rows whose current version a transaction of the step wrote (xmin
between the step's first and last transaction id) are the seeded rows it
changed; the writer's rows it changed are those holding a value in a column
the migration added, which the older proxy never writes. And what it cost
the server (counters.py): WAL bytes, records and full-page images, and the
checkpoints begun meanwhile; for upstream's statements their own WAL as
EXPLAIN (ANALYZE, WAL) counts it (their transaction is open, so pg_stat_wal
has none of it yet), for ours the server's less the writer's (whose WAL the
server counts apart from PostgreSQL 18 on). Before and after the chain, the
table's size (heap, indexes) and dead tuples, both ways.

With a standby (standby.py), its replay lag is sampled all along, reported
for each backfill step and drawn beside the writer's latency. After our
chain, the writer writes alone for as long as our longest backfill took,
twice: on our chain's copy, while autovacuum clears the dead rows the chain
left (a cost both ways pay once the apply is over), and on a fresh copy of
the history before 003, with nothing to clear: the floor, with this machine's
own outliers, under the targets on the writes.

The checkpointer's state is sampled with the writer's waits, and with a
standby whose URL is known its checkpointer's too (checkpointer.py): their
share of the time in each phase through the backfills and within the writes
that waited longer than the longest-write target, and how close to a
checkpoint's end those writes fell due.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from psycopg2 import sql

from ..proxy import accounts
from . import checkpointer, standby
from .chainreport import TARGETS_MAX_WRITE_MS, at_most_once, rows_changed, targets
from .counters import Counters, difference, plan_wal
from .scratch import Server, connect
from .seed import BEFORE_003, DOMAINS, PRE_003, live_conversations, pre_003
from .ways import APPLY, WAYS, is_backfill, migration_ids, migration_steps, observing_backfills, step_label
from .writer import LONE_COMMIT, LONE_COMMIT_EVERY, WAIT_SAMPLE_SECONDS, WRITER, latency_stats, sampling_waits, writing

SCRATCH = {"upstream": "nexus_benchmark_chain_upstream", "ours": "nexus_benchmark_chain_ours"}
FLOOR_COPY = "nexus_benchmark_chain_floor"
RESPOND_AFTER_SECONDS = 1.0
# The writer alone, after our chain and on a fresh copy, each for as long as
# our longest backfill took: at least FLOOR_SECONDS_MIN (a p99 of fewer writes
# says little), at most --floor-seconds-max.
FLOOR_SECONDS_MIN = 10.0
FLOOR_SECONDS_MAX = 600.0

TABLE_STATE = """
    SELECT pg_total_relation_size(relid), pg_table_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup,
           autovacuum_count, autoanalyze_count
      FROM pg_stat_user_tables WHERE relid = 'api_requests'::regclass"""
TABLE_STATE_KEYS = ("total_bytes", "table_bytes", "indexes_bytes", "live_tuples", "dead_tuples", "autovacuums",
                    "autoanalyzes")
ROW_UPDATES = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'api_requests'::regclass"
# The low 32 bits of a transaction id, as a row's xmin shows it.
XID = "SELECT pg_current_xact_id()::text::bigint % 4294967296"
COLUMN_DEFAULTS = """
    SELECT a.attname, pg_get_expr(d.adbin, d.adrelid)
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
     WHERE a.attrelid = 'api_requests'::regclass AND a.attnum > 0 AND NOT a.attisdropped"""


def chain_ids() -> list[str]:
    """003 to the last migration, in order."""
    ids = migration_ids()
    return ids[ids.index(BEFORE_003) + 1:]


def _one(url: str, query, args=None):
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()


def table_state(server: Server, name: str) -> dict:
    """api_requests' size and tuples, once every other session has ended (and
    with it, sent its statistics)."""
    server.wait_for_no_sessions(name)
    return dict(zip(TABLE_STATE_KEYS, _one(server.url_of(name), TABLE_STATE)))


def _xmin_between(low: int, high: int) -> sql.Composable:
    """xmin written by a transaction that began after the one whose id is
    low and before high (ids as xmin shows them, across a wraparound too)."""
    xmin = sql.SQL("xmin::text::bigint")
    if low <= high:
        return sql.SQL("{} > {} AND {} < {}").format(xmin, sql.Literal(low), xmin, sql.Literal(high))
    return sql.SQL("({} > {} OR {} < {})").format(xmin, sql.Literal(low), xmin, sql.Literal(high))


def seeded_rows_changed(url: str, seeded_at, low: int, high: int) -> int:
    query = sql.SQL("SELECT count(*) FROM api_requests WHERE created_at <= {} AND {}").format(
        sql.Literal(seeded_at), _xmin_between(low, high))
    return _one(url, query)[0]


def columns(url: str) -> dict[str, str | None]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(COLUMN_DEFAULTS)
            return dict(cur.fetchall())
    finally:
        conn.close()


def writer_rows_changed(url: str, seeded_at, added: dict[str, str | None]) -> int:
    """The writer's rows holding anything but the default in a column of added."""
    if not added:
        return 0
    changed = sql.SQL(" OR ").join(sql.SQL("{} IS DISTINCT FROM {}").format(sql.Identifier(name),
                                                                             sql.SQL(default or "NULL"))
                                   for name, default in added.items())
    return _one(url, sql.SQL("SELECT count(*) FROM api_requests WHERE created_at > {} AND ({})").format(
        sql.Literal(seeded_at), changed))[0]


class OursProbe:
    """Looks at each backfill step that yoyo runs: its time, the row updates
    the table counted during it less the writer's, the seeded rows it
    changed, and the server's WAL and checkpoints meanwhile less the
    writer's WAL. Its own work (a statistics flush, a scan of the table) is
    paused out of the apply time and of the writer's latencies."""

    def __init__(self, url: str, writer, seeded_at, exact_counts: bool, version: int):
        self.url, self.writer, self.seeded_at, self.exact = url, writer, seeded_at, exact_counts
        self.monitor = connect(url, application_name="nexus-benchmark-probe")
        self.counters = Counters(url, version)
        self.steps: list[dict] = []
        self.pauses: list[tuple[float, float]] = []

    def _read(self, query) -> int:
        with self.monitor.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(query)
            return cur.fetchone()[0]

    def _counts(self, conn) -> dict:
        """The table's row updates, the rows the writer updated, a transaction
        id, the server's counters and the writer's WAL, with every session's
        updates and WAL so far reported."""
        if self.exact:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_stat_force_next_flush()")  # sent when the statement ends
            if not conn.autocommit:
                conn.commit()
        writer_updates = self.writer.rows_updated()
        return {"table": self._read(ROW_UPDATES), "writer": writer_updates, "xid": self._read(XID),
                "server": self.counters.read(), "writer_wal": self.counters.sessions_wal(WRITER, LONE_COMMIT)}

    def started(self, step, label: str, conn) -> None:
        paused = time.monotonic()
        self.before = self._counts(conn)
        self.start = time.monotonic()
        self.pauses.append((paused, self.start))

    def finished(self, step, label: str, conn) -> None:
        end = time.monotonic()
        before, after = self.before, self._counts(conn)
        changed = seeded_rows_changed(self.url, self.seeded_at, before["xid"], after["xid"])
        held, holds = getattr(step, "held", (0.0, 0))  # a Backfill's holds for the server
        self.pauses.append((end, time.monotonic()))
        server = difference(before["server"], after["server"])
        writer = difference(before["writer_wal"], after["writer_wal"])
        own = ({k: server[k] - writer[k] if server[k] is not None else None for k in writer} if writer
               else {k: server[k] for k in ("wal_bytes", "wal_records", "wal_fpi")})
        self.steps.append({"step": label, "window": (self.start, end), "seconds": round(end - self.start, 3),
                           "rows_updated": _count(getattr(step, "rows_updated", None)),
                           "held_seconds": round(held, 3), "holds": holds,
                           "row_updates": (after["table"] - before["table"]) - (after["writer"] - before["writer"])
                           if self.exact else None,
                           "seeded_rows_changed": changed,
                           **costs(server, writer, own, "the server's less the writer's" if writer
                                   else "the server's, the writer's in it")})

    def close(self) -> None:
        self.monitor.close()
        self.counters.close()


class UpstreamProbe:
    """The same for upstream's way, inside its one transaction: each backfill
    step's time, the rows its statements updated, the row updates the
    transaction's own statistics counted, the WAL its statements wrote as
    EXPLAIN ANALYZE counts it, and the server's WAL position and checkpoints."""

    COUNT = "SELECT pg_stat_get_xact_tuples_updated('api_requests'::regclass)"

    def __init__(self, url: str, migration_id: str, version: int):
        self.migration_id = migration_id
        self.counters = Counters(url, version)
        self.steps: list[dict] = []
        self.pauses: list = []

    def __call__(self, step, cur, run) -> None:
        if not is_backfill(step):
            run()
            return
        cur.execute(self.COUNT)
        before = cur.fetchone()[0]
        server_before = self.counters.read()
        start = time.monotonic()
        plans = run(explained=True)
        end = time.monotonic()
        server = difference(server_before, self.counters.read())
        cur.execute(self.COUNT)
        own = plan_wal(plans)
        # (the server's pg_stat_wal has none of the open transaction's WAL: not shown)
        server["wal_records"] = server["wal_fpi"] = None
        self.steps.append({"step": step_label(self.migration_id, migration_steps(self.migration_id), step),
                           "window": (start, end), "seconds": round(end - start, 3),
                           "rows_updated": own.pop("rows_updated"), "row_updates": cur.fetchone()[0] - before,
                           **costs(server, None, own, "its statements' own (EXPLAIN ANALYZE)")})

    def close(self) -> None:
        self.counters.close()


def costs(server: dict, writer: dict | None, own: dict, source: str) -> dict:
    """A backfill step's cost to the server, as the JSON keeps it: the
    server's (WAL position, pg_stat_wal, checkpoints), the writer's WAL
    where known, and the step's own WAL (from source)."""
    return {"server": {k: server[k] for k in ("wal_bytes", "wal_records", "wal_fpi")}, "writer_wal": writer,
            "wal": {**own, "source": source},
            "checkpoints": {"requested": server["checkpoints_requested"], "timed": server["checkpoints_timed"]}}


def wal_per_row(wal_bytes: int | None, rows: int | None) -> float | None:
    return round(wal_bytes / rows, 1) if wal_bytes is not None and rows else None


@contextmanager
def account_map():
    """NEXUS_ACCOUNT_MAP naming a file that maps the seeded domains but the
    last to accounts, for 005's backfill, while the chain runs."""
    with tempfile.TemporaryDirectory(prefix="nexus-benchmark-") as folder:
        path = Path(folder) / "accounts.csv"
        path.write_text("".join(f"{domain},acc_{domain.split('.')[0]}\n" for domain in DOMAINS[:-1]))
        previous = os.environ.get(accounts.SETTING)
        os.environ[accounts.SETTING] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(accounts.SETTING, None)
            else:
                os.environ[accounts.SETTING] = previous


def run(server: Server, requests: int, every: float, respond_after: float = RESPOND_AFTER_SECONDS,
        standby_choice: standby.Choice | None = None, floor_seconds_max: float = FLOOR_SECONDS_MAX,
        lone_commit: bool = False) -> dict:
    with account_map():
        return _run(server, requests, every, respond_after, standby_choice, floor_seconds_max, lone_commit)


def _run(server: Server, requests: int, every: float, respond_after: float, standby_choice: standby.Choice | None,
         floor_seconds_max: float, lone_commit: bool) -> dict:
    if not server.exists(PRE_003):
        print(f"001 and 002 applied to a copy of the seeded database, {PRE_003} ...", flush=True)
        pre_003(server)
    seeded_at = _one(server.url_of(PRE_003), "SELECT max(created_at) FROM api_requests")[0]
    live = live_conversations(server.url_of(PRE_003), requests)
    exact = server.version >= 15  # pg_stat_force_next_flush()
    results: dict = {"insert_every_ms": every * 1000, "respond_after_ms": respond_after * 1000,
                     "migrations": chain_ids(), "live_conversations": len(live), "exact_row_counts": exact,
                     "standby": standby_choice.line if standby_choice else None,
                     "max_replica_lag_s": standby.max_replica_lag(),
                     "lone_commit_every_ms": LONE_COMMIT_EVERY * 1000 if lone_commit else None, "ways": {}}
    with standby.attached(server, standby_choice) as replica:
        results["standby_measured"] = replica is not None
        conversations = live
        for way in WAYS:
            found, conversations = _chain(server, way, seeded_at, exact, every, respond_after, conversations,
                                          replica, lone_commit)
            results["ways"][way] = found
            if way == "ours":
                longest = max((s["seconds"] for s in found["backfills"]), default=0.0)
                seconds = round(min(floor_seconds_max, max(FLOOR_SECONDS_MIN, longest)), 3)
                print(f"the writer alone for {seconds:g} s (our longest backfill took {longest:g} s), "
                      "as a floor ...", flush=True)
                results["writer_alone"] = writer_alone(server.url_of(SCRATCH[way]), every, respond_after,
                                                       conversations, seconds, server.version, replica, lone_commit)
                results["writer_alone"]["longest_backfill_seconds"] = longest
            server.drop(SCRATCH[way])
        seconds = results["writer_alone"]["seconds"]
        print(f"the writer alone for {seconds:g} s on a fresh copy of the history before 003, with no dead rows "
              "to clear, as the floor the targets read ...", flush=True)
        results["writer_alone_fresh"] = fresh_floor(server, every, respond_after, live, seconds, replica,
                                                    lone_commit)
    for step in results["ways"]["ours"]["backfills"]:
        step["at_most_once"] = at_most_once(step)
    results["targets"] = targets(results)
    return results


def _chain(server: Server, way: str, seeded_at, exact: bool, every: float, respond_after: float, conversations,
           replica: standby.Standby | None, lone_commit: bool) -> tuple[dict, list]:
    """003 to the last migration applied one way to a copy of PRE_003 while
    the writer writes, the copy kept for the floor; what was found and where
    the writer's conversations stand."""
    name = SCRATCH[way]
    url = server.create(name, template=PRE_003)
    _one(url, "ANALYZE api_requests")  # a new database's statistics start empty
    found: dict = {"before": table_state(server, name), "migrations": {}, "backfills": []}
    if replica:
        replica.wait_caught_up()  # the copy's files, replayed: not a migration's lag
    origin = None
    during_backfills: list = []  # the writer's statements due while a backfill ran
    commits_during_backfills: list = []  # and its lone commits
    backfill_windows: list = []
    states_during_backfills: list = []  # the checkpointer's, in the migrations with a backfill
    standby_states_during_backfills: list = []  # and the standby's
    for migration_id in chain_ids():
        print(f"{way}: applying {migration_id} while the writer writes ...", flush=True)
        before_columns = columns(url)
        low = _one(url, XID)[0]
        states: list = []  # the checkpointer's, as checkpointer.record keeps them
        standby_states: list = []  # the standby's checkpointer's
        with writing(url, every, respond_after, conversations, lone_commit) as writer:
            probe = (OursProbe(url, writer, seeded_at, exact, server.version) if way == "ours"
                     else UpstreamProbe(url, migration_id, server.version))
            try:
                with sampling_waits(url, checkpointer=states) as waits, \
                        (checkpointer.sampling(replica.url, standby_states, WAIT_SAMPLE_SECONDS)
                         if replica and replica.url else nullcontext()):
                    observed = (observing_backfills(migration_id, probe.started, probe.finished) if way == "ours"
                                else nullcontext())
                    with observed:
                        start = time.monotonic()
                        if way == "ours":
                            APPLY[way](url, migration_id)
                        else:
                            APPLY[way](url, migration_id, around_step=probe)
                        end = time.monotonic()
            finally:
                probe.close()
        high = _one(url, XID)[0]
        written = writer.written
        conversations = written.conversations
        origin = origin if origin is not None else min([start] + [due for due, _, _ in written.inserts])
        added = {c: d for c, d in columns(url).items() if c not in before_columns}
        writer_changed = writer_rows_changed(url, seeded_at, added) if probe.steps else 0
        if way == "upstream" and probe.steps:  # its one transaction is the only one that changed seeded rows
            probe.steps[-1]["seeded_rows_changed_by_the_migration"] = seeded_rows_changed(url, seeded_at, low, high)
        paused = sum(b - a for a, b in probe.pauses if start <= a <= end)
        for step in probe.steps:
            a, b = step.pop("window")
            step.update({"way": way, "migration": migration_id, "writer_rows_changed_by_the_migration":
                         writer_changed, "inserts": latency_stats(written.inserts, a, b),
                         "updates": latency_stats(written.updates, a, b),
                         "lone_commits": latency_stats(written.commits, a, b)})
            step["wal_bytes_per_changed_row"] = wal_per_row(step["wal"]["wal_bytes"], rows_changed(step))
            if replica:
                step.update(replica.lag_in(a, b))
            during_backfills += [w for w in written.inserts + written.updates if a <= w[0] <= b]
            commits_during_backfills += [c for c in written.commits if a <= c[0] <= b]
            backfill_windows.append((a, b))
            found["backfills"].append(step)
        if probe.steps:
            states_during_backfills += states
            standby_states_during_backfills += standby_states
        found["migrations"][migration_id] = {
            "apply_seconds": round(end - start - paused, 3), "probe_seconds": round(paused, 3),
            "inserts": latency_stats(written.inserts, start, end, probe.pauses),
            "updates": latency_stats(written.updates, start, end, probe.pauses),
            "lone_commits": latency_stats(written.commits, start, end, probe.pauses),
            "writer_waits": dict(waits.most_common()),
            "window": [round(start - origin, 3), round(end - origin, 3)],
            "samples": written.chart_series(origin),
            "checkpointer": [(round(at - origin, 3), state) for at, state in states],
            "standby_checkpointer": [(round(at - origin, 3), state) for at, state in standby_states]}
        if replica:
            found["migrations"][migration_id].update(replica.lag_in(start, end))
    found["writes_during_backfills"] = latency_stats(during_backfills, float("-inf"), float("inf"))
    found["lone_commits_during_backfills"] = latency_stats(commits_during_backfills, float("-inf"), float("inf"))
    found["checkpointer_during_backfills"] = checkpointer_beside_slow_writes(
        states_during_backfills, backfill_windows, during_backfills)
    found["standby_checkpointer_during_backfills"] = checkpointer_beside_slow_writes(
        standby_states_during_backfills, backfill_windows, during_backfills)
    if replica:
        found["standby_lag"] = replica.chart_points(origin, end, origin)
    found["after"] = table_state(server, name)
    return found, conversations


def checkpointer_beside_slow_writes(states: list, windows: list, writes: list) -> dict:
    """The checkpointer's share of time in each state during the backfills,
    and during the writes over the longest-write target among them, from
    each write's due time to its end (the writes' times overlapping are
    counted once); and how close to a checkpoint's end the writes fell due,
    all of them and the slow ones."""
    slow = [(due, due + latency) for due, latency, _ in writes if latency * 1000 > TARGETS_MAX_WRITE_MS]
    return {"sampled": bool(states), "slow_writes": len(slow),
            "slow_seconds": round(sum(b - a for a, b in checkpointer.merged(slow)), 3),
            "backfills": checkpointer.shares(checkpointer.seconds_in(states, windows)),
            "slow": checkpointer.shares(checkpointer.seconds_in(states, slow)),
            "checkpoints_ended": len(checkpointer.ends(states)),
            "before_end": {"all": checkpointer.before_end(states, [due for due, _, _ in writes]),
                           "slow": checkpointer.before_end(states, [due for due, _ in slow])}}


def writer_alone(url: str, every: float, respond_after: float, conversations, seconds: float, version: int,
                 replica: standby.Standby | None = None, lone_commit: bool = False) -> dict:
    """The writer's latencies with no migration running: what this machine
    and server give a proxy's writes anyway, the floor under every target on
    them; with the server's WAL meanwhile and the standby's lag."""
    counters = Counters(url, version)
    try:
        with writing(url, every, respond_after, conversations, lone_commit) as writer:
            before = counters.read()
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            server = difference(before, counters.read())
    finally:
        counters.close()
    written = writer.written
    found = {"seconds": seconds, "inserts": latency_stats(written.inserts, start, end),
             "updates": latency_stats(written.updates, start, end),
             "writes": latency_stats(written.inserts + written.updates, start, end),
             "lone_commits": latency_stats(written.commits, start, end), "server": server}
    if replica:
        found.update(replica.lag_in(start, end))
    return found


def fresh_floor(server: Server, every: float, respond_after: float, conversations, seconds: float,
                replica: standby.Standby | None, lone_commit: bool = False) -> dict:
    """The writer alone on a new copy of PRE_003: no migration, and no dead
    rows for autovacuum to clear, which after a chain (either way) it works
    through for minutes while the floor on the chain's copy runs."""
    url = server.create(FLOOR_COPY, template=PRE_003)
    try:
        _one(url, "ANALYZE api_requests")
        if replica:
            replica.wait_caught_up()
        return writer_alone(url, every, respond_after, conversations, seconds, server.version, replica, lone_commit)
    finally:
        server.drop(FLOOR_COPY)


def _count(value) -> int | None:
    """A step's own count of the rows it updated, if it keeps one as a number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
