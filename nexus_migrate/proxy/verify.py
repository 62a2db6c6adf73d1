"""A live database against what the migrations promise (schema.py).

verify() reads the catalogs and names every difference in plain words; the
index and constraint steps ask the same catalogs whether what a migration
promises is already there, under any name.

Databases built before this project (see docs/operating.md, "Coming from the original
scripts") differ in ways that change nothing for the proxy. compare() reports
those as notes, not problems; the rule for each is in TOLERATED, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..database.catalog import applied_migrations, snapshot
from .schema import PROMISES, Column, Index, Trigger, promised, promised_constraint, promised_index


# Index structure, which snapshot() renders only as a whole definition: every
# index of a table, or the one index of a name.
_INDEXES = """
    SELECT c.relname, t.relname, i.indisvalid, i.indisunique, i.indnkeyatts,
           array(SELECT pg_get_indexdef(i.indexrelid, k, true)
                        || CASE WHEN i.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
                   FROM generate_series(1, i.indnatts) AS k),
           pg_get_expr(i.indpred, i.indrelid, true), am.amname
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_class t ON t.oid = i.indrelid
      JOIN pg_am am ON am.oid = c.relam
     WHERE i.indrelid = to_regclass(%(table)s) OR i.indexrelid = to_regclass(%(index)s)"""


def _indexes(cur, table: str | None = None, index: str | None = None) -> dict[str, tuple[Index, bool]]:
    """name -> (structure, valid) for the indexes of table, or the one named index."""
    cur.execute(_INDEXES, {"table": table, "index": index})
    return {name: (Index(on, tuple(columns[:nkeys]), tuple(columns[nkeys:]), where, unique, method), valid)
            for name, on, valid, unique, nkeys, columns, where, method in cur.fetchall()}


def valid_indexes(cur, table: str) -> dict[str, Index]:
    """name -> structure of every valid index of table."""
    return {name: index for name, (index, valid) in _indexes(cur, table=table).items() if valid}


def index_state(cur, name: str) -> str | None:
    """'valid', 'invalid' (a concurrent build that failed or was interrupted) or None."""
    found = _indexes(cur, index=name).get(name)
    return None if found is None else "valid" if found[1] else "invalid"


def index_definition(cur, name: str) -> str:
    cur.execute("SELECT pg_get_indexdef(to_regclass(%s))", (name,))
    return cur.fetchone()[0]


def equivalent_index(cur, name: str) -> str | None:
    """The valid index that serves what the promised index name serves: name
    itself when it does, else one of any other name; None when there is none."""
    want = promised_index(name)
    serving = [other for other, (index, valid) in _indexes(cur, table=want.table).items()
               if valid and want.served_by(index)]
    return name if name in serving else min(serving, default=None)


_CONSTRAINTS = """
    SELECT conname, regexp_replace(pg_get_constraintdef(oid), ' NOT VALID$', ''), convalidated
      FROM pg_constraint WHERE conrelid = to_regclass(%s)"""


def _constraints(cur, table: str) -> dict[str, tuple[str, bool]]:
    """name -> (definition without NOT VALID, validated) for the constraints of table."""
    cur.execute(_CONSTRAINTS, (table,))
    return {name: (definition, valid) for name, definition, valid in cur.fetchall()}


def equivalent_constraint(cur, name: str) -> tuple[str, bool] | None:
    """(name, validated) of a constraint with the promised definition of name,
    that one itself if it has it; None when there is none."""
    table, definition = promised_constraint(name)
    same = {other: valid for other, (d, valid) in _constraints(cur, table).items() if d == definition}
    if not same:
        return None
    other = name if name in same else min(same)
    return other, same[other]


def constraint_definition(cur, table: str, name: str) -> str | None:
    found = _constraints(cur, table).get(name)
    return found[0] if found else None


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # what the proxy could trip over
    notes: list[str] = field(default_factory=list)  # tolerated differences, and advice


def verify(conn, migration_ids=None) -> list[str]:
    """Differences between the database and what the migrations promise, one
    plain sentence each; empty when there is none. By default the promises are
    those of the migrations yoyo recorded as applied."""
    return compare(conn, migration_ids).problems


def compare(conn, migration_ids=None) -> Report:
    """verify()'s problems, plus notes on the differences it tolerates."""
    if migration_ids is None:
        migration_ids = applied_migrations(conn)
    report = Report([f"migration {mid} is applied but this check knows nothing of it"
                     for mid in migration_ids if mid not in PROMISES])
    want = promised(mid for mid in migration_ids if mid in PROMISES)
    have = snapshot(conn)
    relations = {name for name, *_ in have["relations"]}
    columns = {(t, c): Column(type_, not_null, default) for t, c, type_, not_null, default, _ in have["columns"]}
    comments = {t: comment for t, _, comment in have["relations"]}
    comments.update({f"{t}.{c}": comment for t, c, *_, comment in have["columns"]})
    constraints = {(t, definition.removesuffix(" NOT VALID")) for t, _, definition in have["constraints"]}
    functions = {signature for signature, *_ in have["functions"]}

    for table, promised_columns in {**want.columns, **want.views}.items():
        if table not in relations:
            report.problems.append(f"{table} is missing")
            continue
        for name, column in promised_columns.items():
            _compare_column(report, f"{table}.{name}", columns.get((table, name)), column)
    # (What belongs to a missing table is not named again.)
    report.problems += [f"table {table} lacks the constraint {d}"
                        for table, defs in want.constraints.items() for d in defs.values()
                        if table in relations and (table, d) not in constraints]
    report.problems += [f"constraint {name} of {table} is NOT VALID: rows written before it were never checked; "
                        f"ALTER TABLE {table} VALIDATE CONSTRAINT {name} checks them without blocking writes"
                        for table, name, definition in have["constraints"]
                        if table in want.constraints and definition.endswith(" NOT VALID")
                        and definition.removesuffix(" NOT VALID") in want.constraints[table].values()]
    with conn.cursor() as cur:
        for name, index in want.indexes.items():
            if index.table in relations:
                _compare_index(report, cur, name, index)
        for table in sorted(relations & ({*want.columns, *want.views})):
            report.notes += _advice(cur, table, set(want.indexes))
    report.problems += [f"function {signature} is missing" for signature in want.functions if signature not in functions]
    with conn.cursor() as cur:
        for name, trigger in want.triggers.items():
            if trigger.table in relations:
                _compare_trigger(report, cur, name, trigger)
        for name, labels in want.enums.items():
            _compare_enum(report, cur, name, labels)
    report.problems += [f"{target} has no comment" for target in want.comments
                        if target.split(".")[0] in relations and not (comments.get(target) or "").strip()]
    return report


