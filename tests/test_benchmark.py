"""scripts/benchmark's parts, without its timings (those are numbers for
docs/benchmark.md, not assertions): upstream's way builds what yoyo apply
builds, the seeded history is shaped as the benchmark says, the writer's
inserts and responses are measured, the write-cost part compares our schema
with exactly upstream's index set over the same rows, and the charts are
PNGs."""

from __future__ import annotations

import io
import re
import shutil
import statistics
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.benchmark import chain, chainreport, checkpointer, standby, traffic, walfloor, walk, writecost
from nexus_migrate.benchmark import writer as writer_module
from nexus_migrate.benchmark.conversations import MEASURED, SCRATCH, builds_alone, measured_indexes
from nexus_migrate.benchmark.plot import Panel, latency_chart
from nexus_migrate.benchmark.scratch import Server, connect, sampling_every
from nexus_migrate.benchmark.seed import (PRE_003, SEED_BLOCK, SEEDED, conversation_of, is_plain_conversation,
                                          live_conversations, pre_003, seed)
from nexus_migrate.benchmark.upstream import UPSTREAM_INDEXES, upstream_indexes
from nexus_migrate.benchmark.ways import (BASE, apply_ours, apply_upstream, blocking_statements, is_backfill,
                                          migration_ids, migration_steps)
from nexus_migrate.benchmark.counters import Counters
from nexus_migrate.benchmark.writer import LONE_COMMIT, WRITER, latency_stats, sampling_waits, writing
from nexus_migrate.database.catalog import snapshot
from nexus_migrate.errors import OperatorError

from .conftest import SECRET, assert_one_line_error, run_script, wait_until
from .shapes import SHAPES, build

# The benchmark runs on one server at a time; what these tests check is its
# own logic, which no server version changes: the newest server is enough.
pytestmark = pytest.mark.one_server


@pytest.fixture(scope="module")
def bench(server):
    """The benchmark's handle on the test server, with SEEDED (one block of
    32,000 requests) and PRE_003 made once for the module's tests, which
    work on copies of them."""
    handle = Server(server.url())
    seed(handle, SEED_BLOCK)
    pre_003(handle)
    yield handle
    handle.drop_created()
    handle.close()


def rows(url: str, query: str, args=None) -> list:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def catalog_of(url):
    conn = psycopg2.connect(url)
    try:
        return snapshot(conn)
    finally:
        conn.close()


def test_upstreams_way_builds_the_same_schema_as_yoyo_apply(server):
    """Otherwise the benchmark would compare two different migrations."""
    names = [f"bench_{way}_{uuid.uuid4().hex[:8]}" for way in ("upstream", "ours")]
    upstream, ours = (server.ensure_database(name) for name in names)
    try:
        apply_ours(upstream, BASE)
        for migration_id in MEASURED:
            apply_upstream(upstream, migration_id)
        apply_ours(ours, MEASURED[-1])
        assert catalog_of(upstream) == catalog_of(ours)
    finally:
        for name in names:
            server.drop_database(name)


def test_upstreams_way_of_003_to_011_builds_the_same_schema_as_yoyo_apply(bench):
    """On the seeded history, so that each backfill's statements meet rows;
    a constraint is validated either way (the snapshot would show NOT VALID)."""
    upstream = bench.create("nexus_benchmark_test_upstream", template=PRE_003)
    ours = bench.create("nexus_benchmark_test_ours", template=PRE_003)
    for migration_id in chain.chain_ids():
        apply_upstream(upstream, migration_id)
    apply_ours(ours, migration_ids()[-1])
    assert chain.chain_ids()[0].startswith("003") and chain.chain_ids()[-1] == migration_ids()[-1]
    assert catalog_of(upstream) == catalog_of(ours)


def test_a_step_that_cannot_say_how_upstream_ran_it_is_refused_in_one_line():
    with pytest.raises(OperatorError, match=r"^007-x: its step object has no blocking_statements\(\)"):
        blocking_statements("007-x", object())
    assert all(callable(getattr(s, "blocking_statements", None)) for m in migration_ids()
               for s in migration_steps(m))


def test_a_new_seeded_history_replaces_every_copy_of_the_last(bench):
    """Parts reuse PRE_003 where it exists, so one of another size must not
    outlive the history it was copied from."""
    bench.create("nexus_benchmark_test_left", template=PRE_003)
    assert bench.exists("nexus_benchmark_test_left") and bench.exists(PRE_003)
    assert not bench.exists("nexus_benchmark_test_never_made")
    try:
        seed(bench, SEED_BLOCK)
        assert bench.exists(SEEDED)
        assert not bench.exists("nexus_benchmark_test_left") and not bench.exists(PRE_003)
    finally:
        pre_003(bench)  # for the module's other tests


