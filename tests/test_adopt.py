"""Adopting the databases that operators of the original proxy already have.

Each shape of tests/shapes.py is built as the original built it and filled with
traffic; then yoyo apply must bring it to our schema without changing a row or
removing anything of the operator's, and yoyo rollback must never drop the
operator's data unless told to in so many words.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from psycopg2.extras import execute_values

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot, widened
from nexus_migrate.proxy.schema import PROMISES, promised
from nexus_migrate.proxy.verify import compare, valid_indexes, verify
from nexus_migrate.proxy.statements import INSERT_CHUNKS, LATEST_CONVERSATIONS, ONE_CONVERSATION
from nexus_migrate.steps import ALLOW_DATA_LOSS, DataLossRefused, widenings

from .conftest import assert_one_line_error, run_script
from .migrations import ALL, MIGRATIONS, logged
from .shapes import N_REQUESTS, ORIGINAL_000, ORIGINAL_001, REVERTED_009_ANALYSES, SHAPES, Shape, build
from .test_proxy import proxy_request, proxy_response, sha
from .test_verify import without_sizes

OURS = {table for p in PROMISES.values() for table in (*p.columns, *p.views)}  # tables and views we define


@pytest.fixture(params=list(SHAPES))
def shape(request, db):
    """The test's database, built in one of the shapes found in the field."""
    build(db, SHAPES[request.param])
    return SHAPES[request.param]


def tables_and_columns(db) -> dict[str, list[str]]:
    """Every table with its columns, in order."""
    tables: dict[str, list[str]] = {}
    relkinds = {name: kind for name, kind, _ in snapshot(db)["relations"]}
    for table, column, *_ in snapshot(db)["columns"]:
        if relkinds[table] == "r":
            tables.setdefault(table, []).append(column)
    return tables