# The differences a live column may have from its promise without the proxy
# noticing, each with the reason it is harmless. Everything else is a problem.
TOLERATED = {
    "wider": "tolerated: it holds every value the promised type holds",
    "nullable": "tolerated: the proxy always writes it, though PostgreSQL will not refuse a NULL from another writer",
    "default": "tolerated: a default only fills in a value that an INSERT leaves out; it changes none the proxy writes",
}

VARCHAR = re.compile(r"character varying(?:\((\d+)\))?")


def _wider(got: str, want: str) -> bool:
    """got is text, or a varchar with no lower limit than the varchar want."""
    promised_varchar, actual_varchar = VARCHAR.fullmatch(want), VARCHAR.fullmatch(got)
    if not promised_varchar or not promised_varchar.group(1):
        return False
    if got == "text":
        return True
    return bool(actual_varchar) and (actual_varchar.group(1) is None
                                     or int(actual_varchar.group(1)) >= int(promised_varchar.group(1)))


def _compare_column(report: Report, name: str, got: Column | None, want: Column) -> None:
    if got is None:
        report.problems.append(f"column {name} is missing")
        return
    if got.type != want.type:
        text = f"column {name} is {got.type}, expected {want.type}"
        if _wider(got.type, want.type):
            report.notes.append(f"{text}: {TOLERATED['wider']}")
        else:
            report.problems.append(text)
    if got.not_null != want.not_null:
        text = f"column {name} is {_nullability(got)}, expected {_nullability(want)}"
        if want.not_null:
            report.notes.append(f"{text}: {TOLERATED['nullable']}")
        else:
            report.problems.append(text)
    if got.default != want.default:
        text = f"column {name} defaults to {got.default or 'nothing'}, expected {want.default or 'nothing'}"
        if want.default is None:
            report.notes.append(f"{text}: {TOLERATED['default']}")
        else:
            report.problems.append(text)


