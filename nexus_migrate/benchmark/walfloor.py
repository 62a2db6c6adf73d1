"""The wal-floor part: what WAL alone costs the proxy's writes on this
machine and server, whoever writes it. It isolates the part of a
backfill's cost that no order of batches and no throttle can remove: the
bytes every standby must receive and every commit must wait behind.

The writer writes as in the chain (an insert every --insert-every-ms
continuing live conversations, each response a second later) on a copy of
PRE_003, with the standby, while one session writes nothing but WAL at a
set rate: every TICK_SECONDS (a batch's target duration) one transaction of
logical-decoding messages (pg_logical_emit_message, MESSAGE_BYTES each,
about a full-page image), committed, and so flushed as a batch's commit is.
It dirties no page of any table, so the checkpoints it brings leave the
checkpointer nothing to write: whatever the writer's commits wait for here,
a backfill writing as much WAL in as little time makes them wait for too.

Each rate runs on a copy of its own for --wal-floor-seconds: 0 (the writer
alone), the rates of --wal-floor-rates, and, when the chain ran in the same
invocation, the two rates its numbers ask for: the WAL of our backfills over
their time less the time they held (the rate our batches wrote at), and over
twice upstream's backfill time (the slowest rate that meets the time
target). The target reads the writer's p99 at that last rate against its p99
alone.

One pass over the rates is one round; --wal-floor-rounds runs more, each in
the order opposite to the one before (slowest first, then fastest first), so
that a machine growing noisier or quieter over the run weighs on every rate
alike. The target compares the two p99s of one round with each other, and
reads the median of the rounds' ratios: one round on a shared disk can land
on a quiet or a noisy minute for either rate.
"""

from __future__ import annotations

import statistics
import threading
import time

import psycopg2

from ..errors import OperatorError
from .chainreport import (STANDBY_LAG, TARGETS_BACKFILL_RATIO, TARGETS_FLOOR_P99_RATIO, TARGETS_MAX_WRITE_MS,
                          had_lone_commit, statement_kinds)
from .counters import Counters, difference
from .report import Panel, size, target
from .scratch import Server, connect
from .seed import PRE_003, live_conversations, pre_003
from .standby import MAX_REPLICA_LAG, Standby, attached, max_replica_lag
from .writer import LONE_COMMIT_EVERY, latency_stats, sampling_waits, writing

SCRATCH = "nexus_benchmark_wal_floor"
DEFAULT_RATES_MB = (4.0, 8.0, 16.0)  # MB/s, besides 0 and the chain's
DEFAULT_SECONDS = 60.0
DEFAULT_ROUNDS = 1
ALONE = "the writer alone"
TICK_SECONDS = 0.1
MESSAGE_BYTES = 8000
EMIT = ("SELECT count(pg_logical_emit_message(true, 'nexus-benchmark', repeat('x', %s))) "
        "FROM generate_series(1, %s)")
MB = 2**20


def chain_rates(chain: dict | None) -> dict:
    """The WAL rates (bytes/s) the chain's numbers ask for, by name; none without its backfills."""
    try:
        ours, upstream = chain["ways"]["ours"]["backfills"], chain["ways"]["upstream"]["backfills"]
        wal = sum(s["wal"]["wal_bytes"] for s in ours)
        unheld = sum(s["seconds"] - s.get("held_seconds", 0) for s in ours)
        allowed = TARGETS_BACKFILL_RATIO * sum(s["seconds"] for s in upstream)
    except (KeyError, TypeError):  # no chain, or one without its backfills' numbers
        return {}
    if not wal or unheld <= 0 or not allowed:
        return {}
    return {"our batches' own": wal / unheld, f"{TARGETS_BACKFILL_RATIO:g} x upstream's time": wal / allowed}


