"""The write-cost part: what every request costs a proxy operator on the
schema after 011, ours against upstream's index set.

MIGRATED is the seeded history with 003 to 012 applied by yoyo (no writer),
vacuumed and its indexes rebuilt, so that neither side starts with the bloat
of the backfills. Two copies of it: ours as it is, and upstream's, whose
api_requests carries exactly upstream's indexes after its 011 (ours that
upstream lacks dropped, upstream's built). The same rows, the same heap.

Then, one request at a time and autocommit, as the proxy issues them, the
proxy's statements: today's INSERT (21 columns), the response's UPDATE, and
for one response in fifty the Task calls' UPDATE. The two sides take turns
(the order alternating), so that the machine's noise falls on both; nothing
else writes meanwhile (autovacuum is off for the table on both copies), so the
WAL position before and after a turn counts that turn's WAL.
"""

from __future__ import annotations

import re
import time

import psycopg2
from psycopg2.extras import Json

from ..proxy.statements import INSERT_REQUEST, MARK_TASK_CALLS, UPDATE_RESPONSE
from . import traffic
from .report import Panel, size, target
from .scratch import Server, connect
from .seed import PRE_003, live_conversations, pre_003
from .upstream import upstream_indexes
from .ways import apply_ours, migration_ids

MIGRATED = "nexus_benchmark_migrated"
SIDES = {"ours": "nexus_benchmark_write_ours", "upstream": "nexus_benchmark_write_upstream"}
TURNS = 10
REQUESTS_PER_TURN = 1000
WARM_UP_REQUESTS = 50
TASK_CALL_EVERY = 50  # one response in fifty calls the Task tool

TARGETS_RPS_RATIO = 1.1
TARGETS_WAL_RATIO = 0.7
TARGETS_INDEX_SIZE_RATIO = 0.55

# Every index of api_requests with its definition, but those behind a
# constraint (the primary key), which both sides share.
INDEXES = """
    SELECT c.relname, pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = %s::regclass
       AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
     ORDER BY c.relname"""
INDEX_SIZES = """
    SELECT c.relname, pg_relation_size(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = 'api_requests'::regclass
     ORDER BY pg_relation_size(i.indexrelid) DESC, c.relname"""
SHAPE_SCHEMA = "nexus_benchmark_shape"


def _defined(definition: str) -> str:
    """An index definition without the schema of its table, which differs between where it is built."""
    return re.sub(r" ON (ONLY )?\S+\.", r" ON \1", definition, count=1)


def migrated(server: Server) -> str:
    """MIGRATED: PRE_003 with the rest of the chain applied by yoyo, vacuumed,
    its indexes rebuilt, and autovacuum off for api_requests."""
    if not server.exists(PRE_003):
        print(f"001 and 002 applied to a copy of the seeded database, {PRE_003} ...", flush=True)
        pre_003(server)
    url = server.create(MIGRATED, template=PRE_003)
    print(f"003 to {migration_ids()[-1][:3]} applied by yoyo to {MIGRATED}, no writer ...", flush=True)
    apply_ours(url, migration_ids()[-1])
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) api_requests")
            cur.execute("REINDEX TABLE api_requests")
            cur.execute("ALTER TABLE api_requests SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)")
    finally:
        conn.close()
    return url


def upstream_definitions(conn) -> dict[str, str]:
    """Upstream's indexes as PostgreSQL defines them, built on an empty table
    of api_requests' columns in a schema of their own (then dropped)."""
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SHAPE_SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {SHAPE_SCHEMA}")
        try:
            cur.execute(f"CREATE TABLE {SHAPE_SCHEMA}.api_requests (LIKE api_requests)")
            cur.execute(f"SET search_path = {SHAPE_SCHEMA}")
            for statement in upstream_indexes():
                cur.execute(statement)
            cur.execute("RESET search_path")
            cur.execute(INDEXES, (f"{SHAPE_SCHEMA}.api_requests",))
            return {name: _defined(definition) for name, definition in cur.fetchall()}
        finally:
            cur.execute("RESET search_path")
            cur.execute(f"DROP SCHEMA {SHAPE_SCHEMA} CASCADE")