def test_seeded_traffic_has_interleaved_conversations_with_branches(bench):
    url = bench.url_of(SEEDED)
    # 450 conversations from slot to slot, 75 sub-agents' beside a short one in
    # theirs; the requests of every tenth slot have none
    assert rows(url, "SELECT count(*), count(DISTINCT conversation_id), count(*) FILTER (WHERE conversation_id IS NULL),"
                     " count(DISTINCT branch_id), (SELECT count(*) FROM streaming_chunks) FROM api_requests") == [
        (32_000, 525, 3_200, 4, 32_000)]
    # one conversation, as the benchmark's query reads it: a main line, a new
    # branch every eight requests after its 40th, each request's parent the
    # one before, but for a retry, which repeats the hashes of the one before
    assert is_plain_conversation(8)
    found = rows(url, "SELECT current_message_hash, parent_message_hash, branch_id, message_count, ctid"
                      " FROM api_requests WHERE conversation_id = %s ORDER BY timestamp", (conversation_of(8),))
    assert [r[3] for r in found] == list(range(1, 128, 2))
    assert [r[2] for r in found] == ["main"] * 40 + ["branch_1"] * 8 + ["branch_2"] * 8 + ["branch_3"] * 8
    retries = [n for n in range(1, 64) if found[n][0] == found[n - 1][0]]
    assert retries == [13, 36, 59]  # (8 * 7 + n) % 23 = 0
    for n in range(1, 64):
        assert found[n][1] == (found[n - 1][1] if n in retries else found[n - 1][0])
    assert found[0][1] is None and len({r[0] for r in found}) == 61
    assert len({r[4].split(",")[0] for r in found}) >= 60  # nearly one heap page each
    assert rows(url, "SELECT avg(pg_column_size(body)) > 200, avg(length(body::text)) > 2500 FROM api_requests") == [
        (True, True)]


def test_seeded_history_has_task_calls_whose_sub_agents_start_with_their_prompt(bench):
    url = bench.url_of(SEEDED)
    calls = rows(url, """
        SELECT r.request_id, r.domain, r.conversation_id, r.completed_at, e->'input'->>'prompt'
          FROM api_requests r, jsonb_array_elements(r.response_body->'content') e
         WHERE e->>'type' = 'tool_use' AND e->>'name' = 'Task'""")
    # a sub-agent's first request: one user message, its text a string or
    # the block after a <system-reminder>
    starts = rows(url, """
        SELECT request_id, domain, conversation_id, timestamp, parent_message_hash,
               CASE jsonb_typeof(body->'messages'->0->'content') WHEN 'string' THEN body->'messages'->0->>'content'
                    ELSE body->'messages'->0->'content'->1->>'text' END,
               body->'messages'->0->'content'->0->>'text' LIKE '<system-reminder>%%'
          FROM api_requests
         WHERE jsonb_array_length(body->'messages') = 1 AND body->'messages'->0->>'role' = 'user'""")
    assert len({c[0] for c in calls}) == 50 and len(calls) == 75  # half the calling responses call twice
    assert len(starts) == 75 and sum(1 for s in starts if s[6]) == 25
    by_prompt = {s[5]: s for s in starts}
    for request_id, domain, conversation, completed_at, prompt in calls:
        start = by_prompt[prompt]
        assert start[1] == domain and start[2] != conversation and start[4] is None
        assert 2 <= (start[3] - completed_at).total_seconds() <= 3  # seconds after the response ended
    # hash chains: every parent hash is the current hash of an earlier request of its conversation
    assert rows(url, """
        SELECT count(*) FROM api_requests r
         WHERE r.parent_message_hash IS NOT NULL AND r.conversation_id IS NOT NULL
           AND NOT EXISTS (SELECT FROM api_requests p WHERE p.conversation_id = r.conversation_id
                              AND p.current_message_hash = r.parent_message_hash AND p.timestamp < r.timestamp)""") == [
        (0,)]
    duplicated = rows(url, "SELECT count(*) FROM (SELECT current_message_hash FROM api_requests "
                           "GROUP BY 1 HAVING count(*) > 1) d")[0][0]
    assert duplicated > 1000  # the retries


def test_builds_alone_times_every_index_both_ways_on_a_copy_it_drops(bench):
    seeded = bench.url_of(SEEDED)
    before = catalog_of(seeded)
    timed = builds_alone(bench)
    built = [step.name for step in measured_indexes()]
    assert list(timed) == built and len(built) == 8
    assert all(t["plain"] > 0 and t["concurrent"] > 0 for t in timed.values())
    assert catalog_of(seeded) == before  # the builds ran on the copy
    assert not bench.exists(SCRATCH["builds"])


