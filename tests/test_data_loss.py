"""A rollback that would drop recorded proxy traffic refuses, changes nothing,
and says how to allow it; with the allowance, or with nothing stored, it runs.
The same under plain yoyo and scripts/migrate, for migrations made for the
test whose rollbacks drop tables and columns in the spellings people write,
narrow a column, or drop a schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from yoyo import read_migrations

from nexus_migrate import MIGRATIONS_DIR, PROJECT_ROOT
from nexus_migrate.database.catalog import applied_migrations, snapshot
from nexus_migrate.steps import ddl
from nexus_migrate.steps.data_loss import data_at_risk

from .conftest import assert_one_line_error, run_script, script_env
from .migrations import ALL
from .rows import fingerprint
from .traffic import seed


def conversation_rows(db) -> None:
    with db.cursor() as cur:
        cur.execute("UPDATE api_requests SET conversation_id = gen_random_uuid(), message_count = 3"
                    " WHERE request_id IN (SELECT request_id FROM api_requests LIMIT 10)")


def test_rolling_back_tables_with_rows_refuses_and_changes_nothing(yoyo, db, database_url):
    yoyo("apply")
    seed(db, 100)
    yoyo("rollback", "-r", ALL[1])  # 002 and 001: indexes, and columns that hold only defaults
    before = snapshot(db)
    result = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "--all", DATABASE_URL=database_url)
    line = assert_one_line_error(result, "refusing to roll back", "table api_requests (it holds rows)",
                                 "nothing was changed", "NEXUS_ALLOW_DATA_LOSS=1", "--allow-data-loss")
    assert "streaming_chunks" not in line, "an empty table is not data"
    assert result.returncode == 2
    assert snapshot(db) == before and applied_migrations(db) == ALL[:1]

    allowed = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "--all", "--allow-data-loss",
                         DATABASE_URL=database_url)
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == [] and snapshot(db)["relations"] == []


def test_rolling_back_conversation_columns_with_values_refuses(yoyo, db, database_url):
    yoyo("apply", "-r", ALL[1])
    seed(db, 100)
    conversation_rows(db)
    result = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[1], DATABASE_URL=database_url)
    line = assert_one_line_error(result, "column api_requests.conversation_id (it holds values)",
                                 "column api_requests.message_count (it holds values)")
    assert "branch_id" not in line, "'main' everywhere is only the column's default"
    assert applied_migrations(db) == ALL[:2]

    allowed = run_script(PROJECT_ROOT, "migrate", "rollback", "--batch", "-r", ALL[1],
                         DATABASE_URL=database_url, NEXUS_ALLOW_DATA_LOSS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == ALL[:1]


# Migrations made for these tests (tests/made_migrations/drops): 013 after the
# real 012 makes a table and a column that its rollback drops, in the spelling
# NEXUS_TEST_DROP_SPELLING names; 014 widens a column and makes a schema.
MADE = Path(__file__).parent / "made_migrations" / "drops"
SOURCES = (str(MIGRATIONS_DIR), str(MADE))
MADE_MIGRATIONS = list(read_migrations(str(MADE)))
DROPS, NARROWS = (m.id for m in MADE_MIGRATIONS)


def spellings() -> list[str]:
    MADE_MIGRATIONS[0].load()
    return list(MADE_MIGRATIONS[0].module.SPELLINGS)


def plain_yoyo(database_url: str, *args: str, sources=SOURCES, **env: str) -> subprocess.CompletedProcess:
    """yoyo itself, as an operator runs it from the project root, with the
    made migrations' folder named beside the real one."""
    return subprocess.run([str(Path(sys.executable).parent / "yoyo"), *args, *sources], capture_output=True,
                          text=True, env=script_env(DATABASE_URL=database_url, **env), cwd=PROJECT_ROOT,
                          timeout=300, stdin=subprocess.DEVNULL)


def scripts_migrate(database_url: str, *args: str, sources=SOURCES, **env: str) -> subprocess.CompletedProcess:
    return run_script(PROJECT_ROOT, "migrate", *args, *sources, DATABASE_URL=database_url, **env)


TOOLS = {"yoyo": plain_yoyo, "scripts/migrate": scripts_migrate}


def refusal(*at_risk: str) -> str:
    return (f"error: refusing to roll back: it would drop {', '.join(at_risk)}; nothing was changed. To drop them "
            "anyway, back up first, then set NEXUS_ALLOW_DATA_LOSS=1 (scripts/migrate rollback --allow-data-loss)")


