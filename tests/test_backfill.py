"""The backfills of 003, 005, 007 and 008 on proxy history with known answers
(tests/history.py): every backfilled column of every row, as the rules say;
a second run changes nothing; 008's rollback puts every row back; a batch that
cannot get its locks gives up with one line."""

from __future__ import annotations

import uuid

import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations
from nexus_migrate.proxy.verify import verify
from nexus_migrate.steps import Ddl

from .conftest import assert_one_line_error, run_script
from .history import ACCOUNT_MAP, BACKFILLED, expected, history, originals, read, store
from .migrations import ALL, MIGRATIONS

UP_TO_002 = "002-optimize-conversation-indexes"
WRITTEN_BY_LATER_PROXIES = ("003-add-subtask-tracking", "005-populate-account-ids", "007-add-parent-request-id")


def add_later_columns(db) -> None:
    """The columns that proxies after 002 write, added by the migrations' own
    ADD COLUMN steps, so history can hold what those proxies stored."""
    with db.cursor() as cur:
        for migration in MIGRATIONS:
            if migration.id in WRITTEN_BY_LATER_PROXIES:
                migration.load()
                for step in migration.module.steps:
                    if isinstance(step, Ddl) and "ADD COLUMN" in (step.apply_sql or ""):
                        cur.execute(step.apply_sql)


def store_history_at_002(yoyo, db, fillfactor: int | None = None):
    """The database at 002 with the later columns, holding the history (its
    pages filled to fillfactor percent, if given); returns the history."""
    yoyo("apply", "-r", UP_TO_002)
    add_later_columns(db)
    if fillfactor:
        with db.cursor() as cur:
            cur.execute(f"ALTER TABLE api_requests SET (fillfactor = {fillfactor})")
    h = history()
    store(db, h)
    return h


@pytest.fixture
def stored(yoyo, db):
    return store_history_at_002(yoyo, db)


def write_map(tmp_path, mapping=ACCOUNT_MAP) -> str:
    path = tmp_path / "accounts.csv"
    path.write_text("# domain,account\n\n" + "".join(f"{d},{a}\n" for d, a in mapping.items()))
    return str(path)


def migrate(url: str, *args: str, **env: str):
    return run_script(PROJECT_ROOT, "migrate", *args, DATABASE_URL=url, **env)


def assert_rows(got: dict, want: dict, h) -> None:
    names = {v: k for k, v in h.named.items()}
    assert got.keys() == want.keys()
    wrong = [(names.get(rid, str(rid)), column, got[rid][column], want[rid][column])
             for rid in want for column in BACKFILLED if got[rid][column] != want[rid][column]]
    assert wrong == [], wrong[:10]


def test_apply_fills_every_row_as_the_rules_say(stored, db, database_url, tmp_path):
    h = stored
    result = migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path))
    assert result.returncode == 0, result.stderr
    want = expected(h)
    assert_rows(read(db), want, h)
    assert verify(db) == []

    # The rules' cases, named, so that a mistake shared by the rules and
    # tests/history.py still shows.
    got, n = read(db), h.named
    parent_conversation = got[n["parent.1"]]["conversation_id"]
    for start, branch in (("st.5s", "subtask_1"), ("st.45s", "subtask_2"), ("st.p3", "subtask_3"),
                          ("st.joined", "subtask_4"), ("st.no_conversation", "subtask_5"),
                          ("st.linked_003", "subtask_6"), ("st.2h", "subtask_7")):
        assert (got[n[start]]["conversation_id"], got[n[start]]["branch_id"]) == (parent_conversation, branch), start
    assert got[n["st.5s.2"]]["branch_id"] == "subtask_1" and got[n["st.5s.2"]]["parent_task_request_id"] == n["parent.1"]
    assert got[n["st.5s"]]["parent_request_id"] == n["parent.1"]
    for unlinked in ("st.25h", "st.other_domain", "st.reminder_first", "st.two_texts", "st.empty"):
        assert got[n[unlinked]]["parent_task_request_id"] is None, unlinked
        assert got[n[unlinked]]["branch_id"] == "main", unlinked
    assert got[n["st.dup"]]["parent_task_request_id"] == n["dup.0"]  # the earliest of two calls
    assert [got[n[s]]["branch_id"] for s in ("live.sub1", "live.sub2", "st.live_first", "st.live_second")] == \
        ["subtask_1", "subtask_2", "subtask_3", "subtask_4"]
    assert got[n["live.2"]]["is_subtask"] and got[n["live.2"]]["branch_id"] == "main"  # the proxy's marking, kept
    assert got[n["retried.2"]]["parent_request_id"] == max(n["retry.later"], n["retry.same_time"])
    assert got[n["branch"]]["parent_request_id"] == n["retried.0"]
    assert got[n["misc.2"]]["task_tool_invocation"][0].get("prompt") == "flat"  # another shape, kept
    assert got[n["misc.0"]]["task_tool_invocation"] is None
    assert [c["input"]["prompt"] for c in got[n["parent.1"]]["task_tool_invocation"]] == \
        [c["input"]["prompt"] for c in h.rows[[r["request_id"] for r in h.rows].index(n["parent.1"])]
         ["response_body"]["content"] if c.get("name") == "Task"]
    assert got[n["live.0"]]["account_id"] == "acc_proxy" and got[n["plain1.0"]]["account_id"] is None
    assert got[n["plain0.0"]]["account_id"] == "acc_alpha" and got[n["plain2.0"]]["account_id"] == "acc_gamma"