def test_the_writer_continues_seeded_conversations_and_records_each_response(bench):
    url = bench.create("nexus_benchmark_test_writer", template=PRE_003)
    live = live_conversations(url, SEED_BLOCK, count=5)
    assert len(live) == 5 and all(c.current_hash and c.message_count > 1 for c in live)
    seeded_hashes = {c.conversation_id: c.current_hash for c in live}
    with writing(url, 0.02, respond_after=0.2, conversations=live) as writer:
        # (the writer is a process of its own: on a busy machine it may take a while to start)
        updated = wait_until(lambda: (n := writer.rows_updated()) > 20 and n, "the writer to record 21 responses")
        counted = rows(url, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_requests'")[0][0]
    written = writer.written
    assert updated > 0 and (counted >= updated or bench.version < 15)  # the handshake flushed its statistics
    assert written.commits == []  # no lone commit unless asked for
    assert len(written.inserts) > 20 and all(ok for _, _, ok in written.inserts)
    assert len(written.updates) == len(written.inserts) and all(ok for _, _, ok in written.updates)
    assert all(b[0] - a[0] == pytest.approx(0.2) for a, b in zip(written.inserts, written.updates))
    new = rows(url, "SELECT conversation_id, parent_message_hash, current_message_hash, response_status "
               "FROM api_requests WHERE api_key_hash = %s ORDER BY timestamp", (traffic.OLDER_API_KEY_HASH,))
    assert len(new) == len(written.inserts) and {r[3] for r in new} == {200}
    firsts = {}
    for conversation, parent, current, _ in new:
        firsts.setdefault(conversation, parent)
    assert firsts == seeded_hashes  # each continued from its last seeded request
    assert [c.conversation_id for c in written.conversations] == list(seeded_hashes)


def test_the_lone_commit_beside_the_writer_queues_behind_none_of_its_statements(bench):
    """With the table locked, the writer's inserts wait for the lock; the
    lone commit goes on committing, so what it waits is the WAL's, not the
    writer's queue."""
    url = bench.create("nexus_benchmark_test_lone_commit", template=PRE_003)
    holder = psycopg2.connect(url)
    try:
        with writing(url, 0.02, respond_after=0.1, lone_commit=True) as writer:
            writer.rows_updated()  # the handshake asks the lone commit's session, too, to report its WAL
            counters = Counters(url, bench.version)
            lone_wal = counters.sessions_wal(LONE_COMMIT)
            counters.close()
            with holder.cursor() as cur:
                cur.execute("LOCK TABLE api_requests IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            wait_until(lambda: rows(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                         "AND wait_event_type = 'Lock'", (WRITER,))[0][0], "an insert to wait")
            time.sleep(0.5)
            holder.rollback()
            released = time.monotonic()
    finally:
        holder.close()
    written = writer.written
    assert lone_wal is None if bench.version < 18 else lone_wal["wal_records"] > 0
    assert any(due + latency >= released for due, latency, ok in written.inserts if locked <= due <= released)
    committed_while_locked = [sent for sent, latency, ok in written.commits
                              if ok and locked <= sent and sent + latency < released]
    assert len(committed_while_locked) >= 3


@pytest.fixture(scope="module")
def chain_run(bench, server):
    """The chain part run once for the tests that read it, with a standby of
    the test's server, and the folder the standby was made in."""
    home = server.home / "benchmark-standby"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_module, "SETTLE_SECONDS", 0.3)
        patch.setattr(chain, "FLOOR_SECONDS_MIN", 0.0)  # the floor then lasts as long as the longest backfill
        results = chain.run(bench, SEED_BLOCK, every=0.01, respond_after=0.1,
                            standby_choice=standby.local_choice(server, home), lone_commit=True)
    return results, home


def test_the_chain_runs_each_migration_both_ways_with_inserts_and_responses_measured(bench, chain_run):
    results, home = chain_run
    assert results["migrations"] == chain.chain_ids()
    assert not home.exists()  # the standby made for the run is gone
    floor = results["writer_alone"]  # the writer with no migration: the floor under the latency targets
    longest = max(s["seconds"] for s in results["ways"]["ours"]["backfills"])
    assert floor["longest_backfill_seconds"] == longest and floor["seconds"] == pytest.approx(longest, abs=0.001)
    # Measured, not timed: 100 inserts fall due each second, and a busy
    # machine may let the writer make only a third of them.
    assert floor["inserts"]["count"] > 10 and floor["updates"]["count"] > 5 and floor["inserts"]["failed"] == 0
    assert floor["writes"]["count"] == floor["inserts"]["count"] + floor["updates"]["count"]
    assert floor["server"]["wal_bytes"] > 0 and floor["lag_samples"] > 0  # its WAL, and the standby meanwhile
    assert floor["lone_commits"]["count"] > 10 and floor["lone_commits"]["failed"] == 0
    # and again on a fresh copy of the history before 003, as long, its copy
    # dropped: the floor the write target reads
    fresh = results["writer_alone_fresh"]
    assert fresh["seconds"] == floor["seconds"] and not bench.exists(chain.FLOOR_COPY)
    assert fresh["inserts"]["count"] > 10 and fresh["inserts"]["failed"] == 0 and fresh["lag_samples"] > 0
    if results["ways"]["ours"]["backfills"]:
        writes_target = results["targets"][0]
        assert f"the writer alone on a fresh copy's p99 ({fresh['writes']['p99_ms']:g} ms" in writes_target["target"]
    for way in ("upstream", "ours"):
        runs = results["ways"][way]["migrations"]
        assert list(runs) == results["migrations"]
        # (009 and 010 build nothing: their apply may end before an insert falls due)
        assert sum(r["inserts"]["count"] for r in runs.values()) > 10
        assert sum(r["updates"]["count"] for r in runs.values()) > 0
        assert sum(len(r["samples"]["response updates"]) for r in runs.values()) > 20
        assert sum(r["lone_commits"]["count"] for r in runs.values()) > 10
        before, after = results["ways"][way]["before"], results["ways"][way]["after"]
        # the writer's rows are in; (012 drops indexes, so the size may go either way)
        assert before["live_tuples"] > 30_000 and after["live_tuples"] > before["live_tuples"]
        assert after["total_bytes"] > 0
        assert after["dead_tuples"] > 0 or after["autovacuums"] > 0  # the writer's response updates at least
        assert not bench.exists(chain.SCRATCH[way])
    ours = results["ways"]["ours"]
    assert all(r["inserts"]["failed"] == 0 and r["updates"]["failed"] == 0 for r in ours["migrations"].values())
    assert [s["step"] for s in ours["backfills"]] == [s["step"] for s in results["ways"]["upstream"]["backfills"]]
    backfills = [(m, n) for m in results["migrations"] for n, s in enumerate(migration_steps(m), 1) if is_backfill(s)]
    assert [(s["migration"], s["step"].split(" (")[0]) for s in ours["backfills"]] == [
        (m, f"{m[:3]} step {n}") for m, n in backfills]
    for step in ours["backfills"]:
        assert step["seconds"] > 0 and step["at_most_once"] is True
        assert step["lone_commits"]["failed"] == 0
        assert step["row_updates"] is None or step["row_updates"] >= step["seeded_rows_changed"]
    if not ours["backfills"]:
        assert results["targets"][0]["met"] is None
    lone = ours["lone_commits_during_backfills"]
    assert lone["count"] == sum(s["lone_commits"]["count"] for s in ours["backfills"]) > 0
    report = "\n".join(chainreport.report(results))
    assert f"a lone commit beside it p50 {lone['p50_ms']:g} / p99 {lone['p99_ms']:g}" in report
    assert "lone commit" not in "\n".join(chainreport.report({**results, "lone_commit_every_ms": None}))
    panels = chainreport.panels(results)
    assert len(panels) == 2 and all(p.lines[chainreport.STANDBY_LAG] for p in panels)  # the lag beside the latencies
    assert all(p.series["lone commits"] for p in panels)


def test_the_chain_reports_each_backfills_wal_checkpoints_and_the_standbys_lag(bench, chain_run):
    results, _ = chain_run
    assert results["standby_measured"] and results["max_replica_lag_s"] == 1.0  # the default bound
    for way in ("upstream", "ours"):
        assert results["ways"][way]["backfills"]
        for step in results["ways"][way]["backfills"]:
            rows, wal, checkpoints = chainreport.rows_changed(step), step["wal"], step["checkpoints"]
            assert all(isinstance(wal[k], int) and wal[k] >= 0 for k in ("wal_bytes", "wal_records", "wal_fpi"))
            assert all(isinstance(n, int) and n >= 0 for n in checkpoints.values())
            assert rows > 0  # every backfill has rows to change in the seeded history
            # each changed row is at least one WAL record, and the step's own WAL is within the server's
            assert wal["wal_records"] >= rows and step["server"]["wal_bytes"] >= wal["wal_bytes"] > 0
            assert step["wal_bytes_per_changed_row"] == pytest.approx(wal["wal_bytes"] / rows, abs=0.1)
            # the standby was sampled through the step, and streamed all along
            assert step["lag_samples"] > 0 and step["no_standby_samples"] == 0 and step["replay_lag_max_s"] >= 0
            if way == "ours":  # the server's WAL less the writer's, where the server counts the writer's (18)
                assert (step["writer_wal"] is None) == (bench.version < 18)
        lag = results["ways"][way]["standby_lag"]
        assert lag and all(ms >= 0 for _, ms, _ in lag)
    wal_target, lag_target = (next(t for t in results["targets"] if words in t["target"])
                              for words in ("the WAL of upstream's", "replay lag"))
    assert wal_target["value"] == round(chainreport.wal_ratio(results), 2) and wal_target["met"] is not None
    assert lag_target["met"] is not None
    report = "\n".join(chainreport.report(results))
    assert "full-page images" in report and "the writer alone after our chain" in report
    assert "the writer alone on a fresh copy" in report and "no migration, on a fresh copy" in report
    # the checkpointers of the server and of its standby were sampled through the backfills (the test's role
    # is a superuser)
    for way in ("upstream", "ours"):
        for key, whose in (("checkpointer", "the checkpointer"),
                           ("standby_checkpointer", "the standby's checkpointer (restartpoints)")):
            found = results["ways"][way][f"{key}_during_backfills"]
            assert found["sampled"] and sum(found["backfills"].values()) == pytest.approx(1, abs=0.001)
            assert f"{whose} during {way} backfills" in report
            assert any(m[key] for m in results["ways"][way]["migrations"].values())



def test_the_write_cost_copy_carries_exactly_upstreams_indexes_over_the_same_rows(bench, server):
    migrated = writecost.migrated(bench)
    copy = bench.create("nexus_benchmark_test_write_upstream", template=writecost.MIGRATED)
    changed = writecost.give_upstream_indexes(copy)
    assert "idx_api_requests_domain_newest_first" in changed["dropped"]
    assert "idx_requests_conversation_detail" in changed["dropped"] + changed["built"]  # upstream's has no INCLUDE
    # the indexes upstream's own scripts leave: its 000 and 001 as they were
    # (tests/shapes.py), then 003 to 011; and its 002, had it committed
    name = f"upstream_{uuid.uuid4().hex[:8]}"
    shaped = server.ensure_database(name)
    try:
        conn = connect(shaped)
        try:
            build(conn, SHAPES["upstream-000-011"])
            with conn.cursor() as cur:
                cur.execute("ALTER TABLE api_requests ADD COLUMN total_tokens integer")  # what stopped upstream's 002
                for number, statement in UPSTREAM_INDEXES:
                    if number == "002":
                        cur.execute(statement)
        finally:
            conn.close()
        definitions = lambda url: {n: writecost._defined(d) for n, d in rows(url, writecost.INDEXES, ("api_requests",))}
        expected = definitions(shaped)
    finally:
        server.drop_database(name)
    assert definitions(copy) == expected
    assert len(expected) == len(upstream_indexes()) == 26
    same = "SELECT count(*), md5(string_agg(request_id::text || coalesce(response_status, 0), ',' ORDER BY request_id)) " \
           "FROM api_requests"
    assert rows(copy, same) == rows(migrated, same)


def test_the_write_cost_part_writes_the_same_requests_on_both_sides(bench):
    results = writecost.run(bench, SEED_BLOCK, turns=2, per_turn=20)
    ours, upstream = results["sides"]["ours"], results["sides"]["upstream"]
    for side in (ours, upstream):
        assert side["requests"] == 40 and side["requests_per_second"] > 0 and side["wal_bytes_per_request"] > 0
        assert side["rows_after"] - side["rows_before"] == 40 + writecost.WARM_UP_REQUESTS
        assert sum(side["index_bytes"].values()) == side["indexes_bytes"]
    assert len(upstream["index_bytes"]) == 26 + 1  # and the primary key
    assert set(ours["index_bytes"]) - set(upstream["index_bytes"]) == {
        "idx_api_requests_domain_newest_first", "idx_requests_task_invocation_timestamp"}
    assert [t["value"] for t in results["targets"]] == [round(v, 2) for v in writecost.ratios(results).values()]
    assert not any(bench.exists(name) for name in writecost.SIDES.values())


def test_the_walk_part_measures_005_three_ways_at_its_wal_budget_and_puts_the_setting_back(bench):
    setting = "SELECT current_setting('max_wal_size')"
    before = rows(bench.url, setting)
    results = walk.run(bench, SEED_BLOCK, "32MB")
    assert rows(bench.url, setting) == before  # a new session's: the reload has reached it
    assert results["max_wal_size"] == "32MB" and results["max_wal_size_set"] is True
    assert list(results["ways"]) == list(walk.WAYS)
    changed = {r["rows_changed"] for r in results["ways"].values()}
    assert len(changed) == 1 and changed.pop() > 0  # identical copies, the same rule
    for r in results["ways"].values():
        assert r["seconds"] > 0 and r["wal_records"] >= r["rows_changed"] and r["wal_bytes"] > 0
        assert all(isinstance(r[k], int) and r[k] >= 0 for k in ("wal_fpi", "checkpoints_requested",
                                                                  "checkpoints_timed"))
        assert r["wal_bytes_per_changed_row"] == pytest.approx(r["wal_bytes"] / r["rows_changed"], abs=0.1)
    assert results["upstream_ratios"]["upstream"]["wal_bytes"] == 1.0
    assert results["targets"][0]["value"] == results["upstream_ratios"]["ours"]["wal_bytes_per_changed_row"]
    assert not any(bench.exists(name) for name in [walk.BASE, *(walk.SCRATCH.format(way=w) for w in walk.WAYS)])
    assert "statement" in "\n".join(walk.report(results))


def test_the_wal_floor_writes_nothing_but_wal_at_each_rate_beside_the_writer_and_the_standby(bench, server,
                                                                                             chain_run):
    home = server.home / "benchmark-standby-wal-floor"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_module, "SETTLE_SECONDS", 0.3)
        results = walfloor.run(bench, SEED_BLOCK, every=0.01, respond_after=0.1,
                               standby_choice=standby.local_choice(server, home), rates_mb=[1.0], seconds=2.0,
                               chain=chain_run[0], rounds=2, lone_commit=True)
    assert not home.exists() and not bench.exists(walfloor.SCRATCH)
    first, second = results["rounds"]
    assert set(first) == {"the writer alone", "1 MB/s", *walfloor.chain_rates(chain_run[0])} and len(first) == 4
    # the first round runs the slowest rate first, the second the fastest first
    order = [r["rate_bytes_per_s"] for r in first.values()]
    assert order == sorted(order) and [r["rate_bytes_per_s"] for r in second.values()] == order[::-1]
    assert first["the writer alone"]["emitted_bytes"] == 0 and first["1 MB/s"]["rate_bytes_per_s"] == 2**20
    ours = chain_run[0]["ways"]["ours"]["backfills"]
    upstream_seconds = sum(s["seconds"] for s in chain_run[0]["ways"]["upstream"]["backfills"])
    needed = f"{chainreport.TARGETS_BACKFILL_RATIO:g} x upstream's time"
    # at that rate, our backfills' WAL takes exactly the time the target allows
    assert (sum(s["wal"]["wal_bytes"] for s in ours) / first[needed]["rate_bytes_per_s"]
            == pytest.approx(2 * upstream_seconds, rel=0.01))
    for measured in (first, second):
        for name, r in measured.items():
            assert r["writes"]["count"] > 5 and r["writes"]["failed"] == 0 and r["lag_samples"] > 0
            assert r["lone_commits"]["count"] > 5 and r["lone_commits"]["failed"] == 0
            # the messages are in the WAL, with the writer's own beside them
            assert r["server"]["wal_bytes"] > r["emitted_bytes"]
            assert (r["emitted_bytes"] > 0) == (name != "the writer alone")
    p99, longest = results["targets"]
    # each round's p99 at the time target's rate is read against the same round's writer alone
    assert p99["ratios"] == [pytest.approx(m[needed]["writes"]["p99_ms"] / m["the writer alone"]["writes"]["p99_ms"],
                                           abs=1e-3) for m in (first, second)]
    assert p99["met"] == (statistics.median(p99["ratios"]) <= chainreport.TARGETS_FLOOR_P99_RATIO)
    alone_max = max(m["the writer alone"]["writes"]["max_ms"] for m in (first, second))
    assert longest["met"] == (alone_max <= chainreport.TARGETS_MAX_WRITE_MS)
    report = "\n".join(walfloor.report(results))
    assert "2 rounds" in report and report.count("the writer alone") == 2 and len(walfloor.panels(results)) == 8


