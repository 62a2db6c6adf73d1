"""The dashboard's two conversation views, timed as the dashboard waits for
them and as the server runs them, with their plans."""

from __future__ import annotations

import statistics
import time

from ..proxy.statements import LATEST_CONVERSATIONS, ONE_CONVERSATION
from .scratch import connect
from .seed import CONVERSATIONS_IN_FLIGHT, SEED_BLOCK, conversation_of


def plan_nodes(plan: dict) -> list[str]:
    node = plan["Node Type"] + (f" using {plan['Index Name']}" if "Index Name" in plan else "")
    if "Heap Fetches" in plan:
        node += f" (heap fetches {plan['Heap Fetches']})"
    return [node] + [n for child in plan.get("Plans", []) for n in plan_nodes(child)]


def time_query(url: str, query: str, timed: list, explained: list) -> dict:
    """Medians: of the query's time as the dashboard waits for it (round trip
    included), one run per argument tuple in timed but the last, which a first,
    untimed call uses to ready the connection and the plan cache; and of its
    execution on the server (EXPLAIN ANALYZE: no round trip, no planning), one
    run per tuple in explained."""
    conn = connect(url)
    client, server = [], []
    try:
        with conn.cursor() as cur:
            cur.execute(query, timed[-1])
            cur.fetchall()
            for args in timed[:-1]:
                started = time.perf_counter()
                cur.execute(query, args)
                cur.fetchall()
                client.append((time.perf_counter() - started) * 1000)
            for args in explained:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, args)
                plan = cur.fetchone()[0][0]
                server.append(plan["Execution Time"])
    finally:
        conn.close()
    return {"median_ms": round(statistics.median(client), 3),
            "server_median_ms": round(statistics.median(server), 3),
            "plan": plan_nodes(plan["Plan"]),
            "shared_buffers_hit": plan["Plan"].get("Shared Hit Blocks"),
            "shared_buffers_read": plan["Plan"].get("Shared Read Blocks")}


def conversations_to_open(requests: int, count: int, skip: int = 0) -> list[str]:
    """Conversations from the middle of the data, with branches (c % 4 = 0) and
    an id on every request (c % 10 <> 0): the ones a dashboard user opens."""
    first = requests // 2 // SEED_BLOCK * CONVERSATIONS_IN_FLIGHT
    numbers = (c for c in range(first, first + CONVERSATIONS_IN_FLIGHT) if c % 4 == 0 and c % 10)
    return [conversation_of(c) for c in list(numbers)[skip:skip + count]]


def dashboard_queries(url: str, requests: int, runs: int, opened_before: int = 0) -> dict:
    """The two conversation views. Each run opens another conversation, as
    users do: its heap pages are not yet in shared_buffers, as on a table
    larger than memory (the latest conversations are one question, asked
    again). opened_before skips the conversations an earlier call opened."""
    opened = [([c],) for c in conversations_to_open(requests, 2 * runs + 1, skip=opened_before)]
    return {"one conversation": time_query(url, ONE_CONVERSATION, opened[:runs + 1], opened[runs + 1:]),
            "latest conversations": time_query(url, LATEST_CONVERSATIONS, [None] * (runs + 1), [None] * runs)}
