"""The SQL reader (nexus_migrate/steps/sql_tree.py) on statements in the
spellings PostgreSQL accepts: what a rollback drops, and the names that index
and constraint steps take from their SQL. No database: the parse tree is the
server's grammar, not the server."""

from __future__ import annotations

import re

import pytest

from nexus_migrate.steps import Constraint, Index, RetiredIndex, constraint, ddl, index, retired_index
from nexus_migrate.steps.data_loss import DataLossRefused, destroys
from nexus_migrate.steps.sql_tree import (Relation, Unreadable, added_constraint, created_index, dropped_index,
                                          drops, drops_constraint, statements)

from .migrations import MIGRATIONS

T, ACCOUNTS = Relation(None, "t"), Relation("billing", "accounts")


def read(sql: str) -> tuple:
    """What drops() finds, as plain tuples: tables, columns, type changes, schemas."""
    found = drops(sql)
    return (found.tables, found.columns,
            [(c.table, c.column, c.type_sql, c.modifiers, c.rewrites) for c in found.type_changes], found.schemas)


@pytest.mark.parametrize("sql, tables", [
    ("DROP TABLE t", [T]),
    ("drop table if exists t cascade", [T]),
    ("DROP TABLE IF EXISTS t RESTRICT", [T]),
    ("DROP TABLE t, billing.accounts", [T, ACCOUNTS]),
    ('DROP TABLE "t", "billing"."accounts"', [T, ACCOUNTS]),
    ('DROP TABLE "Mixed Case", UPPER', [Relation(None, "Mixed Case"), Relation(None, "upper")]),
    ("DROP TABLE claude_nexus.billing.accounts", [ACCOUNTS]),  # the database's name is only checked
    ("COMMENT ON TABLE t IS NULL;\n  DROP TABLE t;\n DROP TABLE billing.accounts;", [T, ACCOUNTS]),
    ("DROP TABLE t; DROP TABLE IF EXISTS t", [T]),  # named once
    ("-- a comment\n/* and another */ DrOp\tTaBlE\nt", [T]),
])
def test_tables_dropped_in_any_spelling(sql, tables):
    assert read(sql) == (tables, [], [], [])


@pytest.mark.parametrize("sql, columns", [
    ("ALTER TABLE t DROP c", [(T, "c")]),
    ("ALTER TABLE t DROP COLUMN c", [(T, "c")]),
    ("alter table only t drop column if exists c cascade", [(T, "c")]),
    ("ALTER TABLE IF EXISTS ONLY t DROP IF EXISTS c RESTRICT", [(T, "c")]),
    ("ALTER TABLE t DROP c, DROP COLUMN d, ADD COLUMN e int, DROP CONSTRAINT k", [(T, "c"), (T, "d")]),
    ('ALTER TABLE "billing"."accounts" DROP "Note", DROP note', [(ACCOUNTS, "Note"), (ACCOUNTS, "note")]),
    ("ALTER TABLE t ALTER c DROP DEFAULT; ALTER TABLE billing.accounts DROP c", [(ACCOUNTS, "c")]),
])
def test_columns_dropped_in_any_spelling(sql, columns):
    assert read(sql) == ([], columns, [], [])


@pytest.mark.parametrize("sql, change", [
    ("ALTER TABLE t ALTER c TYPE varchar(10)", ("varchar(10)", (10,), False)),
    ("ALTER TABLE t ALTER COLUMN c SET DATA TYPE character varying(10)", ("varchar(10)", (10,), False)),
    ("ALTER TABLE t ALTER c TYPE text", ("text", None, False)),
    ("ALTER TABLE t ALTER c TYPE numeric(10, 2)", ("numeric(10, 2)", (10, 2), False)),
    ("ALTER TABLE t ALTER c TYPE integer[] USING string_to_array(c, ',')::integer[]", ("integer[]", None, True)),
    ("ALTER TABLE t ALTER c TYPE varchar(10) COLLATE \"C\"", ("varchar(10)", (10,), False)),
])
def test_type_changes_are_read_with_their_new_type(sql, change):
    assert read(sql) == ([], [], [(T, "c", *change)], [])