def test_a_wal_floor_whose_wal_cannot_be_written_stops_in_one_line_and_drops_its_copy(bench, monkeypatch):
    monkeypatch.setattr(walfloor, "EMIT", "SELECT %s / 0, %s")  # the server refuses the emitter's statement
    monkeypatch.setattr(writer_module, "SETTLE_SECONDS", 0.3)
    with pytest.raises(OperatorError, match=r"^wal-floor: writing WAL at 1,024 kB/s failed: division by zero$"):
        walfloor.run(bench, SEED_BLOCK, every=0.01, respond_after=0.1, standby_choice=None, rates_mb=[1.0],
                     seconds=1.0)
    assert not bench.exists(walfloor.SCRATCH)


def test_a_role_that_may_not_set_max_wal_size_is_told_so_in_one_line(server, make_role, capsys):
    url = urlsplit(server.url())
    handle = Server(url._replace(netloc=f"{make_role()}@{url.hostname}:{url.port}").geturl())
    try:
        with walk.wal_budget(handle, "32MB") as setting:
            assert setting == {"max_wal_size": handle.execute("SHOW max_wal_size")[0][0], "max_wal_size_set": False}
    finally:
        handle.close()
    told = capsys.readouterr().out.strip().splitlines()
    assert len(told) == 1 and "may not set max_wal_size" in told[0] and "server's" in told[0]


