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
the migration added, which the older proxy never writes. Before and after the
chain, the table's size (heap, indexes) and dead tuples, both ways.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from psycopg2 import sql

from ..proxy import accounts
from .report import LABEL, Panel, latency_header, latency_row, size, target
from .scratch import Server, connect
from .seed import BEFORE_003, DOMAINS, PRE_003, live_conversations, pre_003
from .ways import APPLY, WAYS, is_backfill, migration_ids, migration_steps, observing_backfills, step_label
from .writer import WAIT_SAMPLE_SECONDS, chart_points, latency_stats, lock_waits, sampling_waits, writing

SCRATCH = {"upstream": "nexus_benchmark_chain_upstream", "ours": "nexus_benchmark_chain_ours"}
RESPOND_AFTER_SECONDS = 1.0
FLOOR_SECONDS = 30.0  # the writer alone, before our way's chain

TARGETS_MAX_WRITE_MS = 100
TARGETS_BACKFILL_RATIO = 2.0

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
    the table counted during it less the writer's, and the seeded rows it
    changed. Its own work (a statistics flush, a scan of the table) is
    paused out of the apply time and of the writer's latencies."""

    def __init__(self, url: str, writer, seeded_at, exact_counts: bool):
        self.url, self.writer, self.seeded_at, self.exact = url, writer, seeded_at, exact_counts
        self.monitor = connect(url, application_name="nexus-benchmark-probe")
        self.steps: list[dict] = []
        self.pauses: list[tuple[float, float]] = []

    def _read(self, query) -> int:
        with self.monitor.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(query)
            return cur.fetchone()[0]

    def _counts(self, conn) -> tuple[int, int, int]:
        """(row updates counted by the table, rows the writer updated, transaction id), with every
        session's updates so far in the table's count."""
        if self.exact:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_stat_force_next_flush()")  # sent when the statement ends
            if not conn.autocommit:
                conn.commit()
        writer_updates = self.writer.rows_updated()
        return self._read(ROW_UPDATES), writer_updates, self._read(XID)

    def started(self, step, label: str, conn) -> None:
        paused = time.monotonic()
        self.before = self._counts(conn)
        self.start = time.monotonic()
        self.pauses.append((paused, self.start))

    def finished(self, step, label: str, conn) -> None:
        end = time.monotonic()
        (table_before, writer_before, low), (table_after, writer_after, high) = self.before, self._counts(conn)
        changed = seeded_rows_changed(self.url, self.seeded_at, low, high)
        self.pauses.append((end, time.monotonic()))
        self.steps.append({"step": label, "window": (self.start, end), "seconds": round(end - self.start, 3),
                           "rows_updated": _count(getattr(step, "rows_updated", None)), "row_updates": (table_after - table_before)
                           - (writer_after - writer_before) if self.exact else None,
                           "seeded_rows_changed": changed})

    def close(self) -> None:
        self.monitor.close()


class UpstreamProbe:
    """The same for upstream's way, inside its one transaction: each backfill
    step's time, the rows its statements updated, and the row updates the
    transaction's own statistics counted."""

    COUNT = "SELECT pg_stat_get_xact_tuples_updated('api_requests'::regclass)"

    def __init__(self, migration_id: str):
        self.migration_id = migration_id
        self.steps: list[dict] = []
        self.pauses: list = []

    def __call__(self, step, cur, run) -> None:
        if not is_backfill(step):
            run()
            return
        cur.execute(self.COUNT)
        before = cur.fetchone()[0]
        start = time.monotonic()
        rowcounts = run()
        end = time.monotonic()
        cur.execute(self.COUNT)
        self.steps.append({"step": step_label(self.migration_id, migration_steps(self.migration_id), step),
                           "window": (start, end), "seconds": round(end - start, 3),
                           "rows_updated": sum(n for n in rowcounts if n > 0),
                           "row_updates": cur.fetchone()[0] - before})


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


def run(server: Server, requests: int, every: float, respond_after: float = RESPOND_AFTER_SECONDS) -> dict:
    with account_map():
        return _run(server, requests, every, respond_after)


