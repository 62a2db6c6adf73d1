"""Rows a proxy would have stored, and a fingerprint of every table's rows, to
prove that a command kept (or restored) each of them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from psycopg2.extras import Json, execute_values


def store_traffic(conn, requests: int = 40, chunks_each: int = 3) -> None:
    """Requests with bodies and responses, and their streamed chunks, in the
    columns that 000 creates."""
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    ids = [uuid.UUID(int=n + 1) for n in range(requests)]
    with conn.cursor() as cur:
        execute_values(cur, """
            INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, body,
                                      model, response_status, response_body, input_tokens, output_tokens)
            VALUES %s""", [
            (str(rid), start + timedelta(minutes=n), f"team{n % 3}.example", "POST", "/v1/messages",
             Json({"x-request": n}), Json({"messages": [{"role": "user", "content": "é" * n}]}),
             "claude-3-opus", 200, Json({"content": [{"text": f"answer {n}"}]}), n * 10, n)
            for n, rid in enumerate(ids)])
        execute_values(cur, """
            INSERT INTO streaming_chunks (request_id, chunk_index, timestamp, data)
            VALUES %s""", [
            (str(rid), i, start, f"data: chunk {i} of {rid}") for rid in ids for i in range(chunks_each)])


def fingerprint(conn, kinds: tuple[str, ...] = ("r",)) -> dict[str, tuple[int, str]]:
    """{relation: (row count, md5 of its rows in a fixed order)} for every
    relation of the current schema of those kinds (pg_class.relkind: tables;
    "m" adds materialized views), yoyo's included."""
    with conn.cursor() as cur:
        cur.execute("""SELECT relname FROM pg_class
                        WHERE relnamespace = current_schema()::regnamespace AND relkind IN %s
                        ORDER BY relname""", (kinds,))
        tables = [row[0] for row in cur.fetchall()]
        result = {}
        for table in tables:
            cur.execute(f'SELECT count(*), md5(coalesce(string_agg(t::text, E\'\\n\' ORDER BY t::text), \'\')) '
                        f'FROM "{table}" AS t')
            result[table] = tuple(cur.fetchone())
        return result