def test_a_second_run_changes_nothing(stored, db, database_url, tmp_path):
    mapping = write_map(tmp_path)
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=mapping).returncode == 0

    def versions():
        with db.cursor() as cur:
            cur.execute("SELECT request_id, xmin::text FROM api_requests")
            return dict(cur.fetchall())
    before = versions()
    again = migrate(database_url, "backfill", NEXUS_ACCOUNT_MAP=mapping)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.strip().splitlines()
    assert len(lines) == 5 and all("nothing left to do" in line for line in lines), lines
    assert versions() == before  # not one row written again


def test_without_a_map_005_says_how_many_rows_wait_and_backfill_fills_them_later(stored, db, database_url, tmp_path):
    h = stored
    result = migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=None)
    assert result.returncode == 0, result.stderr
    without = sum(1 for r in h.rows if r["account_id"] is None)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("005")]
    assert f"{without:,} rows have no account_id" in line and "scripts/migrate backfill 005-populate-account-ids" in line
    assert_rows(read(db), expected(h, account_map=None), h)

    later = migrate(database_url, "backfill", "005", NEXUS_ACCOUNT_MAP=write_map(tmp_path))
    assert later.returncode == 0, later.stderr
    assert_rows(read(db), expected(h), h)


def test_rolling_back_008_puts_every_row_back_in_its_conversation_and_branch(stored, db, database_url, tmp_path):
    h = stored
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path)).returncode == 0
    applied = read(db)
    moved = [rid for rid, place in originals(h).items()
             if (applied[rid]["conversation_id"], applied[rid]["branch_id"]) != place]
    assert len(moved) == 18  # the 11 sub-tasks of history with their follow-ups
    back = migrate(database_url, "rollback", "--batch", "-r", "008-subtask-updates-and-task-indexes")
    assert back.returncode == 0, back.stderr  # the guard knows the kept places are put back, not lost
    got = read(db)
    assert {rid: (row["conversation_id"], row["branch_id"]) for rid, row in got.items()} == originals(h)
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass('api_requests_subtask_moves')")
        assert cur.fetchone()[0] is None
    assert applied_migrations(db) == ALL[:ALL.index("008-subtask-updates-and-task-indexes")]

    assert migrate(database_url, "apply", "--batch").returncode == 0  # and applied again, the same result
    assert_rows(read(db), expected(h), h)


def test_rolling_back_backfilled_columns_is_refused(stored, db, database_url, tmp_path):
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path)).returncode == 0
    before = read(db)
    result = migrate(database_url, "rollback", "--batch", "-r", "007-add-parent-request-id")
    assert_one_line_error(result, "refusing to roll back", "api_requests.parent_request_id")
    assert read(db) == before and applied_migrations(db) == ALL


def older_proxy_rows(db) -> dict[str, uuid.UUID]:
    """What an older proxy wrote after the migrations ran: a follow-up turn
    (parent hash, no parent_request_id) and a sub-task start that a proxy of
    003's time linked in its own conversation."""
    h = history()
    n = h.named
    rows = {r["request_id"]: r for r in h.rows}
    late = dict(rows[n["plain0.2"]], request_id=uuid.uuid4(), timestamp=rows[n["plain0.2"]]["timestamp"])
    start = dict(rows[n["st.empty"]], request_id=uuid.uuid4(), parent_task_request_id=n["parent.2"],
                 is_subtask=True, conversation_id=uuid.uuid4())
    h.rows = [late, start]
    store(db, h)
    return {"late": late["request_id"], "start": start["request_id"]}


def test_backfill_finishes_rows_an_older_proxy_wrote_later(stored, db, database_url, tmp_path):
    h = stored
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path)).returncode == 0
    new = older_proxy_rows(db)
    result = migrate(database_url, "backfill", NEXUS_ACCOUNT_MAP=write_map(tmp_path))
    assert result.returncode == 0, result.stderr
    got = read(db)
    assert got[new["late"]]["parent_request_id"] == h.named["plain0.1"]
    assert got[new["start"]]["conversation_id"] == got[h.named["parent.2"]]["conversation_id"]
    assert got[new["start"]]["branch_id"] == "subtask_8"
    assert "008 sub-tasks into their parent's conversation: done, 1 rows changed" in result.stdout


