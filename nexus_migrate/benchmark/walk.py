"""The walk part: what 005's backfill writes to the WAL, apart from
everything else, at a WAL budget small enough that checkpoints fall inside
it, as on a table larger than the server's max_wal_size (every operator's).

A copy of the seeded history (PRE_003) takes 003 and 004 by yoyo, is
vacuumed, and has autovacuum off for api_requests, so that nothing but the
migration writes. Then three copies of it, made one after the other (each
copy begins with a checkpoint, so each way starts alike), take 005 with no
writer, while the server's max_wal_size is the part's:

- upstream's: 005 as upstream's script ran it, every step's statements in
  one transaction (ways.apply_upstream): the column, the index, the
  backfill's one statement;
- ours: yoyo apply of 005 (ways.apply_ours), the backfill walking the table
  as the project's code walks it, whatever order that is;
- the statement: the backfill's one statement alone, in a transaction of its
  own, once the column and the index are there: the least any walk can write.

For each: its time, the WAL it wrote (the WAL position), its full-page images
and records (pg_stat_wal, once its sessions have ended and reported),
checkpoints begun, the rows it changed and the WAL per changed row, and
each against upstream's.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import psycopg2

from ..errors import OperatorError
from ..proxy.accounts import MIGRATION
from .chain import account_map
from .counters import Counters, difference
from .report import size, target
from .scratch import Server, connect
from .seed import PRE_003, pre_003
from .ways import apply_ours, apply_upstream, is_backfill, migration_ids

BASE = "nexus_benchmark_walk_base"
SCRATCH = "nexus_benchmark_walk_{way}"
WAYS = {"upstream": "upstream's 005 in one transaction: the column, the index, the backfill's one statement",
        "ours": "yoyo apply of 005, the backfill in batches as the project's code walks the table",
        "statement": "the backfill's one statement alone, in a transaction of its own"}
DEFAULT_MAX_WAL_SIZE = "64MB"
# A memory setting as PostgreSQL writes one (its units are case-sensitive).
SIZE_SETTING = re.compile(r"^\d+(kB|MB|GB|TB)$")
SETTLE_SECONDS = 0.2  # the counters unchanged this long: every session of the way has reported
SETTING_SECONDS = 5.0  # for a reloaded setting to reach new sessions

TARGETS_WAL_RATIO = 1.25

AUTO_CONF_SETTING = """
    SELECT setting FROM pg_file_settings
     WHERE name = 'max_wal_size' AND sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1"""


def before_backfill() -> str:
    """The migration before 005."""
    ids = migration_ids()
    return ids[ids.index(MIGRATION) - 1]


def run(server: Server, requests: int, max_wal_size: str = DEFAULT_MAX_WAL_SIZE) -> dict:
    with account_map():
        return _run(server, requests, max_wal_size)


def _run(server: Server, requests: int, max_wal_size: str) -> dict:
    base(server)
    results: dict = {"migration": MIGRATION, "requests": requests, "ways": {}}
    try:
        with wal_budget(server, max_wal_size) as setting:
            results.update(setting)
            for way in WAYS:
                print(f"walk: {MIGRATION[:3]} {way} at max_wal_size {setting['max_wal_size']} ...", flush=True)
                results["ways"][way] = measure(server, way)
    finally:
        server.drop(BASE)
    results["upstream_ratios"] = ratios(results)
    results["targets"] = targets(results)
    return results


def base(server: Server) -> str:
    """BASE: PRE_003 with 003 and 004 applied by yoyo, vacuumed, autovacuum
    off for api_requests (nothing but the migration then writes)."""
    if not server.exists(PRE_003):
        print(f"001 and 002 applied to a copy of the seeded database, {PRE_003} ...", flush=True)
        pre_003(server)
    url = server.create(BASE, template=PRE_003)
    print(f"walk: 003 to {before_backfill()[:3]} applied by yoyo to {BASE}, no writer ...", flush=True)
    apply_ours(url, before_backfill())
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) api_requests")
            cur.execute("ALTER TABLE api_requests SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)")
    finally:
        conn.close()
    server.wait_for_no_sessions(BASE)  # a template must have none
    return url


def _only(backfills: bool):
    """around_step for apply_upstream: run only the backfill steps, or only the others."""
    def around_step(step, cur, run) -> None:
        if is_backfill(step) == backfills:
            run()
    return around_step


def measure(server: Server, way: str) -> dict:
    name = SCRATCH.format(way=way)
    url = server.create(name, template=BASE)
    try:
        if way == "statement":
            apply_upstream(url, MIGRATION, around_step=_only(backfills=False))
        server.wait_for_no_sessions(name)
        counters = Counters(server.url, server.version)
        try:
            before = settled(counters)
            start = time.monotonic()
            if way == "ours":
                apply_ours(url, MIGRATION)
            else:
                apply_upstream(url, MIGRATION, around_step=_only(backfills=True) if way == "statement" else None)
            seconds = time.monotonic() - start
            server.wait_for_no_sessions(name)
            wrote = difference(before, settled(counters))
        finally:
            counters.close()
        rows = server_rows_changed(url)
    finally:
        server.drop(name)
    return {"seconds": round(seconds, 3), **wrote, "rows_changed": rows,
            "wal_bytes_per_changed_row": round(wrote["wal_bytes"] / rows, 1) if rows else None}


def settled(counters: Counters, timeout: float = 10.0) -> dict:
    """The counters once they hold still for SETTLE_SECONDS: a session that
    has just ended may not have reported its WAL yet."""
    give_up = time.monotonic() + timeout
    last = counters.read()
    while True:
        time.sleep(SETTLE_SECONDS)
        now = counters.read()
        if now == last or time.monotonic() > give_up:
            return now
        last = now


def server_rows_changed(url: str) -> int:
    """The rows 005's backfill filled (nothing else writes account_id here)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM api_requests WHERE account_id IS NOT NULL")
            return cur.fetchone()[0]
    finally:
        conn.close()