def run(server: Server, requests: int, every: float, respond_after: float, standby_choice, rates_mb: list[float],
        seconds: float, chain: dict | None = None, rounds: int = DEFAULT_ROUNDS, lone_commit: bool = False) -> dict:
    if not server.exists(PRE_003):
        print(f"001 and 002 applied to a copy of the seeded database, {PRE_003} ...", flush=True)
        pre_003(server)
    live = live_conversations(server.url_of(PRE_003), requests)
    rates = {ALONE: 0.0, **{f"{r:g} MB/s": r * MB for r in rates_mb}, **chain_rates(chain)}
    slowest_first = sorted(rates.items(), key=lambda item: item[1])
    results: dict = {"seconds": seconds, "insert_every_ms": every * 1000, "respond_after_ms": respond_after * 1000,
                     "message_bytes": MESSAGE_BYTES, "tick_seconds": TICK_SECONDS,
                     "standby": standby_choice.line if standby_choice else None,
                     "max_replica_lag_s": max_replica_lag(),
                     "lone_commit_every_ms": LONE_COMMIT_EVERY * 1000 if lone_commit else None, "rounds": []}
    with attached(server, standby_choice) as replica:
        results["standby_measured"] = replica is not None
        for round_number in range(1, rounds + 1):
            order = slowest_first if round_number % 2 else slowest_first[::-1]
            measured: dict = {}
            for name, rate in order:
                print(f"wal-floor: {_round(round_number, rounds)}the writer for {seconds:g} s, "
                      f"{_beside(name, rate)} ...", flush=True)
                measured[name] = measure(server, rate, seconds, every, respond_after, live, replica, lone_commit)
            results["rounds"].append(measured)
    results["targets"] = targets(results)
    return results


def _round(number: int, rounds: int) -> str:
    return f"round {number} of {rounds}: " if rounds > 1 else ""


def measure(server: Server, rate: float, seconds: float, every: float, respond_after: float, live,
            replica: Standby | None, lone_commit: bool = False) -> dict:
    url = server.create(SCRATCH, template=PRE_003)
    try:
        if replica:
            replica.wait_caught_up()
        counters = Counters(url, server.version)
        emitted: dict = {"bytes": 0, "late_ticks": 0}
        stop = threading.Event()
        try:
            with writing(url, every, respond_after, live, lone_commit) as writer, sampling_waits(url) as waits:
                before, start = counters.read(), time.monotonic()
                emitter = threading.Thread(target=_emit, args=(url, rate, stop, emitted))
                emitter.start()
                try:
                    time.sleep(seconds)
                finally:
                    stop.set()
                    emitter.join()
                if "error" in emitted:
                    raise OperatorError(f"wal-floor: writing WAL at {size(rate)}/s failed: {emitted['error']}")
                end = time.monotonic()
                wrote = difference(before, counters.read())
        finally:
            counters.close()
        server.wait_for_no_sessions(SCRATCH)
    finally:
        server.drop(SCRATCH)
    written = writer.written
    found = {"rate_bytes_per_s": round(rate), "seconds": round(end - start, 3),
             "emitted_bytes": emitted["bytes"], "late_ticks": emitted["late_ticks"],
             "server": wrote, "writes": latency_stats(written.inserts + written.updates, start, end),
             "lone_commits": latency_stats(written.commits, start, end),
             "writer_waits": dict(waits.most_common()),
             "samples": written.chart_series(start)}
    if replica:
        found.update(replica.lag_in(start, end))
        found["standby_lag"] = replica.chart_points(start, end, start)
    return found


def _beside(name: str, rate: float) -> str:
    """What ran beside the writer, as the report's lines and the chart's panels say it."""
    if not rate:
        return "no WAL written beside it"
    return f"WAL written beside it at {size(rate)}/s" + ("" if name.endswith("MB/s") else f" ({name})")


def _emit(url: str, rate: float, stop: threading.Event, emitted: dict) -> None:
    """rate bytes/s of WAL and nothing else: every TICK_SECONDS one statement,
    so one transaction (the connection autocommits), flushed as it commits."""
    messages = int(rate * TICK_SECONDS / MESSAGE_BYTES)
    if not messages:
        return
    conn = None
    try:
        conn = connect(url, application_name="nexus-benchmark-wal-floor")
        due = time.monotonic()
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute(EMIT, (MESSAGE_BYTES, messages))
                emitted["bytes"] += messages * MESSAGE_BYTES
                due += TICK_SECONDS
                wait = due - time.monotonic()
                if wait > 0:
                    stop.wait(wait)
                else:  # the server took longer than a tick to take it: the rate is more than it can write
                    emitted["late_ticks"] += 1
                    due = time.monotonic()
    except psycopg2.Error as exc:  # the measuring thread raises it, in one line
        emitted["error"] = str(exc).strip().splitlines()[0]
    finally:
        if conn is not None:
            conn.close()


