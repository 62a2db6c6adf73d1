"""The backfills' walks: in physical order a row that the proxy moved or wrote
behind the walk while it ran is still caught; 008 visits only its candidates."""

from __future__ import annotations

import re

import psycopg2

from .conftest import wait_until
from .history import expected, read
from .test_backfill import assert_rows, store_history_at_002, write_map
from .traffic import seed, start_migrate

BEFORE_005 = "004-optimize-conversation-window-functions"
WALKING = "005-populate-account-ids"
SEEDED_DOMAINS = {f"team{n}.example.com": f"acc_{n}" for n in range(7)}  # as traffic.seed() names them
WALKED = re.compile(r"t\.ctid >= '\((\d+),0\)'::tid")
CATCHING_UP = "age(t.xmin)"  # the catch-up pass's batches ask for the row versions written since the walk began


def block(cur, request_id: str) -> int:
    cur.execute("SELECT (ctid::text::point)[0]::int FROM api_requests WHERE request_id = %s", (request_id,))
    return cur.fetchone()[0]


def walked_to(cur) -> int:
    """The first page of 005's batch that is running in its walk, from
    pg_stat_activity (-1 between batches, and in the catch-up pass, which
    walks the table again from its first page)."""
    cur.execute("SELECT query FROM pg_stat_activity WHERE query LIKE '-- 005 accounts: a batch%%'")
    row = cur.fetchone()
    match = WALKED.search(row[0]) if row and CATCHING_UP not in row[0] else None
    return int(match.group(1)) if match else -1


def test_a_row_moved_or_written_behind_the_walk_is_still_caught(yoyo, db, database_url, tmp_path):
    assert yoyo("apply", "-r", BEFORE_005) == 0
    seed(db, 2000)  # about 15 rows a page, every page full
    mapping = write_map(tmp_path, SEEDED_DOMAINS)
    with db.cursor() as cur:
        cur.execute("SELECT request_id FROM api_requests ORDER BY ctid DESC LIMIT 1")
        far = cur.fetchone()[0]  # on the last page: the walk reaches it last
    # Up to 005 only: the later backfills, one row a batch, would take the test's time and tell nothing more.
    apply = start_migrate("apply", "--batch", "-r", WALKING, DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=mapping,
                          NEXUS_BATCH_ROWS="1", NEXUS_BATCH_SECONDS="0.0001", NEXUS_BATCH_PAUSE_MS="20",
                          NEXUS_LOCK_TIMEOUT_MS="60000")
    try:
        with db.cursor() as cur:
            # (a page the walk has passed: it only goes on from there)
            # (a batch runs for a few ms of each 20: looked for every 5 ms, none is missed)
            position = wait_until(lambda: (page := walked_to(cur)) >= 40 and page, "005 to walk 40 pages",
                                  every=0.005)
            # The walk's own updates left dead rows behind it: vacuumed, their
            # pages are where the free space map sends the next new row.
            cur.execute("VACUUM api_requests")
            writer = psycopg2.connect(database_url)
            with writer, writer.cursor() as w:
                w.execute("LOCK TABLE api_requests IN SHARE MODE")  # the next batch waits meanwhile
                # An older proxy's insert, and a response that makes a row too big for its full page.
                w.execute("""
                    INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, model)
                    VALUES (gen_random_uuid(), now(), 'team3.example.com', 'POST', '/v1/messages', '{}',
                            'claude-sonnet-4')
                    RETURNING request_id""")
                added = w.fetchone()[0]
                w.execute("""
                    UPDATE api_requests SET response_body = to_jsonb((SELECT string_agg(md5(n::text), '')
                                                                        FROM generate_series(1, 45) AS n))
                     WHERE request_id = %s AND account_id IS NULL""", (far,))
                assert w.rowcount == 1, "the walk had reached the far row already"
                assert block(w, added) < position and block(w, far) < position, "not written behind the walk"
            writer.close()
        out, err = apply.communicate(timeout=300)
    finally:
        if apply.poll() is None:
            apply.kill()
    assert apply.returncode == 0, err
    with db.cursor() as cur:
        cur.execute("SELECT request_id::text, account_id FROM api_requests WHERE request_id IN (%s, %s)",
                    (added, far))
        assert dict(cur.fetchall()) == {added: "acc_3", str(far): SEEDED_DOMAINS[_domain(cur, far)]}
        cur.execute("SELECT count(*) FROM api_requests WHERE account_id IS NULL")
        assert cur.fetchone()[0] == 0


def _domain(cur, request_id) -> str:
    cur.execute("SELECT domain FROM api_requests WHERE request_id = %s", (request_id,))
    return cur.fetchone()[0]


def test_008_visits_only_the_rows_that_start_a_sub_task(yoyo, db, database_url, tmp_path):
    h = store_history_at_002(yoyo, db)
    result = start_migrate("apply", "--batch", DATABASE_URL=database_url, NEXUS_ACCOUNT_MAP=write_map(tmp_path))
    out, err = result.communicate(timeout=300)
    assert result.returncode == 0, err
    assert_rows(read(db), expected(h), h)
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(parent_task_request_id) FROM api_requests")
        rows, starts = cur.fetchone()
    [line] = [line for line in out.splitlines() if line.startswith("008 sub-tasks into their parent's conversation:")
              and "looked at" in line]
    assert f"of {starts} looked at" in line and starts < rows, line
