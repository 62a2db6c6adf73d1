"""scripts/benchmark's parts, without its timings (those are numbers for the
docs/benchmark.md, not assertions): the original way builds what yoyo apply builds, the
seeded traffic is shaped as the benchmark says, and its chart is a PNG."""

from __future__ import annotations

import io
import re
import struct
import threading
import uuid

import psycopg2

from nexus_migrate.benchmark.conversations import MEASURED, SCRATCH, builds_alone, measured_indexes
from nexus_migrate.benchmark.plot import Panel, latency_chart
from nexus_migrate.benchmark.scratch import Server
from nexus_migrate.benchmark.seed import SEED_BLOCK, SEEDED, conversation_of, seed
from nexus_migrate.benchmark.ways import BASE, apply_ours, apply_upstream
from nexus_migrate.benchmark.writer import WRITER, latency_stats, sampling_waits
from nexus_migrate.catalog import snapshot

from .conftest import wait_until


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


def test_seeded_traffic_has_interleaved_conversations_with_branches(server):
    bench = Server(server.url())
    try:
        conn = psycopg2.connect(seed(bench, SEED_BLOCK))
        cur = conn.cursor()
        cur.execute("SELECT count(*), count(DISTINCT conversation_id), count(*) FILTER (WHERE conversation_id IS NULL),"
                    " count(DISTINCT branch_id), (SELECT count(*) FROM streaming_chunks) FROM api_requests")
        # (the 50 conversations numbered c % 10 = 0 fall on the requests without one)
        assert cur.fetchone() == (32_000, 450, 3_200, 4, 32_000)
        # one conversation, as the benchmark's query reads it: a main line, a
        # new branch every eight requests after its 40th, each request's parent
        # the one before
        cur.execute("SELECT current_message_hash, parent_message_hash, branch_id, message_count, ctid"
                    " FROM api_requests WHERE conversation_id = %s ORDER BY timestamp", (conversation_of(4),))
        rows = cur.fetchall()
        assert [r[3] for r in rows] == list(range(1, 128, 2))
        assert [r[2] for r in rows] == ["main"] * 40 + ["branch_1"] * 8 + ["branch_2"] * 8 + ["branch_3"] * 8
        assert [r[1] for r in rows] == [None] + [r[0] for r in rows[:-1]]
        assert len({r[4].split(",")[0] for r in rows}) == 64  # on as many heap pages
        cur.execute("SELECT avg(pg_column_size(body)) > 200, avg(length(body::text)) > 2500 FROM api_requests")
        assert cur.fetchone() == (True, True)
        conn.close()
    finally:
        bench.drop(SEEDED)
        bench.close()


def test_builds_alone_times_every_index_both_ways_on_a_copy_it_drops(server):
    bench = Server(server.url())
    try:
        seeded = seed(bench, SEED_BLOCK)
        before = catalog_of(seeded)
        timed = builds_alone(bench)
        built = [step.name for step in measured_indexes()]
        assert list(timed) == built and len(built) == 8
        assert all(t["plain"] > 0 and t["concurrent"] > 0 for t in timed.values())
        assert catalog_of(seeded) == before  # the builds ran on the copy
        assert not bench.execute("SELECT FROM pg_database WHERE datname = %s", (SCRATCH["builds"],))
    finally:
        bench.drop(SEEDED)
        bench.close()


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
