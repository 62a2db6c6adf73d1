"""Today's proxy on the migrated schema: its writes succeed and do what it
means, and each of its reads is planned on the index built for it, on a
table shaped like a proxy's (many domains and accounts, conversations of
dozens of requests and one of thousands, a few sub-tasks and Task calls).

The statements are the proxy's (nexus_migrate/proxy/statements.py), not the
migrations'.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta

import psycopg2
import pytest
from psycopg2.extras import Json

from nexus_migrate.commands.migrate import yoyo as yoyo_cli
from nexus_migrate.proxy.verify import valid_indexes
from nexus_migrate.proxy.statements import (ACCOUNT_USAGE, AUDIT_ANALYSIS, BRANCH_REQUESTS, CHILDREN_OF_MESSAGE,
                                            CLAIM_ANALYSIS, CONVERSATION_LIST, LATEST_REQUESTS, MARK_TASK_CALLS,
                                            REQUEST_ANALYSIS, REQUESTS_PER_MODEL, SUBTASK_SEQUENCE, TASK_CHILDREN,
                                            TASK_LOOKUP, TASK_MATCH)

from .test_proxy import NOW, proxy_request, proxy_response, sha

# A proxy's table, made by the server: 24,000 requests over ten days up to
# now, from 12 domains (each its account), in conversations of 40 requests
# (30 in the last block), 300 of them side by side, and one conversation of
# 3,000 requests. Every 50th response calls the Task tool; every 20th
# conversation (c % 20 = 7) is a sub-task started by the Task call of request
# 50 * (c % 400 + 1).
TRAFFIC = """
    INSERT INTO api_requests (request_id, timestamp, domain, account_id, method, path, headers, body, model,
                              request_type, response_status, response_body, input_tokens, output_tokens,
                              total_tokens, current_message_hash, parent_message_hash, conversation_id, branch_id,
                              message_count, is_subtask, parent_task_request_id, task_tool_invocation,
                              parent_request_id)
    SELECT md5('r' || g)::uuid, now() - interval '10 days' + g * (interval '10 days' / 21000),
           'team-' || c % 12 || '.example.com', 'acc_' || c % 12, 'POST', '/v1/messages', '{}',
           jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user',
                                                                               'content', 'question ' || g))),
           'claude-sonnet-4', 'inference', 200,
           jsonb_build_object('content', CASE WHEN g % 50 = 0
               THEN jsonb_build_array(jsonb_build_object('type', 'tool_use', 'id', 'toolu_' || g, 'name', 'Task',
                                                         'input', jsonb_build_object('prompt', 'task ' || g,
                                                                                     'description', 'step ' || g)))
               ELSE jsonb_build_array(jsonb_build_object('type', 'text', 'text', repeat('answer ', 40))) END),
           100, 20, 120, md5('m' || g) || md5('n' || g),
           CASE WHEN p > 0 THEN md5('m' || (g - 300)) || md5('n' || (g - 300)) END,
           md5('c' || c)::uuid, CASE WHEN c % 20 = 7 THEN 'subtask_' || c % 3 + 1 ELSE 'main' END, p + 1,
           c % 20 = 7, CASE WHEN c % 20 = 7 THEN md5('r' || 50 * (c % 400 + 1))::uuid END,
           CASE WHEN g % 50 = 0 THEN jsonb_build_array(jsonb_build_object(
               'id', 'toolu_' || g, 'name', 'Task', 'input', jsonb_build_object('prompt', 'task ' || g))) END,
           CASE WHEN p > 0 AND g > 300 THEN md5('r' || (g - 300))::uuid END
      FROM generate_series(1, 21000) AS g,
           LATERAL (SELECT g / 12000 * 300 + g % 300 AS c, g % 12000 / 300 AS p) AS k;
    INSERT INTO api_requests (request_id, timestamp, domain, account_id, method, path, headers, model,
                              conversation_id, branch_id, message_count)
    SELECT md5('long' || g)::uuid, now() - interval '10 days' + g * (interval '10 days' / 3000), 'team-1.example.com',
           'acc_1', 'POST', '/v1/messages', '{}', 'claude-sonnet-4', md5('long conversation')::uuid,
           CASE WHEN g % 1000 = 0 THEN 'subtask_' || g / 1000 ELSE 'main' END, g
      FROM generate_series(1, 3000) AS g;
    INSERT INTO conversation_analyses (conversation_id, status, created_at)
    SELECT md5('c' || c)::uuid, CASE WHEN c % 200 = 0 THEN 'pending' ELSE 'completed' END::conversation_analysis_status,
           now() - (1000 - c) * interval '5 minutes'
      FROM generate_series(1, 600) AS c