def _run(server: Server, requests: int, every: float, respond_after: float) -> dict:
    if not server.exists(PRE_003):
        print(f"001 and 002 applied to a copy of the seeded database, {PRE_003} ...", flush=True)
        pre_003(server)
    seeded_at = _one(server.url_of(PRE_003), "SELECT max(created_at) FROM api_requests")[0]
    live = live_conversations(server.url_of(PRE_003), requests)
    exact = server.version >= 15  # pg_stat_force_next_flush()
    results: dict = {"insert_every_ms": every * 1000, "respond_after_ms": respond_after * 1000,
                     "migrations": chain_ids(), "live_conversations": len(live), "exact_row_counts": exact,
                     "ways": {}}
    for way in WAYS:
        name = SCRATCH[way]
        url = server.create(name, template=PRE_003)
        _one(url, "ANALYZE api_requests")  # a new database's statistics start empty
        found: dict = {"before": table_state(server, name), "migrations": {}, "backfills": []}
        conversations, origin = live, None
        if way == "ours":
            print(f"the writer alone for {FLOOR_SECONDS:g} s, as a floor ...", flush=True)
            results["writer_alone"], conversations = writer_alone(url, every, respond_after, conversations)
        for migration_id in results["migrations"]:
            print(f"{way}: applying {migration_id} while the writer writes ...", flush=True)
            before_columns = columns(url)
            low = _one(url, XID)[0]
            with writing(url, every, respond_after, conversations) as writer:
                probe = OursProbe(url, writer, seeded_at, exact) if way == "ours" else UpstreamProbe(migration_id)
                with sampling_waits(url) as waits:
                    observed = (observing_backfills(migration_id, probe.started, probe.finished) if way == "ours"
                                else nullcontext())
                    with observed:
                        start = time.monotonic()
                        if way == "ours":
                            APPLY[way](url, migration_id)
                        else:
                            APPLY[way](url, migration_id, around_step=probe)
                        end = time.monotonic()
                if way == "ours":
                    probe.close()
            high = _one(url, XID)[0]
            written = writer.written
            conversations = written.conversations
            origin = origin if origin is not None else min([start] + [due for due, _, _ in written.inserts])
            added = {c: d for c, d in columns(url).items() if c not in before_columns}
            writer_changed = writer_rows_changed(url, seeded_at, added) if probe.steps else 0
            if way == "upstream" and probe.steps:  # its one transaction is the only one that changed seeded rows
                probe.steps[-1]["seeded_rows_changed_by_the_migration"] = seeded_rows_changed(
                    url, seeded_at, low, high)
            paused = sum(b - a for a, b in probe.pauses if start <= a <= end)
            for step in probe.steps:
                a, b = step.pop("window")
                step.update({"way": way, "migration": migration_id, "writer_rows_changed_by_the_migration":
                             writer_changed, "inserts": latency_stats(written.inserts, a, b),
                             "updates": latency_stats(written.updates, a, b)})
                found["backfills"].append(step)
            found["migrations"][migration_id] = {
                "apply_seconds": round(end - start - paused, 3), "probe_seconds": round(paused, 3),
                "inserts": latency_stats(written.inserts, start, end, probe.pauses),
                "updates": latency_stats(written.updates, start, end, probe.pauses),
                "writer_waits": dict(waits.most_common()),
                "window": [round(start - origin, 3), round(end - origin, 3)],
                "samples": {"inserts": chart_points(written.inserts, origin),
                            "response updates": chart_points(written.updates, origin)}}
        found["after"] = table_state(server, name)
        results["ways"][way] = found
        server.drop(name)
    for step in results["ways"]["ours"]["backfills"]:
        step["at_most_once"] = at_most_once(step)
    results["targets"] = targets(results)
    return results


def writer_alone(url: str, every: float, respond_after: float, conversations) -> tuple[dict, list]:
    """The writer's latencies with no migration running: what this machine
    and server give a proxy's writes anyway, the floor under every target on
    them."""
    with writing(url, every, respond_after, conversations) as writer:
        start = time.monotonic()
        time.sleep(FLOOR_SECONDS)
        end = time.monotonic()
    written = writer.written
    return ({"seconds": FLOOR_SECONDS, "inserts": latency_stats(written.inserts, start, end),
             "updates": latency_stats(written.updates, start, end)}, written.conversations)


def at_most_once(step: dict) -> bool | None:
    """No row updated twice by the step: it made no more row updates than
    the distinct rows it changed (the seeded ones, and at most the writer's
    rows its migration changed)."""
    if step["row_updates"] is None:
        return None
    return step["row_updates"] <= step["seeded_rows_changed"] + step["writer_rows_changed_by_the_migration"]


def targets(results: dict) -> list[dict]:
    ours, upstream = results["ways"]["ours"], results["ways"]["upstream"]
    found = []
    backfills = ours["backfills"]
    if backfills:
        worst = max((s[kind]["max_ms"] or 0) for s in backfills for kind in ("inserts", "updates"))
        failed = sum(s[kind]["failed"] for s in backfills for kind in ("inserts", "updates"))
        ratio = (sum(s["seconds"] for s in backfills) / sum(s["seconds"] for s in upstream["backfills"])
                 if upstream["backfills"] and sum(s["seconds"] for s in upstream["backfills"]) else None)
        once = [s["at_most_once"] for s in backfills]
        floor = results.get("writer_alone")
        floor_max = max((floor[kind]["max_ms"] or 0) for kind in ("inserts", "updates")) if floor else None
        found += [
            target(f"max latency of the writer's inserts and response updates during our backfills <= "
                   f"{TARGETS_MAX_WRITE_MS} ms" + (f" (the writer alone: {floor_max:g} ms)" if floor else ""),
                   worst, worst <= TARGETS_MAX_WRITE_MS),
            target("no failed write during our backfills", failed, failed == 0),
            target(f"our backfills take <= {TARGETS_BACKFILL_RATIO:g} x the time of upstream's statements",
                   round(ratio, 2) if ratio is not None else None,
                   ratio <= TARGETS_BACKFILL_RATIO if ratio is not None else None),
            target("each row updated at most once per backfill", f"{sum(o is True for o in once)} of {len(once)}",
                   None if None in once else all(once)),
        ]
    else:
        found.append(target("the backfill targets", "no backfill step from 003 on yet", None))
    insert_locks = sum(lock_waits(r["writer_waits"], "insert") for r in ours["migrations"].values())
    failed_inserts = sum(r["inserts"]["failed"] for r in ours["migrations"].values())
    found += [target("no insert waits on a lock during our apply of 003 to 012 (samples)", insert_locks,
                     insert_locks == 0),
              target("no failed insert during our apply of 003 to 012", failed_inserts, failed_inserts == 0)]
    return found