def stored(db) -> tuple:
    """Every row of every table, and the rows of 014's schema."""
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass('guard_archive.old_notes') IS NOT NULL")
        archived = None
        if cur.fetchone()[0]:
            cur.execute("SELECT note FROM guard_archive.old_notes ORDER BY note")
            archived = cur.fetchall()
    return fingerprint(db), archived


# How the refusal names what 013 drops, in each spelling: as its rollback names it.
SHOWN = {
    "plain": ("table guard_kept (it holds rows)", "column api_requests.guard_note (it holds values)"),
    "lower case, qualified, CASCADE, ONLY": ("table public.guard_kept (it holds rows)",
                                             "column public.api_requests.guard_note (it holds values)"),
    "quoted, a statement each, among other commands": ("table guard_kept (it holds rows)",
                                                       "column api_requests.guard_note (it holds values)"),
}


def test_each_spelling_of_013_has_its_expected_refusal():
    assert set(SHOWN) == set(spellings())


@pytest.mark.one_server  # the spellings are read by the parser alone; the kinds run on every server below
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("spelling", spellings())
def test_a_table_and_a_column_with_data_are_kept_whatever_the_spelling_of_their_drop(spelling, tool, yoyo, db,
                                                                                     database_url):
    yoyo("apply")
    at_012 = snapshot(db)
    yoyo("apply", "-r", DROPS, *SOURCES)
    seed(db, 20)
    with db.cursor() as cur:
        cur.execute("INSERT INTO guard_kept VALUES (1, 'kept'), (2, NULL)")
        cur.execute("UPDATE api_requests SET guard_note = 'seen' WHERE request_id IN "
                    "(SELECT request_id FROM api_requests ORDER BY request_id LIMIT 3)")
    before, rows = snapshot(db), stored(db)
    run = TOOLS[tool]

    result = run(database_url, "rollback", "--batch", "-r", DROPS, NEXUS_TEST_DROP_SPELLING=spelling)
    assert assert_one_line_error(result) == refusal(*SHOWN[spelling])  # guard_empty holds nothing: not named
    assert snapshot(db) == before and stored(db) == rows
    assert applied_migrations(db) == ALL + [DROPS]

    allowed = run(database_url, "rollback", "--batch", "-r", DROPS, NEXUS_TEST_DROP_SPELLING=spelling,
                  NEXUS_ALLOW_DATA_LOSS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert snapshot(db) == at_012  # guard_kept, guard_empty and guard_note are gone, and nothing else
    assert applied_migrations(db) == ALL


@pytest.mark.parametrize("tool", TOOLS)
def test_a_narrowed_column_and_a_dropped_schema_that_hold_data_are_kept(tool, yoyo, db, database_url):
    yoyo("apply", *SOURCES)
    with db.cursor() as cur:
        cur.execute("INSERT INTO guard_kept VALUES (1, 'short'), (2, 'a code longer than eight')")
        cur.execute("INSERT INTO guard_archive.old_notes VALUES ('an old note')")
    before, rows = snapshot(db), stored(db)
    run = TOOLS[tool]

    result = run(database_url, "rollback", "--batch", "-r", NARROWS)
    assert assert_one_line_error(result) == refusal(
        "column guard_kept.code (its type changes and it holds values)",
        "schema guard_archive (its table guard_archive.old_notes holds rows)")
    assert snapshot(db) == before and stored(db) == rows
    assert applied_migrations(db) == ALL + [DROPS, NARROWS]

    with db.cursor() as cur:
        cur.execute("DELETE FROM guard_kept WHERE id = 2")  # else the narrowing itself fails, as the guard warned
    allowed = run(database_url, "rollback", "--batch", "-r", NARROWS, NEXUS_ALLOW_DATA_LOSS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == ALL + [DROPS]
    with db.cursor() as cur:
        cur.execute("SELECT to_regnamespace('guard_archive'), format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'guard_kept'::regclass AND attname = 'code'")
        assert cur.fetchone() == (None, "character varying(8)")
        cur.execute("SELECT id, code FROM guard_kept")
        assert cur.fetchall() == [(1, "short")]


def test_a_narrowed_column_without_values_and_an_empty_schema_roll_back_freely(yoyo, db, database_url):
    """guard_kept has a row, but its code is NULL: nothing for the narrowing to
    lose; the schema's table is empty."""
    yoyo("apply", *SOURCES)
    with db.cursor() as cur:
        cur.execute("INSERT INTO guard_kept VALUES (1, NULL)")
    result = scripts_migrate(database_url, "rollback", "--batch", "-r", NARROWS)
    assert result.returncode == 0, result.stderr
    assert applied_migrations(db) == ALL + [DROPS]


@pytest.mark.parametrize("new_type, at_risk", [
    ("varchar(64)", False), ("varchar", False), ("varchar(8)", False),  # as long or longer: every value fits
    ("varchar(4)", True), ("text", True), ("integer USING length(code)", True),  # another type, a shorter one
    ("varchar(8) USING upper(code)", True),  # the same type, values computed anew
    ("character(8)", True),
])
def test_a_type_change_puts_values_at_risk_unless_it_keeps_the_type_and_room(new_type, at_risk, db):
    with db.cursor() as cur:
        cur.execute("CREATE TABLE guard_kept (id integer PRIMARY KEY, code varchar(8) DEFAULT 'none');"
                    "INSERT INTO guard_kept VALUES (1, 'none')")
        step = ddl("SELECT 1", f"ALTER TABLE guard_kept ALTER code TYPE {new_type}")
        assert data_at_risk(db, [step]) == [], "a column holding only its default holds no information"
        cur.execute("INSERT INTO guard_kept VALUES (2, 'abc')")
        assert data_at_risk(db, [step]) == (["column guard_kept.code (its type changes and it holds values)"]
                                            if at_risk else [])


def test_truncate_with_cascade_puts_the_rows_of_the_tables_that_reference_it_at_risk(db):
    """guard_parent is empty, but TRUNCATE ... CASCADE empties guard_child
    (and guard_grandchild, which references it) whole, rows that reference
    no parent included."""
    with db.cursor() as cur:
        cur.execute("CREATE TABLE guard_parent (id integer PRIMARY KEY);"
                    "CREATE TABLE guard_child (id integer PRIMARY KEY, parent_id integer REFERENCES guard_parent);"
                    "CREATE TABLE guard_grandchild (child_id integer REFERENCES guard_child);"
                    "INSERT INTO guard_child VALUES (1, NULL); INSERT INTO guard_grandchild VALUES (1)")
    assert data_at_risk(db, [ddl("SELECT 1", "TRUNCATE guard_parent")]) == []
    assert data_at_risk(db, [ddl("SELECT 1", "TRUNCATE guard_parent CASCADE")]) == [
        "the rows of table guard_child", "the rows of table guard_grandchild"]


# A migration made for these tests (tests/made_migrations/empties): its
# rollback empties a table with TRUNCATE and drops an enum type with CASCADE,
# which drops api_requests.guard_mood with it.
EMPTIES_SOURCES = (str(MIGRATIONS_DIR), str(Path(__file__).parent / "made_migrations" / "empties"))
EMPTIES = "013-empty-a-table-and-drop-a-type"


@pytest.mark.parametrize("tool", TOOLS)
def test_a_rollback_that_empties_a_table_or_drops_a_type_with_cascade_keeps_their_data(tool, yoyo, db, database_url):
    yoyo("apply", *EMPTIES_SOURCES)
    seed(db, 10)
    with db.cursor() as cur:
        cur.execute("UPDATE api_requests SET guard_mood = 'busy'"
                    " WHERE request_id IN (SELECT request_id FROM api_requests ORDER BY request_id LIMIT 3)")
        cur.execute("INSERT INTO guard_log VALUES ('a line'), ('another')")
    before, rows = snapshot(db), fingerprint(db)
    run = TOOLS[tool]

    result = run(database_url, "rollback", "--batch", "-r", EMPTIES, sources=EMPTIES_SOURCES)
    assert assert_one_line_error(result) == refusal(
        "the rows of table guard_log",
        "column api_requests.guard_mood (its type guard_mood is dropped with CASCADE and it holds values)")
    assert snapshot(db) == before and fingerprint(db) == rows
    assert applied_migrations(db) == ALL + [EMPTIES]

    allowed = run(database_url, "rollback", "--batch", "-r", EMPTIES, sources=EMPTIES_SOURCES,
                  NEXUS_ALLOW_DATA_LOSS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert applied_migrations(db) == ALL
    with db.cursor() as cur:
        cur.execute("SELECT to_regtype('guard_mood'), (SELECT count(*) FROM guard_log), "
                    "(SELECT count(*) FROM pg_attribute WHERE attrelid = 'api_requests'::regclass "
                    "AND attname = 'guard_mood' AND NOT attisdropped)")
        assert cur.fetchone() == (None, 0, 0)


def test_a_rollback_that_empties_an_empty_table_and_drops_an_unused_type_runs_freely(yoyo, db, database_url):
    yoyo("apply", *EMPTIES_SOURCES)
    seed(db, 10)  # rows, but no guard_mood in any of them, and guard_log empty
    result = scripts_migrate(database_url, "rollback", "--batch", "-r", EMPTIES, sources=EMPTIES_SOURCES)
    assert result.returncode == 0, result.stderr
    assert applied_migrations(db) == ALL