"""



def md5_uuid(text: str) -> str:
    """The uuid md5(text)::uuid gives, as TRAFFIC names its rows."""
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


LONG_CONVERSATION = md5_uuid("long conversation")


@pytest.fixture(scope="module")
def proxy_table(server):
    """A database migrated to the last migration and filled with TRAFFIC,
    shared by the read tests of this module, which only read it."""
    name = f"proxy_{uuid.uuid4().hex[:8]}"
    url = server.ensure_database(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        assert yoyo_cli(["apply", "--batch"]) == 0
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(TRAFFIC)
        cur.execute("VACUUM ANALYZE api_requests")  # as autovacuum would: statistics, visibility
        cur.execute("VACUUM ANALYZE conversation_analyses")
    yield conn
    conn.close()
    server.drop_database(name)


def uses(index: str, plan: str) -> bool:
    return re.search(rf"(using|Index Scan on) {index}\b", plan) is not None


def plan(conn, query: str, args: dict) -> str:
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + query, args)
        return "\n".join(row[0] for row in cur.fetchall())


READS = {
    # the dashboard: an account's tokens of the last days
    "account usage": (ACCOUNT_USAGE, lambda: {"account_id": "acc_5", "since": NOW - timedelta(days=3),
                                              "until": NOW}, "idx_requests_account_timestamp"),
    # the dashboard: the requests of the sub-tasks two Task calls started
    "children of a task": (TASK_CHILDREN, lambda: {"task_request_ids": [md5_uuid("r1400"), md5_uuid("r2400")]},
                           "idx_requests_parent_task_request_id"),
    # the proxy: the next sub-task number in a conversation of thousands of
    # requests, from 002's covering index alone (it carries branch_id)
    "sub-task sequence": (SUBTASK_SEQUENCE, lambda: {"conversation_id": LONG_CONVERSATION,
                                                     "before": NOW + timedelta(days=1)},
                          "idx_requests_conversation_detail"),
    # the proxy's linker: a domain's Task calls of the last 24 hours with a prompt (request
    # 20950, of conversation 550, is team-10's)
    "Task look-up by domain and time": (TASK_LOOKUP, lambda: {
        "domain": "team-10.example.com", "since": NOW - timedelta(hours=24), "until": NOW,
        "task_call": Json([{"type": "tool_use", "name": "Task", "input": {"prompt": "task 20950"}}])},
        "idx_api_requests_domain_newest_first"),
    # the proxy's writer: the latest Task call of the last 12 hours with a prompt
    "Task look-up by time": (TASK_MATCH, lambda: {"at": NOW, "prompt": "task 20950"},
                             "idx_requests_task_invocation_timestamp"),
    # the analysis worker: the oldest pending analysis
    "analysis claim": (CLAIM_ANALYSIS, lambda: {"max_retries": 3}, "idx_conversation_analyses_status"),
    # Reads that 012's indexes once served, served by others:
    # the dashboard: a domain's latest requests ((domain) dropped)
    "latest requests of a domain": (LATEST_REQUESTS, lambda: {"domain": "team-3.example.com", "limit": 50},
                                    "idx_api_requests_domain_newest_first"),
    # the dashboard: requests per model of the last day ((model) dropped)
    "requests per model": (REQUESTS_PER_MODEL, lambda: {"since": NOW - timedelta(days=1)},
                           "idx_api_requests_timestamp"),
    # the proxy: a parent message's children in its conversation ((conversation_id) dropped)
    "children of a message": (CHILDREN_OF_MESSAGE, lambda: {"conversation_id": md5_uuid("c5"),
                                                            "parent": md5_hex("m605") + md5_hex("n605")},
                              "idx_requests_parent_message_hash"),
    # the analysis worker: a conversation branch's requests ((conversation_id), (branch_id) dropped)
    "requests of a branch": (BRANCH_REQUESTS, lambda: {"conversation_id": md5_uuid("c5"), "branch_id": "main"},
                             "idx_requests_conversation_branch"),
}


@pytest.mark.parametrize("read", READS)
def test_each_read_is_planned_on_the_index_built_for_it(proxy_table, read):
    query, args, index = READS[read]
    found = plan(proxy_table, query, args())
    assert uses(index, found), found


def test_the_reads_find_what_the_table_holds(proxy_table):
    cur = proxy_table.cursor()
    query, args, _ = READS["children of a task"]
    cur.execute(query, args())
    assert sorted(count for _, count, *_ in cur.fetchall()) == [70, 70]  # conversations 27 and 427, 47 and 447
    query, args, _ = READS["sub-task sequence"]
    cur.execute(query, args())
    assert cur.fetchone() == (3,)
    for read in ("Task look-up by domain and time", "Task look-up by time"):
        query, args, _ = READS[read]
        cur.execute(query, args())
        assert cur.fetchone()[0] == md5_uuid("r20950")


def test_no_two_valid_indexes_of_a_table_have_the_same_structure(proxy_table):
    cur = proxy_table.cursor()
    for table in ("api_requests", "streaming_chunks", "conversation_analyses", "analysis_audit_log"):
        indexes = list(valid_indexes(cur, table).items())
        twins = [(a, b) for n, (a, x) in enumerate(indexes) for b, y in indexes[n + 1:]
                 if x.served_by(y) and y.served_by(x)]
        assert twins == [], table


# The writes: each test has a fresh, migrated database of its own.

@pytest.fixture
def migrated(yoyo, db):
    yoyo("apply")
    return db


def test_the_request_insert_the_response_and_the_task_calls_land_in_their_columns(migrated):
    cur = migrated.cursor()
    conversation = uuid.uuid4()
    first = proxy_request(cur, at=NOW, conversation=conversation, messages=["build it"])
    proxy_response(cur, first, input_tokens=900, output_tokens=100)
    calls = [{"id": "toolu_1", "name": "Task", "input": {"prompt": "write the tests", "description": "tests"}}]
    cur.execute(MARK_TASK_CALLS, {"request_id": str(first), "calls": Json(calls)})
    second = proxy_request(cur, at=NOW + timedelta(seconds=5), conversation=conversation,
                           messages=["build it", "and now?"], parent_request=first)
    proxy_request(cur, at=NOW + timedelta(seconds=5), conversation=conversation,  # the same insert, retried
                  messages=["build it", "and now?"], parent_request=first, request_id=second)
    assert cur.rowcount == 0
    sub = proxy_request(cur, at=NOW + timedelta(seconds=6), conversation=conversation, branch="subtask_1",
                        messages=["write the tests"], parent_request=first, parent_task_request=first,
                        is_subtask=True)

    cur.execute("SELECT request_id, account_id, api_key_hash, system_hash IS NOT NULL, total_tokens, "
                "task_tool_invocation, parent_request_id, parent_task_request_id, is_subtask, branch_id "
                "FROM api_requests ORDER BY timestamp")
    key = sha("key")  # 64 hex digits: 006 widened the column for them
    assert cur.fetchall() == [
        (str(first), "acc_team", key, True, 1000, calls, None, None, False, "main"),
        (str(second), "acc_team", key, True, 0, None, str(first), None, False, "main"),
        (str(sub), "acc_team", key, True, 0, None, str(first), str(first), True, "subtask_1"),
    ]


def test_a_request_cannot_be_its_own_parent(migrated):
    cur = migrated.cursor()
    request_id = uuid.uuid4()
    with pytest.raises(psycopg2.errors.CheckViolation, match="chk_parent_request_not_self"):
        proxy_request(cur, at=NOW, request_id=request_id, parent_request=request_id)


def test_deleting_a_request_unlinks_its_children_found_by_index(proxy_table):
    """A retention job deletes old requests: their children stay, no longer
    linked (ON DELETE SET NULL), and each deleted row's children are found by
    index, not by a scan of the table. (In a transaction rolled back: the
    table is the module's.)"""
    cur = proxy_table.cursor()
    task = md5_uuid("r400")  # the task of conversations 7 and 407, and the parent request of r700
    cur.execute("BEGIN")
    try:
        cur.execute("DELETE FROM api_requests WHERE request_id = %s", (task,))
        assert cur.rowcount == 1
        cur.execute("SELECT pg_stat_get_xact_numscans('idx_api_requests_parent_request_id'::regclass), "
                    "pg_stat_get_xact_numscans('idx_requests_parent_task_request_id'::regclass), "
                    "pg_stat_get_xact_numscans('api_requests'::regclass)")
        by_parent, by_task, table_scans = cur.fetchone()
        # The children found by each foreign key's index, never by a scan of the table. (How many index scans
        # the cascade makes varies with the server's version and statistics: 1 to 3 by the task index here.)
        assert by_parent > 0 and by_task > 0 and table_scans == 0
        cur.execute("SELECT count(*), count(parent_task_request_id), count(parent_request_id) FROM api_requests "
                    "WHERE conversation_id IN (%s, %s) OR request_id = %s",
                    (md5_uuid("c7"), md5_uuid("c407"), md5_uuid("r700")))
        assert cur.fetchone() == (71, 0, 68)  # the 70 sub-task rows and r700 kept; their links to r400 gone
    finally:
        cur.execute("ROLLBACK")


def test_the_analysis_queue_as_the_api_and_the_worker_use_it(migrated):
    cur = migrated.cursor()
    conversation = uuid.uuid4()
    cur.execute(REQUEST_ANALYSIS, {"conversation_id": str(conversation), "branch_id": "main",
                                   "custom_prompt": "What went wrong?"})
    (analysis,) = cur.fetchone()
    cur.execute(REQUEST_ANALYSIS, {"conversation_id": str(conversation), "branch_id": "main", "custom_prompt": None})
    assert cur.rowcount == 0  # one analysis per conversation branch
    cur.execute(AUDIT_ANALYSIS, {"event_type": "ANALYSIS_REQUEST", "outcome": "INITIATED",
                                 "conversation_id": str(conversation), "branch_id": "main",
                                 "domain": "team.example.com", "request_id": "req_abc",
                                 "user_context": Json({"ip": "10.0.0.1"}), "metadata": Json({})})
    cur.execute("SELECT status, model_used, retry_count, updated_at FROM conversation_analyses")
    [(status, model, retries, queued_at)] = cur.fetchall()
    assert (status, model, retries) == ("pending", "gemini-2.5-pro", 0)

    # Two workers claim at once: the second skips the row the first holds.
    other = psycopg2.connect(migrated.dsn)
    try:
        other_cur = other.cursor()
        other_cur.execute(CLAIM_ANALYSIS, {"max_retries": 3})
        claimed = other_cur.fetchone()
        assert claimed[:3] == (analysis, str(conversation), "main")
        assert claimed[3] > queued_at  # the trigger set updated_at
        cur.execute(CLAIM_ANALYSIS, {"max_retries": 3})
        assert cur.fetchone() is None
        other.commit()
    finally:
        other.close()
    cur.execute("SELECT status FROM conversation_analyses")
    assert cur.fetchone() == ("processing",)


def test_the_conversation_list_summarises_each_conversation(migrated):
    cur = migrated.cursor()
    task_conversation, sub_conversation = uuid.uuid4(), uuid.uuid4()
    task = proxy_request(cur, at=NOW, conversation=task_conversation, messages=["plan"])
    proxy_response(cur, task, input_tokens=10, output_tokens=5)
    later = proxy_request(cur, at=NOW + timedelta(seconds=9), conversation=task_conversation,
                          messages=["plan", "next"], parent_request=task, model="claude-opus-4")
    proxy_response(cur, later, input_tokens=20, output_tokens=5)
    subtask = [proxy_request(cur, at=NOW + timedelta(seconds=3 + n), conversation=sub_conversation,
                             branch="subtask_1", messages=["do it"] * (n + 1), parent_task_request=task,
                             is_subtask=True)
               for n in range(2)]
    cur.execute(CONVERSATION_LIST, {"limit": 10})
    columns = [d.name for d in cur.description]
    rows = [dict(zip(columns, row)) for row in cur.fetchall()]
    assert [(r["conversation_id"], r["message_count"], r["total_tokens"], r["latest_request_id"], r["is_subtask"],
             r["parent_task_request_id"], r["parent_conversation_id"], r["subtask_branch_count"]) for r in rows] == [
        (str(task_conversation), 2, 40, str(later), False, None, None, 0),
        (str(sub_conversation), 2, 0, str(subtask[1]), True, str(task), str(task_conversation), 1),
    ]