def test_the_standby_is_chosen_as_the_command_line_says(server):
    assert standby.choose(off=True, standby_url=None, database_url=None).line == "standby: none (--no-standby)"
    given = standby.choose(off=False, standby_url=f"postgresql://u:{SECRET}@h/d", database_url="postgresql://h/d")
    assert given.url and SECRET not in given.line and "--standby-url" in given.line
    elsewhere = standby.choose(off=False, standby_url=None, database_url="postgresql://h/d")
    assert elsewhere.primary is elsewhere.url is None and "--standby-url" in elsewhere.line
    local = standby.choose(off=False, standby_url=None, database_url=None)
    assert local.home == local.primary.home / standby.STANDBY_FOLDER  # under the local server's own folder
    other_disk = standby.choose(off=False, standby_url=None, database_url=None, folder=Path("/mnt/other-disk"))
    assert other_disk.home == Path("/mnt/other-disk") / standby.STANDBY_FOLDER  # a folder of its own there
    handle = Server(server.url())
    try:
        with pytest.raises(OperatorError, match="is not a standby"):  # a primary given as the standby
            with standby.attached(handle, standby.Choice("standby: given", url=server.url())):
                pass
    finally:
        handle.close()


def test_a_role_without_pg_monitor_is_told_it_cannot_see_the_standbys_lag_and_goes_on(server, make_role, capsys):
    url = urlsplit(server.url())
    role = Server(url._replace(netloc=f"{make_role()}@{url.hostname}:{url.port}").geturl())
    superuser = Server(server.url())
    home = server.home / "benchmark-standby-roles"
    try:
        with standby.attached(role, standby.local_choice(server, home)) as replica:
            assert replica is None
        told = capsys.readouterr().out.strip().splitlines()
        assert len(told) == 2 and "cannot see" in told[1] and "pg_monitor" in told[1]
        with standby.attached(superuser, standby.local_choice(server, home)) as replica:
            replica.wait_caught_up()  # it streams, and says how far it replayed
            assert replica.samples and all(lag is not None and lag >= 0 for _, lag, _ in replica.samples)
    finally:
        role.close()
        superuser.close()
    assert not home.exists()