# tgtype bits (pg_trigger.h): FOR EACH ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
_TRIGGER = """
    SELECT p.oid::regprocedure::text,
           CASE WHEN t.tgtype & 2 = 2 THEN 'BEFORE' WHEN t.tgtype & 64 = 64 THEN 'INSTEAD OF' ELSE 'AFTER' END
           || ' ' || array_to_string(array_remove(ARRAY[
                  CASE WHEN t.tgtype & 4 = 4 THEN 'INSERT' END, CASE WHEN t.tgtype & 16 = 16 THEN 'UPDATE' END,
                  CASE WHEN t.tgtype & 8 = 8 THEN 'DELETE' END, CASE WHEN t.tgtype & 32 = 32 THEN 'TRUNCATE' END],
                  NULL), ' OR ')
           || CASE WHEN t.tgtype & 1 = 1 THEN ' FOR EACH ROW' ELSE ' FOR EACH STATEMENT' END
      FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
     WHERE t.tgrelid = to_regclass(%s) AND t.tgname = %s AND NOT t.tgisinternal"""


def _compare_trigger(report: Report, cur, name: str, want: Trigger) -> None:
    cur.execute(_TRIGGER, (want.table, name))
    row = cur.fetchone()
    if row is None:
        report.problems.append(f"trigger {name} on {want.table} is missing")
    elif row != (want.function, want.timing):
        report.problems.append(f"trigger {name} on {want.table} runs {row[0]} {row[1]}, "
                               f"expected {want.function} {want.timing}")


def _compare_enum(report: Report, cur, name: str, want: tuple[str, ...]) -> None:
    cur.execute("SELECT array(SELECT enumlabel FROM pg_enum WHERE enumtypid = t.oid ORDER BY enumsortorder) "
                "FROM pg_type t WHERE t.typname = %s AND t.typnamespace = current_schema()::regnamespace "
                "AND t.typtype = 'e'", (name,))
    row = cur.fetchone()
    if row is None:
        report.problems.append(f"type {name} is missing")
    elif tuple(row[0]) != want:
        report.problems.append(f"type {name} has the values {', '.join(row[0])}, expected {', '.join(want)}")


def _nullability(column: Column) -> str:
    return "NOT NULL" if column.not_null else "nullable"


def _compare_index(report: Report, cur, name: str, want: Index) -> None:
    same = equivalent_index(cur, name)
    if same == name:
        return
    if same:
        report.notes.append(f"index {name} is present as {same}, which has the same columns")
        return
    found = _indexes(cur, index=name).get(name)
    if found is None:
        report.problems.append(f"index {name} is missing")
        return
    got, valid = found
    if not valid:
        report.problems.append(f"index {name} is INVALID (a failed concurrent build?): "
                               f"rebuild it with REINDEX INDEX CONCURRENTLY {name}")
        return
    report.problems.append(f"index {name} is {_describe(got)}, expected {_describe(want)}")


_CONSTRAINT_INDEXES = """
    SELECT conindid::regclass::text FROM pg_constraint
     WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u', 'x')"""


_WINDOW_ORDER = ("the conversation list's window functions number every row of every conversation; the "
                 "planner sorts them rather than read them in this index's order (docs/design.md)")
_ONLY_APPENDED = "nothing reads analysis_audit_log: the proxy only appends to it"
_ALONE = "no query looks rows up by this column alone (see 012)"