@pytest.mark.parametrize("held", ["table", "row"])
def test_a_batch_that_cannot_get_its_locks_gives_up_with_one_line_and_changes_nothing_more(
        held, stored, db, database_url, server, tmp_path):
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path)).returncode == 0
    new = older_proxy_rows(db)
    before = read(db)
    import psycopg2
    holder = psycopg2.connect(database_url)
    with holder.cursor() as cur:
        if held == "table":  # a SHARE lock: every write of the table waits for it
            cur.execute("LOCK TABLE api_requests IN SHARE MODE")
        else:  # 008 moves a conversation's rows together, and waits for each
            cur.execute("SELECT FROM api_requests WHERE request_id = %s FOR UPDATE", (str(new["start"]),))
    try:
        result = migrate(database_url, "backfill", "007" if held == "table" else "008", NEXUS_LOCK_ATTEMPTS="3")
        line = assert_one_line_error(result, "gave up after 3 attempts to get the locks for a batch",
                                     "run the same command again")
        assert "UPDATE api_requests t SET " + ("parent_request_id" if held == "table" else "conversation_id") in line
        assert read(db) == before
    finally:
        holder.close()
    again = migrate(database_url, "backfill")
    assert again.returncode == 0, again.stderr
    # The two rows the older proxy wrote are finished, as an uninterrupted run
    # finishes them, and no other row changes.
    n, want = stored.named, {rid: dict(row) for rid, row in before.items()}
    want[new["late"]]["parent_request_id"] = n["plain0.1"]
    want[new["start"]].update(parent_request_id=n["parent.2"], branch_id="subtask_8",
                              conversation_id=before[n["parent.2"]]["conversation_id"])
    assert read(db) == want


def test_rows_the_proxy_holds_are_visited_again_and_then_given_up_on(stored, db, database_url, tmp_path):
    """007 changes rows one by one and skips a row another session holds; it
    comes back for it, and after the last visit says so in one line."""
    assert migrate(database_url, "apply", "--batch", NEXUS_ACCOUNT_MAP=write_map(tmp_path)).returncode == 0
    new = older_proxy_rows(db)
    import psycopg2
    holder = psycopg2.connect(database_url)
    with holder.cursor() as cur:
        cur.execute("SELECT FROM api_requests WHERE request_id = %s FOR UPDATE", (str(new["late"]),))
    try:
        result = migrate(database_url, "backfill", "007", NEXUS_LOCK_ATTEMPTS="2")
        assert_one_line_error(result, "007 parent requests: gave up after 2 visits to rows that another session kept locked")
        assert read(db)[new["late"]]["parent_request_id"] is None
    finally:
        holder.close()
    assert migrate(database_url, "backfill", "007").returncode == 0
    assert read(db)[new["late"]]["parent_request_id"] == stored.named["plain0.1"]


def backfills():
    from nexus_migrate.steps import Backfill
    for migration in MIGRATIONS:
        migration.load()
        yield from ((migration.id, s) for s in migration.module.steps if isinstance(s, Backfill))


def test_the_blocking_statements_give_the_same_answer_in_one_update_each(yoyo, db, monkeypatch, tmp_path):
    """What the benchmark times as the original scripts' way: each rule as one
    UPDATE over the whole table, run in order on the stored history."""
    yoyo("apply")
    h = history()
    store(db, h)
    monkeypatch.setenv("NEXUS_ACCOUNT_MAP", write_map(tmp_path))
    with db.cursor() as cur:
        for _, step in backfills():
            [statement] = step.blocking_statements()
            assert "BETWEEN" not in statement and "SKIP LOCKED" not in statement
            cur.execute(statement)
    assert_rows(read(db), expected(h), h)


def test_sql_shows_each_backfill_as_a_batched_statement_and_its_batch_predicate():
    whole_table = "t.ctid >= '(0,0)'::tid"
    only_starts = "(SELECT count(*) FROM api_requests t WHERE t.parent_task_request_id IS NOT NULL)"
    script = run_script(PROJECT_ROOT, "migrate", "sql", "--offline").stdout
    names = [step.name for _, step in backfills()]
    assert len(names) == 5
    for name in names:
        assert f"-- a backfill, {name}: the runner sends this statement once per batch" in script
    # every batch predicate twice: in find, and in the count of rows looked at
    assert script.count(whole_table) == 2 * 4 and script.count(only_starts) == 1  # 008 walks its starts
    undo = run_script(PROJECT_ROOT, "migrate", "sql", "rollback", "--all", "--offline").stdout
    assert undo.count(whole_table) == 2 and "DELETE FROM api_requests_subtask_moves" in undo