def checksums(db, tables: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row's text, over the given columns only
    (apply adds columns, which would change the text of a whole row)."""
    sums = {}
    with db.cursor() as cur:
        for table, columns in tables.items():
            row = ", ".join(f'"{c}"' for c in columns)
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) "
                        f"FROM (SELECT ROW({row})::text AS r FROM {table}) AS t")
            sums[table] = cur.fetchone()
    return sums


# What apply may change of an object it finds: the comments it writes, the body
# of refresh_hourly_stats() it replaces (same name, same effect), the width of
# the VARCHAR columns it widens (steps.Widening, read from the migrations), and
# the definition of a constraint or trigger that has the name of one it
# promises (schema.py): the foreign keys it makes ON DELETE SET NULL, the
# trigger it points at its own function.
def kept(before: dict, after: dict) -> list[str]:
    """What of the before snapshot is missing from the after one."""
    lost = []
    columns_after = {row[:5] for row in after["columns"]}
    for row in widened(before, widenings(MIGRATIONS))["columns"]:
        if row[:5] not in columns_after:
            lost.append(f"column {row[:5]}")
    ours = promised(ALL)
    replaceable = {"constraints": {name for defs in ours.constraints.values() for name in defs},
                   "triggers": set(ours.triggers)}
    retired = {name for mid in ALL for name in PROMISES[mid].retires}
    for kind, width in (("relations", 2), ("indexes", 3), ("constraints", 3), ("views", 1),
                        ("functions", 1), ("triggers", 3), ("types", 2)):
        now = {row[:width] for row in after[kind]}
        names_now = {row[:2] for row in after[kind]}
        lost += [f"{kind} {row[:width]}" for row in before[kind] if row[:width] not in now
                 and not (row[1:2] and row[1] in replaceable.get(kind, ()) and row[:2] in names_now)
                 and row[0] not in retired]
    return lost


def duplicate_notes(db) -> list[str]:
    """verify's notes of duplicate indexes, without their sizes: a GIN index
    grows when its pending list is merged, by an insert or an autovacuum."""
    return without_sizes([note for note in compare(db, ALL).notes if " repeats " in note])


def test_apply_brings_the_database_to_our_schema_and_keeps_every_row(shape, yoyo, db, database_url):
    before, original = snapshot(db), tables_and_columns(db)
    sums, duplicates = checksums(db, original), duplicate_notes(db)
    indexes_before = {table: valid_indexes(db.cursor(), table) for table in original}

    assert yoyo("apply") == 0
    assert applied_migrations(db) == ALL
    assert verify(db) == []
    result = run_script(PROJECT_ROOT, "migrate", "verify", DATABASE_URL=database_url)
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("OK"), result.stdout

    assert checksums(db, original) == sums
    assert kept(before, snapshot(db)) == []
    # Not one index was built beside an index that already served it ...
    for table, old in indexes_before.items():
        for name, index in valid_indexes(db.cursor(), table).items():
            if name not in old:
                assert not [o for o, structure in old.items() if index.served_by(structure)], name
    # ... our indexes present under the operator's names are not built again ...
    # (those a later migration retires are no longer ours: verify notes them as unused)
    for ours, theirs in shape.served_by.items():
        assert ours not in {row[0] for row in snapshot(db)["indexes"]}
        if ours in promised(ALL).indexes:
            assert f"index {ours} is present as {theirs}, which has the same columns" in compare(db).notes
        else:
            assert any(note.startswith(f"index {theirs} (") and " serves no query: " in note
                       for note in compare(db).notes), theirs
    # ... and no duplicate appeared that was not there before.
    assert duplicate_notes(db) == duplicates

    once = snapshot(db)
    assert yoyo("apply") == 0
    assert snapshot(db) == once
    assert logged(db, "apply") == ALL


def test_rollback_never_drops_the_operators_data_unless_asked(shape, yoyo, db, monkeypatch):
    original = tables_and_columns(db)
    operators_own = {table: columns for table, columns in original.items() if table not in OURS}
    before, own_sums = snapshot(db), checksums(db, operators_own)
    yoyo("apply")
    adopted, sums = snapshot(db), checksums(db, original)

    with pytest.raises(DataLossRefused, match=ALLOW_DATA_LOSS) as refused:
        yoyo("rollback", "--all")
    assert "table api_requests (it holds rows)" in str(refused.value)
    assert "nothing was changed" in str(refused.value)
    assert snapshot(db) == adopted and checksums(db, original) == sums
    assert applied_migrations(db) == ALL and verify(db) == []

    # Back one migration at a time: each goes while it drops nothing that holds
    # data. The first that would is refused, names what it would drop (tables
    # and columns the operator had), and changes nothing.
    for migration_id in reversed(ALL):
        found = snapshot(db)
        try:
            yoyo("rollback", "-r", migration_id)
        except DataLossRefused as refused:
            assert snapshot(db) == found and checksums(db, original) == sums
            assert applied_migrations(db) == ALL[:ALL.index(migration_id) + 1]
            named = re.findall(r"(?:table|column) (\w+)(?:\.(\w+))? \(it holds", str(refused))
            assert named and all(column in original[table] if column else table in original
                                 for table, column in named), refused
            break
        assert applied_migrations(db) == ALL[:ALL.index(migration_id)]
        assert verify(db) == []
        assert kept(before, snapshot(db)) == [] and checksums(db, original) == sums
    else:
        pytest.fail("rolling back every migration dropped the operator's api_requests")

    # Asked in so many words, rollback drops what the migrations define, with
    # its rows, and nothing else: the operator's own tables keep theirs.
    monkeypatch.setenv(ALLOW_DATA_LOSS, "1")
    assert yoyo("rollback", "--all") == 0
    assert applied_migrations(db) == [] and verify(db) == []
    assert not OURS & {name for name, *_ in snapshot(db)["relations"]}
    assert checksums(db, operators_own) == own_sums


def test_the_proxy_writes_and_reads_as_before_after_adoption(shape, yoyo, db):
    yoyo("apply")
    # Now, not when the module was imported: the shapes' traffic ends 5 minutes
    # before they were built, and a long suite reaches this test later than that.
    now = datetime.now(timezone.utc)
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM api_requests")
    (requests_before,) = cur.fetchone()

    conversation = uuid.uuid4()
    history = ["hello", "tell me more", "and then?"]
    for n in range(1, len(history) + 1):
        # the proxy links a request to its conversation through the parent's hash
        if n > 1:
            cur.execute("SELECT conversation_id, branch_id FROM api_requests WHERE current_message_hash = %s",
                        (sha(history[n - 2]),))
            assert cur.fetchone() == (str(conversation), "main")
        rid = proxy_request(cur, at=now + timedelta(seconds=n), conversation=conversation, messages=history[:n])
        proxy_response(cur, rid, input_tokens=100 * n, output_tokens=10 * n, streaming=True)
        execute_values(cur, INSERT_CHUNKS, [(str(rid), i, now, f"chunk {i}", 1) for i in range(100)])
        execute_values(cur, INSERT_CHUNKS, [(str(rid), i, now, f"chunk {i}", 1) for i in range(100)])

    cur.execute(ONE_CONVERSATION, ([str(conversation)],))
    assert [row[4] for row in cur.fetchall()] == [110, 220, 330]
    cur.execute(LATEST_CONVERSATIONS)
    assert cur.fetchone() == (str(conversation), ["main"], 3, 660, now + timedelta(seconds=3))
    cur.execute("SELECT count(*) FROM streaming_chunks s JOIN api_requests r USING (request_id) "
                "WHERE r.conversation_id = %s", (str(conversation),))
    assert cur.fetchone()[0] == 300

    # the dashboard: latest requests of a domain, totals and errors, the hourly rollup
    cur.execute("SELECT request_id FROM api_requests WHERE domain = %s ORDER BY timestamp DESC LIMIT 1",
                ("team.example.com",))
    assert cur.fetchone() == (str(rid),)  # the last of ours: the shape's traffic is older
    cur.execute("SELECT count(*), count(*) FILTER (WHERE error IS NOT NULL) FROM api_requests")
    assert cur.fetchone() == (requests_before + 3, N_REQUESTS // 50)  # every 50th of the shape's failed, none of ours
    cur.execute("SELECT refresh_hourly_stats()")  # on the original shapes this always failed
    cur.execute("SELECT sum(request_count) FROM hourly_stats")
    hourly = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM api_requests WHERE timestamp > now() - interval '7 days'")
    assert hourly == cur.fetchone()[0]
    assert verify(db) == []


def test_an_older_conversation_analyses_stops_011_in_one_line_and_the_advice_works(db, database_url):
    """The reverted 009's table: a text key and a status kept by a CHECK.
    011 refuses it before changing anything; moved aside as the message says,
    011 goes through and the old rows stay where they were moved."""
    build(db, Shape((ORIGINAL_000, ORIGINAL_001, REVERTED_009_ANALYSES)))
    before = snapshot(db)
    result = run_script(PROJECT_ROOT, "migrate", "apply", "--batch", DATABASE_URL=database_url)
    line = assert_one_line_error(result, "011", "conversation_analyses is an older table",
                                 "id is character varying(64)", "status is character varying(20)",
                                 "nothing was changed",
                                 "ALTER TABLE conversation_analyses RENAME TO conversation_analyses_old")
    assert "conversation_id" not in line.split("(")[1].split(")")[0]  # the columns that match are not named
    assert applied_migrations(db) == ALL[:ALL.index("011-add-conversation-analyses")]
    assert kept(before, snapshot(db)) == []
    assert "conversation_analysis_status" not in {name for name, _ in snapshot(db)["types"]}

    with db.cursor() as cur:
        cur.execute("ALTER TABLE conversation_analyses RENAME TO conversation_analyses_old")
    assert run_script(PROJECT_ROOT, "migrate", "apply", "--batch", DATABASE_URL=database_url).returncode == 0
    assert applied_migrations(db) == ALL and verify(db) == []
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM conversation_analyses_old")
        assert cur.fetchone() == (10,)
