"""The migrated schema does what the proxy and the dashboard ask of it.

The statements are the proxy's (nexus_migrate/proxy/statements.py: inserts, response
updates, chunk batches, dashboard reads), not the migrations': they are the
other side of the contract.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from psycopg2.extras import Json, execute_values

from nexus_migrate.proxy.statements import (INSERT_CHUNKS, INSERT_REQUEST, LATEST_CONVERSATIONS, ONE_CONVERSATION,
                                            UPDATE_RESPONSE)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def proxy_request(cur, *, at, domain="team.example.com", model="claude-sonnet-4", conversation=None,
                  branch="main", messages=("hello",), request_type="inference", request_id=None,
                  account="acc_team", parent_request=None, parent_task_request=None, is_subtask=False):
    """What the proxy writes when a request comes in; returns the request id."""
    request_id = request_id or uuid.uuid4()
    cur.execute(INSERT_REQUEST, {
        "request_id": str(request_id), "timestamp": at, "domain": domain, "account_id": account, "model": model,
        "headers": Json({"content-type": "application/json", "x-api-key": "[redacted]"}),
        "body": Json({"model": model, "system": "You are Claude Code.",
                      "messages": [{"role": "user", "content": m} for m in messages]}),
        "api_key_hash": sha("key"), "request_type": request_type,
        "current": sha(messages[-1]), "parent": sha(messages[-2]) if len(messages) > 1 else None,
        "conversation_id": str(conversation) if conversation else None,
        "branch_id": branch, "system_hash": sha("You are Claude Code."), "message_count": len(messages),
        "parent_task_request_id": str(parent_task_request) if parent_task_request else None,
        "is_subtask": is_subtask, "task_tool_invocation": None,
        "parent_request_id": str(parent_request) if parent_request else None,
    })
    return request_id


def proxy_response(cur, request_id, *, input_tokens=100, output_tokens=50, duration_ms=800, tools=0,
                   cache_creation=0, cache_read=0, status=200, error=None, streaming=False):
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "cache_creation_input_tokens": cache_creation, "cache_read_input_tokens": cache_read}
    cur.execute(UPDATE_RESPONSE, {
        "request_id": str(request_id), "status": status, "headers": Json({"request-id": "req_1"}),
        "body": Json({"content": [{"type": "text", "text": "hi"}], "usage": usage}),
        "streaming": streaming, "input": input_tokens, "output": output_tokens, "first_token_ms": 120,
        "duration_ms": duration_ms, "error": error, "tools": tools,
        "cache_creation": cache_creation, "cache_read": cache_read, "usage": Json(usage),
    })


@pytest.fixture
def migrated(yoyo, db):
    yoyo("apply")
    return db


NOW = datetime.now(timezone.utc)


def test_request_insert_is_idempotent_and_the_response_completes_it(migrated):
    cur = migrated.cursor()
    request_id = proxy_request(cur, at=NOW)
    proxy_request(cur, at=NOW + timedelta(seconds=1), request_id=request_id)  # a retried insert
    assert cur.rowcount == 0
    proxy_response(cur, request_id, input_tokens=1200, output_tokens=340, tools=2)

    cur.execute("SELECT count(*), max(total_tokens), max(tool_call_count), max(response_status), "
                "max(usage_data->>'output_tokens') FROM api_requests")
    assert cur.fetchone() == (1, 1540, 2, 200, "340")


def test_chunk_batches_are_idempotent_ordered_and_go_with_their_request(migrated):
    cur = migrated.cursor()
    request_id = proxy_request(cur, at=NOW)
    chunks = [(str(request_id), i, NOW + timedelta(milliseconds=i), json.dumps({"delta": i}), 1)
              for i in range(100)]
    random.Random(7).shuffle(chunks)
    execute_values(cur, INSERT_CHUNKS, chunks[:60])
    execute_values(cur, INSERT_CHUNKS, chunks)  # a retried batch overlapping the first
    cur.execute("SELECT chunk_index FROM streaming_chunks WHERE request_id = %s ORDER BY chunk_index",
                (str(request_id),))
    assert [row[0] for row in cur.fetchall()] == list(range(100))

    cur.execute("DELETE FROM api_requests WHERE request_id = %s", (str(request_id),))
    cur.execute("SELECT count(*) FROM streaming_chunks")
    assert cur.fetchone()[0] == 0


def test_conversation_lookups_and_dashboard_reads(migrated):
    cur = migrated.cursor()
    conversation = uuid.uuid4()
    history = ["hello", "tell me more", "and then?"]
    for n in range(1, len(history) + 1):
        rid = proxy_request(cur, at=NOW + timedelta(seconds=n), conversation=conversation,
                            messages=history[:n])
        proxy_response(cur, rid)
    branch = proxy_request(cur, at=NOW + timedelta(seconds=9), conversation=conversation,
                           branch="branch_1", messages=["hello", "something else"])
    proxy_response(cur, branch, status=500, error="overloaded")
    proxy_request(cur, at=NOW, domain="other.example.com", model=None)

    # the proxy links a new request to its conversation through the parent's hash
    cur.execute("SELECT conversation_id, branch_id FROM api_requests WHERE current_message_hash = %s",
                (sha("tell me more"),))
    assert cur.fetchall() == [(str(conversation), "main")]
    cur.execute("SELECT count(*) FROM api_requests WHERE conversation_id = %s AND parent_message_hash = %s",
                (str(conversation), sha("hello")))
    assert cur.fetchone()[0] == 2

    cur.execute(ONE_CONVERSATION, ([str(conversation)],))
    rows = cur.fetchall()
    assert [r[5] for r in rows] == ["main", "main", "main", "branch_1"]
    cur.execute(LATEST_CONVERSATIONS)
    assert cur.fetchall() == [(str(conversation), ["branch_1", "main"], 4, 600, NOW + timedelta(seconds=9))]

    cur.execute("SELECT count(*), count(*) FILTER (WHERE error IS NOT NULL) FROM api_requests WHERE domain = %s",
                ("team.example.com",))
    assert cur.fetchone() == (4, 1)
    cur.execute("SELECT model, count(*) FROM api_requests GROUP BY model ORDER BY model NULLS LAST")
    assert cur.fetchall() == [("claude-sonnet-4", 4), (None, 1)]
    cur.execute("SELECT request_id FROM api_requests WHERE domain = %s ORDER BY timestamp DESC LIMIT 1",
                ("team.example.com",))
    assert cur.fetchall() == [(str(branch),)]


@pytest.mark.parametrize("query", [ONE_CONVERSATION, LATEST_CONVERSATIONS], ids=["one", "latest"])
def test_conversation_views_are_answered_from_the_covering_index_alone(migrated, query):
    cur = migrated.cursor()
    for n in range(300):
        proxy_request(cur, at=NOW + timedelta(seconds=n), conversation=uuid.UUID(int=n % 40 + 1))
    # Index-only scans pay off once VACUUM has marked the heap pages all-visible,
    # as autovacuum does on a live table. On a table this small the planner would
    # still read it whole; forbid that to see which index answers the query.
    cur.execute("VACUUM (ANALYZE) api_requests")
    cur.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    cur.execute("EXPLAIN " + query, ([str(uuid.UUID(int=1))],) if "%s" in query else None)
    plan = "\n".join(row[0] for row in cur.fetchall())
    assert "Index Only Scan using idx_requests_conversation_detail" in plan, plan


def expected_hourly_stats(rows):
    """The hourly_stats rows that the traffic should give, computed in Python."""
    groups = defaultdict(list)
    for row in rows:
        if row["at"] > NOW - timedelta(days=7):
            hour = row["at"].replace(minute=0, second=0, microsecond=0)
            groups[(hour, row["domain"], row["model"])].append(row)
    return {
        key: (len(g), sum(r["input"] for r in g), sum(r["output"] for r in g),
              sum(r["cache_creation"] for r in g), sum(r["cache_read"] for r in g),
              sum(r["duration_ms"] for r in g) / len(g), sum(r["tools"] for r in g))
        for key, g in groups.items()
    }


def sample_traffic(cur, rng, count):
    rows = []
    for _ in range(count):
        row = {"at": NOW - timedelta(minutes=rng.randrange(0, 60 * 24 * 9)),  # some older than 7 days
               "domain": rng.choice(["a.example.com", "b.example.com"]),
               "model": rng.choice(["claude-sonnet-4", "claude-opus-4", None]),
               "input": rng.randrange(1, 5000), "output": rng.randrange(1, 2000),
               "cache_creation": rng.randrange(0, 100), "cache_read": rng.randrange(0, 100),
               "duration_ms": rng.randrange(50, 30000), "tools": rng.randrange(0, 4)}
        rid = proxy_request(cur, at=row["at"], domain=row["domain"], model=row["model"])
        proxy_response(cur, rid, input_tokens=row["input"], output_tokens=row["output"],
                       duration_ms=row["duration_ms"], tools=row["tools"],
                       cache_creation=row["cache_creation"], cache_read=row["cache_read"])
        rows.append(row)
    return rows


def read_hourly_stats(cur):
    cur.execute("SELECT hour, domain, model, request_count, total_input_tokens, total_output_tokens, "
                "total_cache_creation_tokens, total_cache_read_tokens, avg_response_time, total_tool_calls "
                "FROM hourly_stats")
    return {tuple(r[:3]): tuple(r[3:]) for r in cur.fetchall()}


def assert_stats_equal(got, want):
    assert got.keys() == want.keys()
    for key, (count, inp, out, cc, cr, avg, tools) in want.items():
        g = got[key]
        assert g[:5] + g[6:] == (count, inp, out, cc, cr, tools), key
        assert abs(g[5] - Decimal(str(avg))) < Decimal("0.0001"), key


def test_refresh_hourly_stats_works_empty_and_holds_the_right_aggregates(migrated):
    cur = migrated.cursor()
    cur.execute("SELECT refresh_hourly_stats()")  # on an empty table: the original always failed here
    assert read_hourly_stats(cur) == {}

    rng = random.Random(2026)
    rows = sample_traffic(cur, rng, 300)
    cur.execute("SELECT refresh_hourly_stats()")
    assert_stats_equal(read_hourly_stats(cur), expected_hourly_stats(rows))

    rows += sample_traffic(cur, rng, 100)  # a second refresh merges new traffic into every group
    cur.execute("SELECT refresh_hourly_stats()")
    assert_stats_equal(read_hourly_stats(cur), expected_hourly_stats(rows))
