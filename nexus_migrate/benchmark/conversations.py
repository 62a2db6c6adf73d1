"""The conversations part: migrations 001 and 002 applied to the seeded table
while the writer inserts, upstream's way and ours; the dashboard's
conversation views before and after 002; each index of 001 and 002 built
alone, plainly and concurrently, with no writer."""

from __future__ import annotations

import time

from ..steps import Index
from .queries import dashboard_queries
from .report import LABEL, Panel, latency_header, latency_row, target
from .scratch import Server, connect
from .seed import SEEDED
from .ways import APPLY, WAYS, migration_steps
from .writer import WAIT_SAMPLE_SECONDS, chart_points, latency_stats, sampling_waits, writing

MEASURED = ("001-add-conversation-tracking", "002-optimize-conversation-indexes")
SCRATCH = {"upstream": "nexus_benchmark_conversations_upstream", "ours": "nexus_benchmark_conversations_ours",
           "builds": "nexus_benchmark_builds"}

TARGETS_MAX_INSERT_MS = 100
TARGETS_APPLY_RATIO = 1.5
TARGETS_SPEEDUP = {"one conversation": 2.0, "latest conversations": 3.0}


def run(server: Server, requests: int, every: float, query_runs: int) -> dict:
    results: dict = {"insert_every_ms": every * 1000, "ways": {}, "queries": {}}
    for way in WAYS:
        url = server.create(SCRATCH[way], template=SEEDED)
        runs_of_way, origin = {}, None
        for migration_id in MEASURED:
            if way == "ours" and migration_id == MEASURED[1]:
                results["queries"]["before 002"] = dashboard_queries(url, requests, query_runs)
            print(f"{way}: applying {migration_id} while the writer inserts ...", flush=True)
            with writing(url, every) as writer:
                with sampling_waits(url) as waits:
                    start = time.monotonic()
                    APPLY[way](url, migration_id)
                    end = time.monotonic()
            written = writer.written
            origin = origin if origin is not None else min([start] + [due for due, _, _ in written.inserts])
            runs_of_way[migration_id] = {"apply_seconds": round(end - start, 3),
                                         "inserts": latency_stats(written.inserts, start, end),
                                         "writer_waits": dict(waits.most_common()),
                                         "window": [round(start - origin, 3), round(end - origin, 3)],
                                         "samples": {"inserts": chart_points(written.inserts, origin)}}
        if way == "ours":
            results["queries"]["after 002"] = dashboard_queries(url, requests, query_runs,
                                                                opened_before=2 * query_runs + 1)
        results["ways"][way] = runs_of_way
        server.drop(SCRATCH[way])
    print("each index built alone, plainly and concurrently ...", flush=True)
    results["builds_alone"] = builds_alone(server)
    results["targets"] = targets(results)
    return results


def measured_indexes() -> list[Index]:
    """The index steps of the measured migrations, in the order they run."""
    return [s for m in MEASURED for s in migration_steps(m) if isinstance(s, Index)]


def builds_alone(server: Server) -> dict:
    """What a concurrent build costs by itself: on a copy of the seeded
    database with no writer, each index of the measured migrations built by a
    plain CREATE INDEX, dropped, built CONCURRENTLY, dropped; seconds of each."""
    url = server.create(SCRATCH["builds"], template=SEEDED)
    conn = connect(url)
    found = {}
    try:
        with conn.cursor() as cur:
            for step in measured_indexes():
                found[step.name] = {}
                for way, build in (("plain", step.blocking_sql), ("concurrent", step.apply_sql)):
                    started = time.monotonic()
                    cur.execute(build)
                    found[step.name][way] = round(time.monotonic() - started, 3)
                    cur.execute(step.rollback_sql)
    finally:
        conn.close()
        server.drop(SCRATCH["builds"])
    return found


def targets(results: dict) -> list[dict]:
    ours, upstream = results["ways"]["ours"], results["ways"]["upstream"]
    worst = max(r["inserts"]["max_ms"] or 0 for r in ours.values())
    failed = sum(r["inserts"]["failed"] for r in ours.values())
    ratio = sum(r["apply_seconds"] for r in ours.values()) / sum(r["apply_seconds"] for r in upstream.values())
    found = [
        target(f"max insert latency during our apply <= {TARGETS_MAX_INSERT_MS} ms", worst,
               worst <= TARGETS_MAX_INSERT_MS),
        target("no failed insert during our apply", failed, failed == 0),
        target(f"our total apply time <= {TARGETS_APPLY_RATIO} x one transaction", round(ratio, 2),
               ratio <= TARGETS_APPLY_RATIO),
    ]
    before, after = results["queries"]["before 002"], results["queries"]["after 002"]
    for name, wanted in TARGETS_SPEEDUP.items():
        speedup = before[name]["median_ms"] / after[name]["median_ms"]
        index_only = any(n.startswith("Index Only Scan") for n in after[name]["plan"])
        found.append(target(f"{name}: index-only scan after 002, >= {wanted:g} x faster", round(speedup, 1),
                            index_only and speedup >= wanted, index_only=index_only))
    return found


def report(results: dict) -> list[str]:
    lines = [f"001 and 002, an insert due every {results['insert_every_ms']:g} ms", "",
             latency_header("migration", ("inserts",))]
    for migration_id in MEASURED:
        for way in WAYS:
            r = results["ways"][way][migration_id]
            lines.append(latency_row(migration_id, way, r["apply_seconds"], (r["inserts"],)))
    for way in WAYS:
        total = sum(r["apply_seconds"] for r in results["ways"][way].values())
        lines.append(f"{'total apply':<{LABEL}} {way:<9} {total:>8.2f}")
    lines += ["", f"{'dashboard query':<22} {'before 002':>11} {'after 002':>10} {'speed-up':>9}  plan after 002 "
                  "(plan before 002)"]
    before, after = results["queries"]["before 002"], results["queries"]["after 002"]
    for name in before:
        b, a = before[name], after[name]
        lines.append(f"{name:<22} {b['median_ms']:>8.2f} ms {a['median_ms']:>7.2f} ms "
                     f"{b['median_ms'] / a['median_ms']:>8.1f}x  {' > '.join(a['plan'])} ({' > '.join(b['plan'])})")
    lines += ["", f"what the writer's insert was waiting on, sampled every {WAIT_SAMPLE_SECONDS * 1000:g} ms"]
    for migration_id in MEASURED:
        for way in WAYS:
            waits = results["ways"][way][migration_id]["writer_waits"]
            lines.append(f"{migration_id[:3]} {way:<9} " + (", ".join(f"{e} {n}" for e, n in waits.items()) or "-"))
    builds = results["builds_alone"]
    lines += ["", f"{'index built alone, no writer':<40} {'plain s':>8} {'concurrently s':>15} {'ratio':>6}"]
    for name, b in [*builds.items(), ("all of them", {way: sum(b[way] for b in builds.values())
                                                      for way in ("plain", "concurrent")})]:
        lines.append(f"{name:<40} {b['plain']:>8.2f} {b['concurrent']:>15.2f} {b['concurrent'] / b['plain']:>6.2f}")
    return lines


def panels(results: dict) -> list[Panel]:
    found = []
    for way, title in WAYS.items():
        panel = Panel(f"insert latency, {title}")
        for migration_id, r in results["ways"][way].items():
            panel.add("inserts", r["samples"]["inserts"])
            panel.windows.append((*r["window"], migration_id[:3]))
        found.append(panel)
    return found
