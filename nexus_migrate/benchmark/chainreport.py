"""The chain part's reading of what chain.py found: its targets, the text
report and the chart's panels. The writer alone on a fresh copy is the
floor the write targets read; a lone commit, where the run timed one, splits
the writer's wait into what any commit waits and the writer's own queue."""

from __future__ import annotations

from . import standby
from .checkpointer import BEFORE_END, FSYNCING, IDLE_CHECKPOINTER
from .report import LABEL, Panel, latency_header, latency_row, size, target
from .ways import WAYS
from .writer import WAIT_SAMPLE_SECONDS, lock_waits

# The two floors, as the report names them: the second is the one the targets read.
FLOORS = (("writer_alone", "after our chain"), ("writer_alone_fresh", "on a fresh copy"))

TARGETS_MAX_WRITE_MS = 100
TARGETS_FLOOR_P99_RATIO = 1.5
TARGETS_BACKFILL_RATIO = 2.0
TARGETS_WAL_RATIO = 1.25
STANDBY_LAG = "standby replay lag"  # the chart's line


def rows_changed(step: dict) -> int | None:
    """The rows a step changed: the row updates counted (each row at most
    once, as at_most_once checks), else the distinct rows found changed."""
    if step["row_updates"] is not None:
        return step["row_updates"]
    seeded = step.get("seeded_rows_changed", step.get("seeded_rows_changed_by_the_migration"))
    return None if seeded is None else seeded + step["writer_rows_changed_by_the_migration"]


def floor(results: dict) -> tuple[str, dict]:
    """The floor the write targets read: the writer alone on the fresh copy
    (on the chain's copy in a benchmark.json from before there was one)."""
    key, name = next((key, name) for key, name in reversed(FLOORS) if results.get(key))
    return f"the writer alone {name}", results[key]


def at_most_once(step: dict) -> bool | None:
    """No row updated twice by the step: it made no more row updates than
    the distinct rows it changed (the seeded ones, and at most the writer's
    rows its migration changed)."""
    if step["row_updates"] is None:
        return None
    return step["row_updates"] <= step["seeded_rows_changed"] + step["writer_rows_changed_by_the_migration"]


def wal_ratio(results: dict) -> float | None:
    """Our backfills' WAL per changed row against upstream's statements', over all the backfill steps."""
    per_row = []
    for way in WAYS:
        steps = results["ways"][way]["backfills"]
        rows = [rows_changed(s) for s in steps]
        if not steps or None in rows or not sum(rows):
            return None
        per_row.append(sum(s["wal"]["wal_bytes"] for s in steps) / sum(rows))
    upstream, ours = per_row
    return ours / upstream if upstream else None