@contextmanager
def wal_budget(server: Server, wanted: str):
    """The server's max_wal_size set to wanted for the duration (ALTER SYSTEM
    and a reload; the setting it had, put back after), or where the role may
    not, the server's own, said in one line. Yields what the part ran at."""
    try:
        previous = server.execute(AUTO_CONF_SETTING)
        server.execute("ALTER SYSTEM SET max_wal_size = %s", (wanted,))
    except psycopg2.errors.InsufficientPrivilege:
        running = server.execute("SHOW max_wal_size")[0][0]
        print(f"walk: this role may not set max_wal_size (ALTER SYSTEM needs a superuser): the part runs at the "
              f"server's {running}", flush=True)
        yield {"max_wal_size": running, "max_wal_size_set": False}
        return
    except psycopg2.Error as exc:
        raise OperatorError(f"--walk-max-wal-size {wanted}: {str(exc).strip().splitlines()[0]}") from None
    try:
        server.execute("SELECT pg_reload_conf()")
        running = _reloaded(server, wanted)
        if running != wanted:
            print(f"walk: the server's max_wal_size stays {running} (set where ALTER SYSTEM does not reach, "
                  "such as its command line): the part runs at it", flush=True)
        yield {"max_wal_size": running, "max_wal_size_set": running == wanted}
    finally:
        if previous:
            server.execute("ALTER SYSTEM SET max_wal_size = %s", (previous[0][0],))
        else:
            server.execute("ALTER SYSTEM RESET max_wal_size")
        server.execute("SELECT pg_reload_conf()")


def _reloaded(server: Server, wanted: str) -> str:
    """max_wal_size as a new session sees it, once it is wanted (or after
    SETTING_SECONDS, as it stays)."""
    give_up = time.monotonic() + SETTING_SECONDS
    while True:
        conn = connect(server.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('max_wal_size'), "
                            "pg_size_bytes(current_setting('max_wal_size')) = pg_size_bytes(%s)", (wanted,))
                running, same = cur.fetchone()
        finally:
            conn.close()
        if same:
            return wanted
        if time.monotonic() > give_up:
            return running
        time.sleep(0.1)


def ratios(results: dict) -> dict:
    """Each way's WAL bytes, full-page images and time against upstream's."""
    upstream = results["ways"]["upstream"]
    return {way: {key: round(r[key] / upstream[key], 2) if upstream[key] else None
                  for key in ("wal_bytes", "wal_fpi", "seconds", "wal_bytes_per_changed_row")}
            for way, r in results["ways"].items()}


def targets(results: dict) -> list[dict]:
    ratio = results["upstream_ratios"]["ours"]["wal_bytes_per_changed_row"]
    return [target(f"our {MIGRATION[:3]} writes <= {TARGETS_WAL_RATIO:g} x the WAL of upstream's {MIGRATION[:3]} in "
                   f"one transaction, per changed row, at max_wal_size {results['max_wal_size']}", ratio,
                   ratio <= TARGETS_WAL_RATIO if ratio is not None else None)]


def report(results: dict) -> list[str]:
    lines = [f"{MIGRATION} over {results['requests']:,} requests after 003 and 004, no writer, autovacuum off "
             f"for the table, max_wal_size {results['max_wal_size']}"
             + ("" if results["max_wal_size_set"] else " (the server's own)"), "",
             f"{'way':<10} {'seconds':>8} {'WAL':>9} {'FPI':>8} {'records':>10} {'rows':>9} {'B/row':>7} "
             f"{'ckpt req/timed':>14} {'WAL x':>6} {'FPI x':>6} {'time x':>6}"]
    for way, r in results["ways"].items():
        x = results["upstream_ratios"][way]
        lines.append(f"{way:<10} {r['seconds']:>8.2f} {size(r['wal_bytes']):>9} {_n(r['wal_fpi']):>8} "
                     f"{_n(r['wal_records']):>10} {r['rows_changed']:>9,} {_n(r['wal_bytes_per_changed_row']):>7} "
                     f"{r['checkpoints_requested']:>6} / {r['checkpoints_timed']:<5} {_x(x['wal_bytes']):>6} "
                     f"{_x(x['wal_fpi']):>6} {_x(x['seconds']):>6}")
    lines += ["", *(f"{way}: {what}" for way, what in WAYS.items())]
    return lines


def _n(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def panels(results: dict) -> list:
    return []  # its numbers are the table's