def targets(results: dict) -> list[dict]:
    """Read, not built: the p99 at the time target's rate against the p99
    alone, round by round (the median of the rounds' ratios decides); and the
    writer alone's longest write against the chain's bound on it."""
    needed = f"{TARGETS_BACKFILL_RATIO:g} x upstream's time"
    rounds = results["rounds"]
    wanted = (f"with nothing but WAL written at the rate that finishes our backfills in {needed} (no table touched), "
              f"the writer's p99 <= {TARGETS_FLOOR_P99_RATIO:g} x its p99 alone in the same round "
              f"(the median of {len(rounds)} round{'s' if len(rounds) > 1 else ''})")
    ratios, said = [], []
    for measured in rounds:
        alone, at = measured[ALONE]["writes"]["p99_ms"], measured.get(needed)
        if at is None or not alone or at["writes"]["p99_ms"] is None:
            continue
        ratios.append(at["writes"]["p99_ms"] / alone)
        said.append(f"p99 {at['writes']['p99_ms']} ms against {alone} ms ({ratios[-1]:.2f} x), "
                    f"max {at['writes']['max_ms']} ms at {size(at['rate_bytes_per_s'])}/s")
    if ratios:
        median = statistics.median(ratios)
        found = [target(wanted, "; ".join(said) + (f"; median {median:.2f} x" if len(ratios) > 1 else ""),
                        median <= TARGETS_FLOOR_P99_RATIO, ratios=[round(r, 3) for r in ratios])]
    else:
        found = [target(wanted, "the chain did not run in this invocation", None)]
    longest = [measured[ALONE]["writes"]["max_ms"] for measured in rounds]
    found.append(target(f"the writer alone (no WAL beside it) keeps every write <= {TARGETS_MAX_WRITE_MS} ms, the "
                        "chain's bound on the longest write during our backfills",
                        ", ".join("-" if ms is None else f"max {ms} ms" for ms in longest),
                        None if None in longest else max(longest) <= TARGETS_MAX_WRITE_MS))
    return found


def report(results: dict) -> list[str]:
    rounds = results["rounds"]
    lines = [f"the writer for {results['seconds']:g} s a rate (an insert due every {results['insert_every_ms']:g} ms, "
             f"its response {results['respond_after_ms']:g} ms later) while one session writes nothing but WAL: "
             f"a transaction of {results['message_bytes']:,}-byte messages every {results['tick_seconds']:g} s"
             + (f"; commit: the writer's lone commit every {results['lone_commit_every_ms']:g} ms"
                if had_lone_commit(results) else "")
             + (f"; {len(rounds)} rounds, each in the order opposite to the one before" if len(rounds) > 1 else ""),
             results.get("standby") or "standby: none", "",
             f"{'round':>5} {'WAL rate':<34} {'asked/s':>9} {'written/s':>10} {'FPI':>7} {'ckpt':>5} {'p50':>7} "
             f"{'p99':>8} {'max ms':>8} {'failed':>6}"
             + (f" {'commit p99':>10} {'max ms':>8}" if had_lone_commit(results) else "") + f" {'lag s':>6}"]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            w, lone, server = r["writes"], r["lone_commits"], r["server"]
            checkpoints = server["checkpoints_requested"] + server["checkpoints_timed"]
            lag = r.get("replay_lag_max_s")
            commit = (f" {_ms(lone['p99_ms']):>10} {_ms(lone['max_ms']):>8}"
                      if had_lone_commit(results) else "")
            lines.append(f"{number:>5} {name:<34} {size(r['rate_bytes_per_s']):>9} "
                         f"{size(server['wal_bytes'] / r['seconds']):>10} {server['wal_fpi']:>7,} {checkpoints:>5} "
                         f"{_ms(w['p50_ms']):>7} {_ms(w['p99_ms']):>8} {_ms(w['max_ms']):>8} {w['failed']:>6}{commit} "
                         f"{'-' if lag is None else f'{lag:.2f}':>6}"
                         + (f"  ({r['late_ticks']} ticks late)" if r["late_ticks"] else ""))
    return lines


def _ms(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def panels(results: dict) -> list[Panel]:
    found = []
    rounds = results["rounds"]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            panel = Panel(f"{_round(number, len(rounds))}{statement_kinds(results)} latency and the standby's "
                          f"replay lag, {_beside(name, r['rate_bytes_per_s'])}")
            for label, points in r["samples"].items():
                panel.add(label, points)
            if r.get("standby_lag"):
                panel.lines[STANDBY_LAG] = [(t, ms) for t, ms, _ in r["standby_lag"]]
                panel.bounds.append((results["max_replica_lag_s"] * 1000, MAX_REPLICA_LAG))
            found.append(panel)
    return found