def report(results: dict) -> list[str]:
    lines = [f"{results['migrations'][0][:3]} to {results['migrations'][-1][:3]}, an insert due every "
             f"{results['insert_every_ms']:g} ms continuing {results['live_conversations']} seeded conversations, "
             f"its response {results['respond_after_ms']:g} ms later", "",
             latency_header("migration", ("insert", "update"))]
    for migration_id in results["migrations"]:
        for way in WAYS:
            r = results["ways"][way]["migrations"][migration_id]
            lines.append(latency_row(migration_id, way, r["apply_seconds"], (r["inserts"], r["updates"])))
    if results.get("writer_alone"):
        floor = results["writer_alone"]
        lines.append(latency_row(f"no migration ({floor['seconds']:g} s)", "writer", floor["seconds"],
                                 (floor["inserts"], floor["updates"])))
    for way in WAYS:
        total = sum(r["apply_seconds"] for r in results["ways"][way]["migrations"].values())
        probe = sum(r["probe_seconds"] for r in results["ways"][way]["migrations"].values())
        lines.append(f"{'total apply':<{LABEL}} {way:<9} {total:>8.2f}"
                     + (f"  (and {probe:.2f} s of the benchmark's own probes, left out)" if probe else ""))
    lines += ["", f"what the writer's statements were waiting on, sampled every {WAIT_SAMPLE_SECONDS * 1000:g} ms"]
    for migration_id in results["migrations"]:
        for way in WAYS:
            waits = results["ways"][way]["migrations"][migration_id]["writer_waits"]
            lines.append(f"{migration_id[:3]} {way:<9} " + (", ".join(f"{e} {n}" for e, n in waits.items()) or "-"))
    lines += ["", "backfill steps (rows: updated as counted by the step / row updates the table counted / "
                  "distinct seeded rows changed / the writer's rows its migration changed)"]
    for way in WAYS:
        for s in results["ways"][way]["backfills"]:
            writes = max((s[k]["max_ms"] or 0) for k in ("inserts", "updates"))
            failed = sum(s[k]["failed"] for k in ("inserts", "updates"))
            changed = s.get("seeded_rows_changed", s.get("seeded_rows_changed_by_the_migration"))
            once = {True: "each row at most once", False: "SOME ROW MORE THAN ONCE", None: ""}[s.get("at_most_once")]
            lines.append(f"{way:<9} {s['step']:<44} {s['seconds']:>8.2f} s  rows {_n(s['rows_updated'])} / "
                         f"{_n(s['row_updates'])} / {_n(changed)} / {_n(s['writer_rows_changed_by_the_migration'])}"
                         f"  writes max {writes:.1f} ms, {failed} failed  {once}")
    if not any(results["ways"][way]["backfills"] for way in WAYS):
        lines.append("  none: no migration from 003 on has a backfill step")
    lines += ["", f"{'api_requests':<20} {'total':>10} {'heap+toast':>11} {'indexes':>10} {'live rows':>11} "
                  f"{'dead rows':>10} {'autovacuums':>12}"]
    for way in WAYS:
        for moment in ("before", "after"):
            t = results["ways"][way][moment]
            lines.append(f"{way + ' ' + moment:<20} {size(t['total_bytes']):>10} {size(t['table_bytes']):>11} "
                         f"{size(t['indexes_bytes']):>10} {t['live_tuples']:>11,} {t['dead_tuples']:>10,} "
                         f"{t['autovacuums']:>12}")
    return lines


def _count(value) -> int | None:
    """A step's own count of the rows it updated, if it keeps one as a number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _n(value) -> str:
    return "-" if value is None else f"{value:,}"


def panels(results: dict) -> list[Panel]:
    found = []
    for way, title in WAYS.items():
        panel = Panel(f"insert and response update latency, {title}")
        for migration_id, r in results["ways"][way]["migrations"].items():
            for label, points in r["samples"].items():
                panel.add(label, points)
            panel.windows.append((*r["window"], migration_id[:3]))
        found.append(panel)
    return found