@pytest.mark.parametrize("sql, schemas", [
    ("DROP SCHEMA s", ["s"]),
    ("drop schema if exists s, \"Other\" cascade", ["s", "Other"]),
])
def test_schemas_dropped(sql, schemas):
    assert read(sql) == ([], [], [], schemas)


@pytest.mark.parametrize("sql, emptied", [
    ("TRUNCATE t", [(T, False)]),
    ("truncate table only t, billing.accounts restart identity", [(T, False), (ACCOUNTS, False)]),
    ('TRUNCATE "t" CASCADE', [(T, True)]),  # and the tables that reference t
    ("DELETE FROM t", [(T, False)]),
    ("delete from only billing.accounts a where a.id > 10 returning a.id", [(ACCOUNTS, False)]),
])
def test_tables_emptied_in_any_spelling(sql, emptied):
    found = drops(sql)
    assert read(sql) == ([], [], [], []) and found.emptied == emptied and found.cascaded_types == []


@pytest.mark.parametrize("sql, types", [
    ("DROP TYPE mood CASCADE", [Relation(None, "mood")]),
    ('drop type if exists billing."Mood", other cascade', [Relation("billing", "Mood"), Relation(None, "other")]),
    ("DROP DOMAIN IF EXISTS positive CASCADE", [Relation(None, "positive")]),  # a domain's columns go too
])
def test_types_dropped_with_cascade_take_their_columns(sql, types):
    found = drops(sql)
    assert read(sql) == ([], [], [], []) and found.emptied == [] and found.cascaded_types == types


@pytest.mark.parametrize("sql", [
    "DROP VIEW v", "DROP MATERIALIZED VIEW IF EXISTS hourly_stats",  # their rows are read from tables
    "DROP TYPE IF EXISTS mood", "DROP DOMAIN positive RESTRICT",  # without CASCADE, refused while in use
    "DROP INDEX CONCURRENTLY IF EXISTS i", "ALTER TABLE t DROP CONSTRAINT IF EXISTS k",
    "DROP FUNCTION IF EXISTS f()", "DROP TRIGGER IF EXISTS x ON t", "ALTER TABLE t RENAME c TO d",
    "ALTER INDEX i RENAME TO j", "COMMENT ON COLUMN t.c IS NULL", "CREATE TABLE t (c int)",
    "SELECT 'DROP TABLE t'",  # a drop in a string is only text
    # Not read, by design (sql_tree's docstring): a DO block's body is PL/pgSQL
    # the server runs; test_conventions keeps the rollbacks' drops out of them.
    "DO $$ BEGIN DROP TABLE t; END $$",
])
def test_statements_that_drop_no_stored_data(sql):
    found = drops(sql)
    assert read(sql) == ([], [], [], []) and found.emptied == found.cascaded_types == []


# The patterns the guard read rollbacks with before the parse tree, kept here
# to show what they missed.
OLD_DROPPED_TABLE = re.compile(r"\bDROP\s+TABLE\s+IF\s+EXISTS\s+(\w+)", re.I)
OLD_DROPPED_COLUMN = re.compile(r"\bDROP\s+COLUMN\s+IF\s+EXISTS\s+(\w+)", re.I)


def test_what_the_old_patterns_missed_is_read():
    missed = {"DROP TABLE t": [T], "DROP TABLE IF EXISTS a, t": [Relation(None, "a"), T]}
    for sql, tables in missed.items():
        assert OLD_DROPPED_TABLE.findall(sql) != [str(t) for t in tables]
        assert drops(sql).tables == tables
    for sql in ("ALTER TABLE t DROP c", "ALTER TABLE t DROP COLUMN c"):
        assert OLD_DROPPED_COLUMN.findall(sql) == []
        assert drops(sql).columns == [(T, "c")]


def test_names_are_shown_as_a_person_writes_them():
    assert [str(t) for t in drops('DROP TABLE t, billing.accounts, "Mixed Case", "user"').tables] == \
        ["t", "billing.accounts", '"Mixed Case"', '"user"']
    assert Relation("billing", 'a "b"').regclass == '"billing"."a ""b"""'


