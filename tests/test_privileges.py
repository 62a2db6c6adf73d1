"""Least privilege: the migrations run as the role that owns the schema, the
proxy as a role that reads and writes rows and nothing more, with the rights
that sql/proxy-role.sql grants (the file docs/operating.md points to)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2.extras import execute_values

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.database.catalog import NOT_YOYO

from .conftest import as_role, assert_one_line_error, run_script
from .test_proxy import INSERT_CHUNKS, LATEST_CONVERSATIONS, NOW, ONE_CONVERSATION, proxy_request, proxy_response

PROXY_GRANTS = PROJECT_ROOT / "sql" / "proxy-role.sql"
PROXY_ROLE = "nexus_proxy"  # the role that file grants to

# What the proxy's role must hold on each kind of relation of the schema ...
NEEDED = {"r": ("SELECT", "INSERT", "UPDATE", "DELETE"), "m": ("SELECT",), "v": ("SELECT",), "S": ("USAGE",)}
# ... but on the audit log, which it only appends to.
APPEND_ONLY = {"analysis_audit_log": ("INSERT",)}
# ... and nothing on the migrations' own records, which only their rollbacks read.
MIGRATIONS_ONLY = {"api_requests_subtask_moves": ()}


def connect(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


@pytest.fixture
def roles(project_copy, database_url, db, make_role):
    """The test's database owned by a role that is no superuser, migrated by it
    through scripts/migrate; then sql/proxy-role.sql run by it, as docs/operating.md
    says. Yields autocommit connections (owner, proxy)."""
    owner = make_role()
    with db.cursor() as cur:
        # From PostgreSQL 15 on, schema public belongs to the database's owner
        # and no one else may create in it.
        cur.execute(f'ALTER DATABASE "{urlsplit(database_url).path[1:]}" OWNER TO "{owner}"')
    owner_url = as_role(database_url, owner)
    assert run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=owner_url).returncode == 0
    make_role(PROXY_ROLE)
    owner_conn = connect(owner_url)
    with owner_conn.cursor() as cur:
        cur.execute(PROXY_GRANTS.read_text())
    proxy_conn = connect(as_role(database_url, PROXY_ROLE))
    yield owner_conn, proxy_conn
    proxy_conn.close()
    owner_conn.close()


def test_the_proxy_role_does_the_proxys_writes_and_reads(roles):
    _, proxy = roles
    cur = proxy.cursor()
    conversation = uuid.uuid4()
    request_id = proxy_request(cur, at=NOW, conversation=conversation)
    assert cur.rowcount == 1
    proxy_request(cur, at=NOW, conversation=conversation, request_id=request_id)  # a retried insert
    assert cur.rowcount == 0
    proxy_response(cur, request_id, input_tokens=10, output_tokens=5)
    assert cur.rowcount == 1
    chunks = [(str(request_id), i, NOW + timedelta(milliseconds=i), json.dumps({"delta": i}), 1) for i in range(20)]
    execute_values(cur, INSERT_CHUNKS, chunks[:10])
    execute_values(cur, INSERT_CHUNKS, chunks)  # a retried, overlapping batch
    cur.execute("SELECT count(*) FROM streaming_chunks WHERE request_id = %s", (str(request_id),))
    assert cur.fetchone()[0] == 20

    cur.execute(ONE_CONVERSATION, ([str(conversation)],))
    assert [row[0] for row in cur.fetchall()] == [str(request_id)]
    cur.execute(LATEST_CONVERSATIONS)
    assert [row[3] for row in cur.fetchall()] == [15]  # total tokens of that conversation
    cur.execute("SELECT count(*) FROM hourly_stats")
    assert cur.fetchone()[0] == 0  # readable; filled by the owner's refresh

    cur.execute("DELETE FROM api_requests WHERE request_id = %s", (str(request_id),))
    cur.execute("SELECT count(*) FROM streaming_chunks")
    assert cur.fetchone()[0] == 0  # the cascade went with it


def refused(conn, statement: str) -> bool:
    with conn.cursor() as cur:
        try:
            cur.execute(statement)
        except psycopg2.errors.InsufficientPrivilege:
            return True
    return False


def test_the_proxy_role_cannot_change_the_schema_or_yoyos_books(roles):
    owner, proxy = roles
    allowed = [statement for statement in [
        "DROP TABLE streaming_chunks",
        "ALTER TABLE api_requests ADD COLUMN extra int",
        "ALTER TABLE api_requests ALTER COLUMN model TYPE text",
        "CREATE INDEX ON api_requests (path)",
        "CREATE TABLE proxy_own (id int)",
        "TRUNCATE streaming_chunks",
        "SELECT refresh_hourly_stats()",  # REFRESH needs the view's owner
        "DELETE FROM _yoyo_migration",
        "UPDATE analysis_audit_log SET outcome = 'SUCCESS'",  # the log is append-only to it
        "DELETE FROM analysis_audit_log",
        "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 1)",
    ] if not refused(proxy, statement)]
    assert allowed == []
    with owner.cursor() as cur:
        cur.execute("SELECT refresh_hourly_stats()")  # what the owner's scheduled job runs


def test_every_table_view_and_sequence_of_the_schema_is_granted_to_the_proxy(roles):
    """A migration that adds a relation without adding it to sql/proxy-role.sql fails here."""
    owner, _ = roles
    with owner.cursor() as cur:
        cur.execute(f"""
            SELECT relname, relkind::text FROM pg_class
             WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p', 'm', 'v', 'S')
               AND {NOT_YOYO}
             ORDER BY relname""")
        relations = [(name, "r" if kind == "p" else kind) for name, kind in cur.fetchall()]
        assert {"api_requests", "streaming_chunks", "hourly_stats", "streaming_chunks_id_seq"} <= {
            name for name, _ in relations}
        ungranted = []
        for name, kind in relations:
            check = "has_sequence_privilege" if kind == "S" else "has_table_privilege"
            if name in MIGRATIONS_ONLY:
                cur.execute(f"SELECT {check}(%s, %s, 'SELECT')", (PROXY_ROLE, name))
                assert not cur.fetchone()[0], f"the proxy has no business in {name}"
            for privilege in {**APPEND_ONLY, **MIGRATIONS_ONLY}.get(name, NEEDED[kind]):
                cur.execute(f"SELECT {check}(%s, %s, %s)", (PROXY_ROLE, name, privilege))
                if not cur.fetchone()[0]:
                    ungranted.append(f"{privilege} on {name}")
    assert ungranted == []


def test_the_proxy_role_cannot_migrate_and_is_told_who_can(project_copy, database_url, roles):
    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=as_role(database_url, PROXY_ROLE))
    assert_one_line_error(result, PROXY_ROLE, "yoyo_lock", "owns the schema")
    assert result.returncode == 2