# Indexes that upstream's scripts or the proxy's init SQL built, under
# whatever name, which no query of the proxy's or the dashboard's uses, each
# with the reason. verify notes them on an adopted database; dropping them is
# the operator's call.
UNUSED: list[tuple[Index, str]] = [
    (Index("api_requests", ("is_subtask",)), "a true/false column: no query looks rows up by it alone"),
    # those of 000 and 001 that 012 drops, under other names
    (Index("api_requests", ("domain",)),
     "idx_api_requests_domain_newest_first begins with domain and serves every look-up by it (see 012)"),
    (Index("api_requests", ("conversation_id",)),
     "idx_requests_conversation_branch begins with conversation_id and serves every look-up by it (see 012)"),
    (Index("api_requests", ("model",)), _ALONE),
    (Index("api_requests", ("request_type",)), _ALONE),
    (Index("api_requests", ("branch_id",)), _ALONE),
    (Index("api_requests", ("message_count",)), _ALONE),
    (Index("api_requests", ("task_tool_invocation",), where="task_tool_invocation IS NOT NULL", method="gin"),
     "the proxy searches task_tool_invocation with jsonb_path_exists(), a function no index serves"),
    (Index("api_requests", ("response_body",), where="response_body IS NOT NULL", method="gin"),
     "the Task look-up tests response_body->'content' @> ..., which an index over response_body cannot serve"),
    (Index("api_requests", ("response_body",), method="gin"),
     "the Task look-up tests response_body->'content' @> ..., which an index over response_body cannot serve"),
    (Index("api_requests", ("(response_body::text)",),
           where="response_body IS NOT NULL AND response_body::text ~~ '%\"name\":\"Task\"%'::text"),
     "its predicate looks for '\"name\":\"Task\"', which the text of a jsonb value never holds (it has a space "
     "after the colon): it is empty"),
    (Index("api_requests", ("system_hash",)),
     "the proxy looks system_hash up only beside a message hash, whose index finds the row by itself"),
    (Index("api_requests", ("conversation_id", "\"timestamp\"", "request_id"), where="conversation_id IS NOT NULL"),
     _WINDOW_ORDER),
    (Index("api_requests", ("conversation_id", "is_subtask", "\"timestamp\"", "request_id"),
           where="conversation_id IS NOT NULL"), _WINDOW_ORDER),
    (Index("api_requests", ("conversation_id", "\"timestamp\"")),
     "idx_requests_conversation_detail has the same keys and serves every look-up by conversation"),
    (Index("api_requests", ("conversation_id", "\"timestamp\""), where="branch_id::text ~~ 'subtask_%'::text"),
     "idx_requests_conversation_detail answers the sub-task numbering with an index-only scan (it carries "
     "branch_id); this one would visit the table for each row"),
    (Index("api_requests", ("account_id",)),
     "idx_requests_account_timestamp begins with account_id and serves every look-up by account"),
    (Index("api_requests", ("domain", "\"timestamp\""), where="response_body IS NOT NULL"),
     "idx_api_requests_domain_newest_first has the same keys over every row and serves the Task look-up"),
    (Index("streaming_chunks", ("request_id",)),
     "the UNIQUE (request_id, chunk_index) constraint's index begins with request_id and serves every look-up "
     "by request"),
    (Index("conversation_analyses", ("(custom_prompt IS NOT NULL)",), where="custom_prompt IS NOT NULL"),
     "every key in it is true: it can only count rows, which no query asks"),
    (Index("analysis_audit_log", ("conversation_id", "branch_id")), _ONLY_APPENDED),
    (Index("analysis_audit_log", ("domain",)), _ONLY_APPENDED),
    (Index("analysis_audit_log", ("\"timestamp\"",)), _ONLY_APPENDED),
    (Index("analysis_audit_log", ("event_type",)), _ONLY_APPENDED),
]


def _same_structure(a: Index, b: Index) -> bool:
    return a.served_by(b) and b.served_by(a)


def _advice(cur, table: str, promised_names: set[str]) -> list[str]:
    """Notes on the indexes of table that repeat another one of it, or that
    no query uses (UNUSED): their size, why, and the statement that drops one
    without blocking writes. A promised index or one behind a constraint is
    never named. Of two identical indexes, only the later one is, so that
    dropping what is named never takes a twin with it."""
    indexes = valid_indexes(cur, table)
    cur.execute(_CONSTRAINT_INDEXES, (table,))
    keep = promised_names | {row[0] for row in cur.fetchall()}
    notes = []
    for name in sorted(set(indexes) - keep):
        cur.execute("SELECT pg_size_pretty(pg_relation_size(to_regclass(%s)))", (name,))
        size = cur.fetchone()[0]
        drop = f"DROP INDEX CONCURRENTLY {name}"
        repeated = [other for other in sorted(indexes, key=lambda other: (other not in keep, other))  # a kept one first
                    if other != name and indexes[name].served_by(indexes[other])
                    and (other in keep or not indexes[other].served_by(indexes[name]) or other < name)]
        unused = [why for structure, why in UNUSED if _same_structure(structure, indexes[name])]
        if repeated:
            notes.append(f"index {name} ({size}) repeats {repeated[0]} (same key columns): every write to {table} "
                         f"updates both; {drop} would save that work")
        elif unused:
            notes.append(f"index {name} ({size}) serves no query: {unused[0]}; {drop} would save its upkeep "
                         f"on every write to {table}")
    return notes


def _describe(index: Index) -> str:
    text = f"{'UNIQUE ' if index.unique else ''}ON {index.table} ({', '.join(index.keys)})"
    if index.include:
        text += f" INCLUDE ({', '.join(index.include)})"
    if index.where:
        text += f" WHERE {index.where}"
    return text