def test_a_standby_made_in_a_folder_elsewhere_is_private_there_and_leaves_the_folder_as_it_was(server):
    folder = Path(tempfile.mkdtemp(prefix="nexus-test-standby-folder-"))
    folder.chmod(0o711)  # (under root, 'nobody' runs the standby and must pass through)
    (folder / "operators-file").write_text("kept")
    choice = standby.choose(off=False, standby_url=None, database_url=None, folder=folder)
    handle = Server(server.url())
    try:
        with standby.attached(handle, standby.local_choice(server, choice.home)) as replica:
            replica.wait_caught_up()
            assert choice.home.parent == folder and choice.home.stat().st_mode & 0o777 == 0o700
            assert (choice.home / "data" / "standby.signal").exists()
        assert not choice.home.exists() and (folder / "operators-file").read_text() == "kept"
    finally:
        handle.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_sampler_whose_connection_is_lost_stops_and_says_so_in_one_line_at_the_end(server):
    samples = []
    handle = Server(server.url())
    try:
        with pytest.raises(OperatorError, match=r"^sampling \(nexus-test-sampler\) failed: [^\n]+$"):
            with sampling_every(server.url(), 0.01, lambda cur: samples.append(cur.execute("SELECT 1")),
                                "nexus-test-sampler"):
                wait_until(lambda: len(samples) > 3, "the sampler has sampled")
                handle.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name = 'nexus-test-sampler'")
                time.sleep(0.2)
                stopped = len(samples)
                time.sleep(0.2)
                assert len(samples) == stopped  # no more samples once it failed
    finally:
        handle.close()


def test_the_standbys_lag_is_the_time_since_the_primary_passed_its_replay_position():
    clock = standby.WalClock()
    for when, position in ((10.0, 100), (11.0, 200), (12.0, 300), (13.0, 300)):
        clock.add(when, position)
    assert clock.lag(13.5, 300) == 0.0  # replayed all the primary wrote
    assert clock.lag(13.5, 250) == pytest.approx(2.0)  # passed halfway between 11 and 12 s
    assert clock.lag(13.5, 200) == pytest.approx(2.5)
    assert clock.lag(13.5, 50) == pytest.approx(3.5)  # before the first sample: at least since then