def test_sql_the_parser_refuses_is_one_line_and_the_guard_refuses_it():
    with pytest.raises(Unreadable, match="^syntax error at or near \"TABEL\""):
        statements("DROP TABEL t")
    with pytest.raises(DataLossRefused, match="cannot read a rollback statement .*DROP TABEL t.*nothing was changed"):
        destroys([ddl("SELECT 1", "DROP TABEL t")])


def test_what_the_guard_counts_of_the_real_migrations():
    """008's table of kept places is put back before it is dropped, so not
    counted; the columns of a table dropped whole are not named apart."""
    def loss(migration_id):
        [migration] = [m for m in MIGRATIONS if m.id == migration_id]
        migration.load()
        return destroys(migration.module.steps)

    api_requests = Relation(None, "api_requests")
    assert loss("008-subtask-updates-and-task-indexes").tables == []
    assert loss("011-add-conversation-analyses").tables == [Relation(None, "conversation_analyses"),
                                                             Relation(None, "analysis_audit_log")]
    assert loss("011-add-conversation-analyses").columns == []
    assert loss("001-add-conversation-tracking").columns == [
        (api_requests, c) for c in ("message_count", "branch_id", "conversation_id", "parent_message_hash",
                                    "current_message_hash")]


def test_index_and_constraint_steps_read_their_names_in_any_spelling():
    assert created_index("create unique index concurrently if not exists i_x on t (a) where a > 0") == "i_x"
    assert dropped_index('drop index concurrently if exists "i_x"') == "i_x"
    assert added_constraint("alter table t add constraint k check (a <> b) not valid") == ("t", "k")
    assert added_constraint('ALTER TABLE "T" ADD CONSTRAINT k FOREIGN KEY (a) REFERENCES t (b) NOT VALID') == \
        ('"T"', "k")
    assert drops_constraint("alter table t drop constraint if exists k", "k")
    step = index("CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_sql_tree_test ON t (a)",
                 "DROP INDEX CONCURRENTLY IF EXISTS idx_sql_tree_test")
    assert isinstance(step, Index) and step.name == "idx_sql_tree_test"
    assert retired_index("DROP INDEX CONCURRENTLY IF EXISTS idx_old", replaced_by=None).name == "idx_old"
    added = constraint("ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID",
                       "ALTER TABLE t DROP CONSTRAINT IF EXISTS k")
    assert isinstance(added, Constraint) and (added.table, added.name) == ("t", "k")


@pytest.mark.parametrize("make, message", [
    (lambda: Index("CREATE INDEX IF NOT EXISTS i ON t (a)", "DROP INDEX CONCURRENTLY IF EXISTS i"),
     "index steps build and drop CONCURRENTLY and IF [NOT] EXISTS: 'CREATE INDEX IF NOT EXISTS i ON t (a)'"),
    (lambda: Index("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "DROP INDEX CONCURRENTLY i"),
     "index steps build and drop CONCURRENTLY and IF [NOT] EXISTS: 'DROP INDEX CONCURRENTLY i'"),
    (lambda: Index("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "DROP INDEX CONCURRENTLY IF EXISTS j"),
     "the rollback of index i drops j: 'DROP INDEX CONCURRENTLY IF EXISTS j'"),
    (lambda: RetiredIndex("DROP INDEX CONCURRENTLY IF EXISTS a, b", None),
     "a retired index is dropped CONCURRENTLY IF EXISTS: 'DROP INDEX CONCURRENTLY IF EXISTS a, b'"),
    (lambda: Constraint("ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0)", "ALTER TABLE t DROP CONSTRAINT IF EXISTS k"),
     "constraint steps add a constraint NOT VALID: 'ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0)'"),
    (lambda: Constraint("ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID", "ALTER TABLE t DROP CONSTRAINT k"),
     "the rollback of k drops it IF EXISTS: 'ALTER TABLE t DROP CONSTRAINT k'"),
])
def test_steps_not_written_as_the_kind_requires_are_refused_with_their_message(make, message):
    with pytest.raises(ValueError) as refused:
        make()
    assert str(refused.value) == message