def give_upstream_indexes(url: str) -> dict:
    """api_requests with upstream's indexes instead of ours: ours that
    upstream lacks (or defines otherwise) dropped, upstream's that are
    missing built. Returns what was dropped, kept and built."""
    conn = connect(url)
    try:
        wanted = upstream_definitions(conn)
        with conn.cursor() as cur:
            cur.execute(INDEXES, ("api_requests",))
            present = {name: _defined(definition) for name, definition in cur.fetchall()}
            dropped = sorted(name for name, definition in present.items() if wanted.get(name) != definition)
            for name in dropped:
                cur.execute(f"DROP INDEX {name}")
            statements = {_name_of(statement): statement for statement in upstream_indexes()}
            built = [statements[name] for name in wanted if name not in present or name in dropped]
            for statement in built:
                cur.execute(statement)
            cur.execute("ANALYZE api_requests")
    finally:
        conn.close()
    return {"dropped": dropped, "kept": sorted(set(present) - set(dropped)),
            "built": [_name_of(statement) for statement in built]}


def _name_of(statement: str) -> str:
    return re.search(r"\bINDEX\s+IF\s+NOT\s+EXISTS\s+(\w+)", statement, re.I).group(1)


class Side:
    """One copy of the table, as the proxy writes to it."""

    def __init__(self, name: str, url: str, conversations: list[traffic.Conversation]):
        self.name, self.url = name, url
        self.conn = connect(url, application_name=f"nexus-benchmark-proxy-{name}")
        self.conversations = [traffic.Conversation(**vars(c)) for c in conversations]  # its own copy
        self.seconds = 0.0
        self.wal_bytes = 0
        self.requests = 0

    def _wal_position(self, cur) -> str:
        cur.execute("SELECT pg_current_wal_lsn()")
        return cur.fetchone()[0]

    def write(self, numbers: range, measured: bool = True) -> None:
        """Requests numbers, one at a time, as the proxy writes each: its
        insert, its response, and its Task calls if it made any."""
        with self.conn.cursor() as cur:
            before = self._wal_position(cur)
            started = time.perf_counter()
            for n in numbers:
                request_id = traffic.uuid_of(f"write-cost {n}")
                conversation = self.conversations[n % len(self.conversations)]
                account = "acc_" + conversation.domain.split(".")[0]
                cur.execute(INSERT_REQUEST, traffic.todays_insert(request_id, conversation, account))
                traffic.advance(conversation, request_id)
                calls = traffic.task_calls(request_id) if n % TASK_CALL_EVERY == 0 else None
                cur.execute(UPDATE_RESPONSE, traffic.response(request_id, calls))
                if calls:
                    cur.execute(MARK_TASK_CALLS, {"request_id": str(request_id), "calls": Json(calls)})
            seconds = time.perf_counter() - started
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before,))
            wal = int(cur.fetchone()[0])
        if measured:
            self.seconds += seconds
            self.wal_bytes += wal
            self.requests += len(numbers)

    def row_updates(self) -> tuple[int, int] | None:
        """(row updates, of which HOT) the table counted so far, this session's
        flushed first (PostgreSQL 15+; None before). A HOT update writes no
        index entry; an update that changes any indexed column, an INCLUDE
        one too, writes one in every index."""
        with self.conn.cursor() as cur:
            try:
                cur.execute("SELECT pg_stat_force_next_flush()")
            except psycopg2.Error:
                return None
            cur.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                        "WHERE relid = 'api_requests'::regclass")
            return cur.fetchone()

    def index_sizes(self) -> dict[str, int]:
        with self.conn.cursor() as cur:
            cur.execute(INDEX_SIZES)
            return dict(cur.fetchall())

    def indexes_size(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_indexes_size('api_requests')")
            return cur.fetchone()[0]

    def rows(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM api_requests")
            return cur.fetchone()[0]


def run(server: Server, requests: int, turns: int = TURNS, per_turn: int = REQUESTS_PER_TURN) -> dict:
    if not server.exists(MIGRATED):
        migrated(server)
    live = live_conversations(server.url_of(MIGRATED), requests)
    results: dict = {"turns": turns, "requests_per_turn": per_turn, "task_call_every": TASK_CALL_EVERY,
                     "sides": {}}
    urls = {side: server.create(name, template=MIGRATED) for side, name in SIDES.items()}
    print("upstream's index set on its copy ...", flush=True)
    results["upstream_indexes"] = give_upstream_indexes(urls["upstream"])
    sides = {side: Side(side, url, live) for side, url in urls.items()}
    try:
        for side in sides.values():
            results["sides"][side.name] = {"rows_before": side.rows(), "indexes_bytes_before": side.indexes_size()}
            side.write(range(-WARM_UP_REQUESTS, 0), measured=False)  # connections, caches and plans ready
            side.updates_before = side.row_updates()
        print(f"the proxy's writes, {turns} turns of {per_turn} requests on each side ...", flush=True)
        for turn in range(turns):
            order = list(sides.values()) if turn % 2 == 0 else list(sides.values())[::-1]
            for side in order:
                side.write(range(turn * per_turn, (turn + 1) * per_turn))
        for side in sides.values():
            updates = side.row_updates()
            hot = (None if updates is None or side.updates_before is None else
                   (updates[1] - side.updates_before[1]) / max(1, updates[0] - side.updates_before[0]))
            results["sides"][side.name].update({
                "hot_update_share": None if hot is None else round(hot, 3),
                "requests": side.requests, "seconds": round(side.seconds, 3),
                "requests_per_second": round(side.requests / side.seconds, 1),
                "wal_bytes_per_request": round(side.wal_bytes / side.requests),
                "indexes_bytes": side.indexes_size(), "index_bytes": side.index_sizes(),
                "rows_after": side.rows()})
    finally:
        for side in sides.values():
            side.conn.close()
        for name in SIDES.values():
            server.drop(name)
    results["targets"] = targets(results)
    return results


def ratios(results: dict) -> dict:
    ours, upstream = results["sides"]["ours"], results["sides"]["upstream"]
    return {"requests_per_second": ours["requests_per_second"] / upstream["requests_per_second"],
            "wal_bytes_per_request": ours["wal_bytes_per_request"] / upstream["wal_bytes_per_request"],
            "indexes_bytes": ours["indexes_bytes"] / upstream["indexes_bytes"]}


def targets(results: dict) -> list[dict]:
    r = ratios(results)
    return [
        target(f"the proxy's writes on our schema: >= {TARGETS_RPS_RATIO:g} x the requests per second of "
               "upstream's index set", round(r["requests_per_second"], 2),
               r["requests_per_second"] >= TARGETS_RPS_RATIO),
        target(f"<= {TARGETS_WAL_RATIO:g} x the WAL per request", round(r["wal_bytes_per_request"], 2),
               r["wal_bytes_per_request"] <= TARGETS_WAL_RATIO),
        target(f"<= {TARGETS_INDEX_SIZE_RATIO:g} x the total index size", round(r["indexes_bytes"], 2),
               r["indexes_bytes"] <= TARGETS_INDEX_SIZE_RATIO),
    ]


def report(results: dict) -> list[str]:
    ours, upstream = results["sides"]["ours"], results["sides"]["upstream"]
    r = ratios(results)
    lines = [f"the proxy's insert, response and (one in {results['task_call_every']}) Task calls, one request at a "
             f"time: {results['turns']} turns of {results['requests_per_turn']} requests a side", "",
             f"{'':<34} {'ours':>14} {'upstream':>14} {'ours / upstream':>16}",
             f"{'requests per second':<34} {ours['requests_per_second']:>14,.1f} "
             f"{upstream['requests_per_second']:>14,.1f} {r['requests_per_second']:>16.2f}",
             f"{'WAL per request (bytes)':<34} {ours['wal_bytes_per_request']:>14,} "
             f"{upstream['wal_bytes_per_request']:>14,} {r['wal_bytes_per_request']:>16.2f}",
             f"{'indexes of api_requests':<34} {size(ours['indexes_bytes']):>14} "
             f"{size(upstream['indexes_bytes']):>14} {r['indexes_bytes']:>16.2f}",
             f"{'  (before the turns)':<34} {size(ours['indexes_bytes_before']):>14} "
             f"{size(upstream['indexes_bytes_before']):>14}",
             f"{'updates that were HOT':<34} {_share(ours['hot_update_share']):>14} "
             f"{_share(upstream['hot_update_share']):>14}",
             "", f"{'index of api_requests':<46} {'ours':>10} {'upstream':>10}"]
    names = list(dict.fromkeys([*upstream["index_bytes"], *ours["index_bytes"]]))
    for name in names:
        lines.append(f"{name:<46} {size(ours['index_bytes'].get(name)):>10} "
                     f"{size(upstream['index_bytes'].get(name)):>10}")
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def panels(results: dict) -> list[Panel]:
    return []  # its numbers are a table, not a time line