@pytest.mark.parametrize("args, words", [
    (("--requests", "100"), ("--requests must be at least 256",)),
    (("--part", "everything"), ("--part", "invalid choice", "conversations", "chain", "write-cost")),
    (("--write-turns", "0"), ("--write-turns",)),
    (("--respond-after-ms", "-1"), ("--respond-after-ms",)),
    (("--floor-seconds-max", "0"), ("--floor-seconds-max",)),
    (("--standby-url", "postgresql://h/d"), ("--standby-url", "--database-url")),
    (("--no-standby", "--standby-url", "postgresql://h/d", "--database-url", "postgresql://h/d"),
     ("--no-standby", "--standby-url")),
    (("--standby-folder", "/nonexistent"), ("--standby-folder", "not a folder")),
    (("--standby-folder", "/tmp", "--no-standby"), ("--standby-folder", "--no-standby")),
    (("--standby-folder", "/tmp", "--database-url", "postgresql://h/d"), ("--standby-folder", "--database-url")),
    (("--walk-max-wal-size", "64mb"), ("--walk-max-wal-size", "64MB")),
    (("--wal-floor-rates", "4,x"), ("--wal-floor-rates", "MB per second")),
    (("--wal-floor-rates", "0"), ("--wal-floor-rates", "above 0")),
    (("--wal-floor-seconds", "0"), ("--wal-floor-seconds",)),
    (("--wal-floor-rounds", "0"), ("--wal-floor-rounds", "at least 1")),
    (("--wal-floor-chain", "/nonexistent/benchmark.json"), ("--wal-floor-chain", "No such file")),
    (("--wal-floor-chain", str(PROJECT_ROOT / "README.md")), ("--wal-floor-chain", "not a benchmark.json")),
])
def test_bad_arguments_get_one_line(args, words):
    assert_one_line_error(run_script(PROJECT_ROOT, "benchmark", *args), *words, "scripts/benchmark --help")


def test_wal_floor_refuses_a_benchmark_json_without_the_chains_backfills(tmp_path):
    earlier = tmp_path / "benchmark.json"
    earlier.write_text('{"parts": ["walk"], "walk": {}}')
    result = run_script(PROJECT_ROOT, "benchmark", "--part", "wal-floor", "--wal-floor-chain", str(earlier))
    assert_one_line_error(result, "--wal-floor-chain", "no chain part", "scripts/benchmark --help")


def test_a_server_that_refuses_gets_one_line_without_its_password():
    url = f"postgresql://nexus:{SECRET}@127.0.0.1:9/postgres?connect_timeout=2"  # nothing listens on port 9
    result = run_script(PROJECT_ROOT, "benchmark", "--database-url", url)
    assert_one_line_error(result, "cannot connect to postgresql://nexus:***@127.0.0.1:9/postgres")


def test_the_sampler_names_the_lock_an_insert_of_the_writer_waits_for(database_url, db):
    with db.cursor() as cur:
        cur.execute("CREATE TABLE held (x int)")
        cur.execute("BEGIN")
        cur.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
    writer = psycopg2.connect(database_url, application_name=WRITER)
    insert = threading.Thread(target=lambda: writer.cursor().execute("INSERT INTO held VALUES (1)"))
    insert.start()
    try:
        with sampling_waits(database_url) as waits:
            wait_until(lambda: waits["insert Lock:relation"] >= 3, "the sampler saw the insert wait for the lock")
    finally:
        db.cursor().execute("ROLLBACK")
        insert.join()
        writer.close()
    assert set(waits) <= {"insert Lock:relation", "insert CPU"}  # CPU: the moment between the lock and the end


def test_the_sampler_follows_the_checkpointer_through_a_checkpoint(database_url, db):
    with db.cursor() as cur:
        cur.execute("CREATE TABLE dirtied AS SELECT n FROM generate_series(1, 300000) AS n")
    states: list = []
    with sampling_waits(database_url, every=0.001, checkpointer=states), db.cursor() as cur:
        def checkpointed_busy() -> bool:
            cur.execute("UPDATE dirtied SET n = n + 1")  # pages for the checkpoint to write and fsync
            cur.execute("CHECKPOINT")
            return any(state not in ("Activity:CheckpointerMain", None) for _, state in states)

        wait_until(checkpointed_busy, "the sampler saw the checkpointer at work")
    assert states[-1][1] is None  # where sampling ended
    assert all(a[1] != b[1] and a[0] <= b[0] for a, b in zip(states, states[1:]))  # changes only, in order


def test_a_role_that_may_not_read_other_sessions_waits_samples_no_checkpointer(server, make_role):
    url = urlsplit(server.url())
    states: list = []
    with sampling_waits(url._replace(netloc=f"{make_role()}@{url.hostname}:{url.port}").geturl(), every=0.001,
                        checkpointer=states):
        time.sleep(0.05)
    assert states == []  # (its backend_type hidden, the checkpointer's row is not found, rather than read as "CPU")


def test_the_checkpointers_time_is_read_within_the_slow_writes_only():
    # idle until 10 s, writing until 20 s, fsyncing until 22 s, idle until 30 s
    states = [(0.0, "Activity:CheckpointerMain"), (10.0, "Timeout:CheckpointWriteDelay"),
              (20.0, "IO:DataFileSync"), (22.0, "Activity:CheckpointerMain"), (30.0, None)]
    writes = [(5.0, 0.002, True), (19.5, 1.0, True), (20.0, 0.5, True), (21.0, 0.05, True), (29.0, 0.2, False)]
    found = chain.checkpointer_beside_slow_writes(states, [(0.0, 30.0)], writes)
    # three over 100 ms: 19.5 to 20.5 and 20.0 to 20.5 overlap (1 s, half of it fsyncing), 29.0 to 29.2 idle
    assert found == {"sampled": True, "slow_writes": 3, "slow_seconds": 1.2,
                     "backfills": {"Timeout:CheckpointWriteDelay": 0.3333, "Activity:CheckpointerMain": 0.6,
                                   "IO:DataFileSync": 0.0667},
                     "slow": {"IO:DataFileSync": 0.4167, "Timeout:CheckpointWriteDelay": 0.4167,
                              "Activity:CheckpointerMain": 0.1667},
                     # one end, at 22 s: due 1, 2 and 2.5 s before it, and two with none within 4 s
                     "checkpoints_ended": 1, "before_end": {"all": [0.2, 0.2, 0.2, 0.4],
                                                            "slow": [0.0, 0.3333, 0.3333, 0.3333]}}
    assert checkpointer.seconds_in(states, [(25.0, 40.0)]) == {"Activity:CheckpointerMain": 5.0}  # to the end
    assert chain.checkpointer_beside_slow_writes([], [(0.0, 30.0)], writes)["sampled"] is False