def targets(results: dict) -> list[dict]:
    ours, upstream = results["ways"]["ours"], results["ways"]["upstream"]
    found = []
    backfills = ours["backfills"]
    if backfills:
        writes, (floor_name, alone) = ours["writes_during_backfills"], floor(results)
        worst, p99, failed = writes["max_ms"] or 0, writes["p99_ms"] or 0, writes["failed"]
        floor_p99 = alone["writes"]["p99_ms"]
        ratio = (sum(s["seconds"] for s in backfills) / sum(s["seconds"] for s in upstream["backfills"])
                 if upstream["backfills"] and sum(s["seconds"] for s in upstream["backfills"]) else None)
        once = [s["at_most_once"] for s in backfills]
        wal = wal_ratio(results)
        found += [
            target(f"the writer's inserts and response updates during our backfills: max <= {TARGETS_MAX_WRITE_MS} "
                   f"ms, p99 <= {TARGETS_FLOOR_P99_RATIO:g} x {floor_name}'s p99 "
                   f"({_ms(floor_p99)} ms over {alone['seconds']:g} s), no failed write",
                   f"max {worst:g} ms, p99 {p99:g} ms, {failed} failed",
                   worst <= TARGETS_MAX_WRITE_MS and floor_p99 is not None
                   and p99 <= TARGETS_FLOOR_P99_RATIO * floor_p99 and failed == 0),
            target(f"our backfills write <= {TARGETS_WAL_RATIO:g} x the WAL of upstream's statements for the same "
                   f"rows (per changed row; ours {backfills[0]['wal']['source']})",
                   round(wal, 2) if wal is not None else None,
                   wal <= TARGETS_WAL_RATIO if wal is not None else None),
            lag_target(results),
            target(f"our backfills take <= {TARGETS_BACKFILL_RATIO:g} x the time of upstream's statements "
                   f"(held time included: {sum(s.get('held_seconds', 0) for s in backfills):.1f} s of our "
                   f"{sum(s['seconds'] for s in backfills):.1f} s)",
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


def lag_target(results: dict) -> dict:
    bound = results["max_replica_lag_s"]
    wanted = f"the standby's replay lag stays under {standby.MAX_REPLICA_LAG} ({bound:g} s) throughout our backfills"
    if not results.get("standby_measured"):
        return target(wanted, "no standby", None)
    worst = {way: max((s["replay_lag_max_s"] or 0 for s in results["ways"][way]["backfills"]), default=0)
             for way in WAYS}
    return target(f"{wanted} (upstream's way: {worst['upstream']:g} s)", f"{worst['ours']:g} s",
                  worst["ours"] < bound)


def report(results: dict) -> list[str]:
    lines = [f"{results['migrations'][0][:3]} to {results['migrations'][-1][:3]}, an insert due every "
             f"{results['insert_every_ms']:g} ms continuing {results['live_conversations']} seeded conversations, "
             f"its response {results['respond_after_ms']:g} ms later",
             (results.get("standby") or "standby: none")
             + ("" if results.get("standby_measured") or not results.get("standby") else " (its lag not measured)"),
             *_lone_commit_said(results), "", latency_header("migration", ("insert", "update", *_commit(results)))]
    for migration_id in results["migrations"]:
        for way in WAYS:
            r = results["ways"][way]["migrations"][migration_id]
            lines.append(latency_row(migration_id, way, r["apply_seconds"],
                                     (r["inserts"], r["updates"], *_lone_commits(results, r))))
    for key, name in FLOORS:
        if results.get(key):
            alone = results[key]
            lines.append(latency_row(f"no migration, {name}", "writer", alone["seconds"],
                                     (alone["inserts"], alone["updates"], *_lone_commits(results, alone))))
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
    width = _step_width(results)
    for way in WAYS:
        for s in results["ways"][way]["backfills"]:
            writes = max((s[k]["max_ms"] or 0) for k in ("inserts", "updates"))
            failed = sum(s[k]["failed"] for k in ("inserts", "updates"))
            changed = s.get("seeded_rows_changed", s.get("seeded_rows_changed_by_the_migration"))
            once = {True: "each row at most once", False: "SOME ROW MORE THAN ONCE", None: ""}[s.get("at_most_once")]
            held = f" ({s['held_seconds']:.1f} s held, {s['holds']} holds)" if s.get("holds") else ""
            lines.append(f"{way:<9} {s['step']:<{width}} {s['seconds']:>8.2f} s{held}  rows {_n(s['rows_updated'])} / "
                         f"{_n(s['row_updates'])} / {_n(changed)} / {_n(s['writer_rows_changed_by_the_migration'])}"
                         f"  writes max {writes:.1f} ms, {failed} failed  {once}")
    if not any(results["ways"][way]["backfills"] for way in WAYS):
        lines.append("  none: no migration from 003 on has a backfill step")
    else:
        lines += ["", *cost_lines(results)]
    lines += ["", *floor_lines(results), *checkpointer_lines(results)]
    lines += ["", f"{'api_requests':<20} {'total':>10} {'heap+toast':>11} {'indexes':>10} {'live rows':>11} "
                  f"{'dead rows':>10} {'autovacuums':>12}"]
    for way in WAYS:
        for moment in ("before", "after"):
            t = results["ways"][way][moment]
            lines.append(f"{way + ' ' + moment:<20} {size(t['total_bytes']):>10} {size(t['table_bytes']):>11} "
                         f"{size(t['indexes_bytes']):>10} {t['live_tuples']:>11,} {t['dead_tuples']:>10,} "
                         f"{t['autovacuums']:>12}")
    return lines


def cost_lines(results: dict) -> list[str]:
    """The backfill steps' cost to the server and to the standby."""
    measured = results.get("standby_measured")
    width = _step_width(results)
    lines = ["what each backfill step cost the server: WAL (MB; the step's own: upstream's statements' as EXPLAIN "
             "ANALYZE counts them, ours the server's less the writer's where the server tells them apart, "
             "from PostgreSQL 18), full-page images, WAL records, bytes per changed row, checkpoints begun "
             "(requested / timed)" + (", the standby's largest replay lag (s; from its replay position / "
                                      "the view's replay_lag)" if measured else ""),
             f"{'backfill step':<{width}} {'way':<9} {'server MB':>9} {'writer MB':>9} {'own MB':>8} {'FPI':>9} "
             f"{'records':>10} {'B/row':>7} {'ckpt':>7}" + (f" {'lag s':>12}" if measured else "")]
    for way in WAYS:
        for s in results["ways"][way]["backfills"]:
            wal, writer, checkpoints = s["wal"], s["writer_wal"], s["checkpoints"]
            line = (f"{s['step']:<{width}} {way:<9} {_mb(s['server']['wal_bytes']):>9} "
                    f"{_mb(writer['wal_bytes'] if writer else None):>9} {_mb(wal['wal_bytes']):>8} "
                    f"{_n(wal['wal_fpi']):>9} {_n(wal['wal_records']):>10} "
                    f"{_n(s['wal_bytes_per_changed_row'], '.0f'):>7} "
                    f"{checkpoints['requested']:>3} / {checkpoints['timed']:<1}")
            if measured:
                line += f" {_s(s.get('replay_lag_max_s')):>5} / {_s(s.get('replay_lag_view_max_s')):<5}"
            lines.append(line)
    ratio = wal_ratio(results)
    if ratio is not None:
        lines.append(f"all backfills, WAL per changed row, ours / upstream's: {ratio:.2f}")
    return lines


def floor_lines(results: dict) -> list[str]:
    if not results.get("writer_alone"):
        return []
    lines = []
    for key, name in FLOORS:
        alone = results.get(key)
        if not alone:
            continue
        w, server = alone["writes"], alone["server"]
        line = (f"the writer alone {name}, {alone['seconds']:g} s (our longest backfill took "
                f"{results['writer_alone']['longest_backfill_seconds']:g} s): writes p50 {_ms(w['p50_ms'])} / "
                f"p99 {_ms(w['p99_ms'])} / max {_ms(w['max_ms'])} ms, {w['failed']} failed; "
                + "".join(f"{_lone(c)}; " for c in _lone_commits(results, alone)) + "the server wrote "
                f"{_mb(server['wal_bytes'])} MB of WAL, {_n(server.get('wal_fpi'))} full-page images, "
                f"{_n(server.get('checkpoints_requested'))} checkpoints requested")
        if alone.get("replay_lag_max_s") is not None:
            line += f"; the standby's lag at most {alone['replay_lag_max_s']:g} s"
        lines.append(line)
    ours = results["ways"]["ours"]["writes_during_backfills"]
    lone = "".join(f"; {_lone(c)}{_queue_share(ours, c)}"
                   for c in _lone_commits(results, results["ways"]["ours"], "lone_commits_during_backfills"))
    return [*lines, f"the writer during our backfills: writes p50 {_ms(ours['p50_ms'])} / p99 {_ms(ours['p99_ms'])} / "
                  f"max {_ms(ours['max_ms'])} ms, {ours['failed']} failed of {ours['count']:,}{lone}"]


def checkpointer_lines(results: dict) -> list[str]:
    """Where the checkpointer was while the writes over the longest-write
    target waited, against where it was through the backfills."""
    lines = []
    for way in WAYS:
        for key, whose in (("checkpointer_during_backfills", "the checkpointer"),
                           ("standby_checkpointer_during_backfills", "the standby's checkpointer (restartpoints)")):
            found = results["ways"][way].get(key)
            if not found or not found["sampled"]:
                continue
            lines.append(f"{whose} during {way} backfills (its state, sampled every "
                         f"{WAIT_SAMPLE_SECONDS * 1000:g} ms, share of the time): {_states(found['backfills'])}")
            if found["slow_writes"]:
                lines.append(f"  while the {found['slow_writes']:,} writes over {TARGETS_MAX_WRITE_MS} ms waited "
                             f"({found['slow_seconds']:g} s in all): {_states(found['slow'])}")
            if found["slow_writes"] and found.get("before_end"):
                lines.append(f"  of its {found['checkpoints_ended']} ends, the writes due {_before_end_bins()} before "
                             f"the next: those over {TARGETS_MAX_WRITE_MS} ms {_percents(found['before_end']['slow'])}"
                             f", all {_percents(found['before_end']['all'])}")
    return [""] + lines if lines else []


def _before_end_bins() -> str:
    edges = (0, *BEFORE_END)
    return " / ".join(f"{a:g}-{b:g} s" for a, b in zip(edges, edges[1:])) + " / further"


def _percents(shares: list) -> str:
    return " / ".join(f"{share:.0%}" for share in shares)


def _states(shares: dict) -> str:
    """The states of 1 % of the time or more, and the rest together."""
    shown = {state: share for state, share in shares.items() if share >= 0.01}
    rest = sum(shares.values()) - sum(shown.values())
    return ", ".join([f"{state} {share:.0%}" for state, share in shown.items()]
                     + ([f"others {rest:.0%}"] if rest >= 0.005 else [])) or "-"


def had_lone_commit(results: dict) -> bool:
    """The run timed a lone commit beside the writer (--lone-commit)."""
    return bool(results.get("lone_commit_every_ms"))


def statement_kinds(results: dict) -> str:
    """What the chart's panels show, as their titles say it."""
    return ("insert, response update and lone commit" if had_lone_commit(results)
            else "insert and response update")


def _lone_commit_said(results: dict) -> list[str]:
    return [f"commit: a lone commit beside the writer every {results['lone_commit_every_ms']:g} ms (one WAL "
            "record, no table, no lock), timed from when it was sent: what any commit waits, without the writer's "
            "queue"] if had_lone_commit(results) else []


def _commit(results: dict) -> tuple[str, ...]:
    """The lone commit's column, when the run had one."""
    return ("commit",) if had_lone_commit(results) else ()


def _lone_commits(results: dict, found: dict, key: str = "lone_commits") -> tuple[dict, ...]:
    """found's lone commits' latencies, when the run had them."""
    return (found[key],) if had_lone_commit(results) else ()


def _lone(commits: dict) -> str:
    return (f"a lone commit beside it p50 {_ms(commits['p50_ms'])} / p99 {_ms(commits['p99_ms'])} / "
            f"max {_ms(commits['max_ms'])} ms ({commits['count']:,}, {commits['failed']} failed)")


def _queue_share(writes: dict, commits: dict) -> str:
    """How much of the writer's p99 a commit that queues behind nothing does not explain."""
    if not writes["p99_ms"] or not commits["p99_ms"]:
        return ""
    return (f"; the writer's p99 is {writes['p99_ms'] / commits['p99_ms']:.1f} x the lone commit's, the rest "
            "its own queue")


def _step_width(results: dict) -> int:
    """The longest backfill step's label (008's names its whole purpose)."""
    return max([len("backfill step")] + [len(s["step"]) for way in WAYS for s in results["ways"][way]["backfills"]])


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _n(value, spec: str = "") -> str:
    return "-" if value is None else f"{value:,{spec}}"


def checkpoint_strips(migrations) -> dict[str, list]:
    """The spans of the chart's checkpoint strips, from the changes of state
    in each migration of the checkpointer (at work: anything but idle; and
    fsyncing) and of the standby's (fsyncing)."""
    spans: dict[str, list] = {"checkpointer at work": [], "checkpointer fsyncing": [],
                              "standby's checkpointer fsyncing": []}

    def add(label: str, start: float, end: float) -> None:
        if spans[label] and spans[label][-1][1] == start:
            spans[label][-1] = (spans[label][-1][0], end)
        else:
            spans[label].append((start, end))

    for migration in migrations:
        for key, prefix in (("checkpointer", ""), ("standby_checkpointer", "standby's ")):
            states = migration.get(key, [])
            for (start, state), (end, _) in zip(states, states[1:]):
                if not prefix and state not in (None, IDLE_CHECKPOINTER):
                    add("checkpointer at work", start, end)
                if state == FSYNCING:  # (drawn over the checkpoint at work)
                    add(f"{prefix}checkpointer fsyncing", start, end)
    return {label: found for label, found in spans.items() if found}


def panels(results: dict) -> list[Panel]:
    found = []
    for way, title in WAYS.items():
        lagged = " and the standby's replay lag" if results.get("standby_measured") else ""
        panel = Panel(f"{statement_kinds(results)} latency{lagged}, {title}")
        for migration_id, r in results["ways"][way]["migrations"].items():
            for label, points in r["samples"].items():
                panel.add(label, points)
            panel.windows.append((*r["window"], migration_id[:3]))
        panel.strips.update(checkpoint_strips(results["ways"][way]["migrations"].values()))
        lag = results["ways"][way].get("standby_lag")
        if lag:
            # the standby's lag is a time too: on the same axis, where a reader sees both at once
            panel.lines[STANDBY_LAG] = [(t, ms) for t, ms, _ in lag]
            panel.bounds.append((results["max_replica_lag_s"] * 1000, standby.MAX_REPLICA_LAG))
        found.append(panel)
    return found