def test_latency_stats_count_the_window_only():
    samples = [(0.5, 0.001, True), (1.0, 0.002, True), (1.5, 2.0, True), (2.0, 0.0, False), (3.5, 9.0, True)]
    assert latency_stats(samples, 1.0, 2.0) == {"count": 3, "failed": 1, "p50_ms": 2000.0, "p99_ms": 2000.0,
                                                "max_ms": 2000.0}
    assert latency_stats(samples, 0.0, 4.0, excluded=[(1.2, 3.0)]) == {
        "count": 3, "failed": 0, "p50_ms": 2.0, "p99_ms": 9000.0, "max_ms": 9000.0}


def chart_pixels(png: bytes):
    """The PNG's pixels as rows of (red, green, blue, alpha), 0 to 1."""
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def count(pixels, red: tuple, green: tuple, blue: tuple) -> int:
    """How many pixels have each channel within its (low, high) bounds."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((r >= red[0]) & (r <= red[1]) & (g >= green[0]) & (g <= green[1])
                & (b >= blue[0]) & (b <= blue[1])).sum())


INSERT_BLUE = ((0, 0.3), (0.25, 0.45), (0.7, 1))  # plot.SERIES_COLORS, with some slack
UPDATE_ORANGE = ((0.8, 1), (0.45, 0.65), (0, 0.15))
LAG_GREEN = ((0, 0.25), (0.5, 0.7), (0.15, 0.4))  # plot.LINE_COLOR
CHECKPOINT_TAN = ((0.7, 0.8), (0.58, 0.68), (0.38, 0.48))  # plot.STRIPS
STANDBY_FSYNC_TEAL = ((0, 0.1), (0.54, 0.64), (0.58, 0.68))


def test_the_chart_is_matplotlibs_png_of_the_promised_size_with_the_runs_drawn():
    inserts = [(t / 10, 0.5 + t % 7, True) for t in range(300)]
    updates = [(t / 10 + 1, 2.5 + t % 5, True) for t in range(300)]
    window = [(5.0, 20.0, "001")]
    drawn = Panel("ours", {"inserts": inserts + [(12.0, 0.0, False)], "response updates": updates}, window)
    png = latency_chart([drawn] * 2, width=400, panel_height=150)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    kind, width, height = struct.unpack(">4sII", png[12:24])
    assert (kind, width, height) == (b"IHDR", 400, 300)
    assert re.search(rb"tEXtSoftware\x00Matplotlib version", png)  # what savefig writes
    pixels = chart_pixels(png)
    assert pixels.shape[:2] == (300, 400)
    # the same panels without their points: legends and titles only
    empty = chart_pixels(latency_chart([Panel("ours", {"inserts": [], "response updates": []}, window)] * 2,
                                       width=400, panel_height=150))
    assert count(pixels, *INSERT_BLUE) > 2 * count(empty, *INSERT_BLUE) + 100  # the inserts
    assert count(pixels, *UPDATE_ORANGE) > 2 * count(empty, *UPDATE_ORANGE) + 100  # the response updates
    assert count(pixels, (0.7, 1), (0, 0.3), (0, 0.3)) > 0  # the failed insert's red mark
    assert count(empty, (0.7, 1), (0, 0.3), (0, 0.3)) == 0
    assert count(pixels, (0.87, 0.89), (0.87, 0.89), (0.87, 0.89)) > 400  # the shaded apply window
    # a lag drawn as a line, with its bound dashed, where there is one
    lagged = Panel("ours", {"inserts": inserts}, window, lines={"lag": [(t / 10, 1.0 + t) for t in range(300)]},
                   bounds=[(1000, "bound")])
    lines = chart_pixels(latency_chart([lagged], width=400, panel_height=300))
    plain = chart_pixels(latency_chart([Panel("ours", {"inserts": inserts}, window)], width=400, panel_height=300))
    assert count(lines, *LAG_GREEN) > 2 * count(plain, *LAG_GREEN) + 100
    # the checkpointer's phases, marked along the bottom
    states = [(0.0, "Activity:CheckpointerMain"), (8.0, "Timeout:CheckpointWriteDelay"), (12.0, "IO:DataFileWrite"),
              (16.0, "IO:DataFileSync"), (18.0, "Activity:CheckpointerMain"), (25.0, None)]
    restartpoint = [(1.0, "Timeout:CheckpointWriteDelay"), (17.0, "IO:DataFileSync"), (19.0, None)]
    strips = chainreport.checkpoint_strips([{"checkpointer": states[:3]},
                                            {"checkpointer": states[2:], "standby_checkpointer": restartpoint}])
    assert strips == {"checkpointer at work": [(8.0, 18.0)], "checkpointer fsyncing": [(16.0, 18.0)],
                      "standby's checkpointer fsyncing": [(17.0, 19.0)]}
    marked = chart_pixels(latency_chart([Panel("ours", {"inserts": inserts}, window, strips=strips)],
                                        width=400, panel_height=300))
    assert count(marked, *CHECKPOINT_TAN) > 2 * count(plain, *CHECKPOINT_TAN) + 50
    assert count(marked, *STANDBY_FSYNC_TEAL) > 2 * count(plain, *STANDBY_FSYNC_TEAL) + 10
    assert chainreport.checkpoint_strips([{"checkpointer": states[:1]}, {}]) == {}
