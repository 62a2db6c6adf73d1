"""Proxy traffic for the tests that migrate a table while it is in use: rows
seeded in bulk, a writer that keeps inserting, a checksum of what was there."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import psycopg2

from nexus_migrate import PROJECT_ROOT

from .conftest import start_script

# Only the columns of 000, so the rows fit a table that 001 has not reached yet.
SEED = """
    INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, body, model,
                              request_type, input_tokens, output_tokens, duration_ms)
    SELECT gen_random_uuid(), now() - n * interval '1 second', 'team' || n %% 7 || '.example.com',
           'POST', '/v1/messages', jsonb_build_object('content-type', 'application/json'),
           jsonb_build_object('model', 'claude-sonnet-4', 'messages',
                              jsonb_build_array(jsonb_build_object('role', 'user', 'content', repeat(md5(n::text), 8)))),
           'claude-sonnet-4', 'inference', n %% 900, n %% 300, n %% 5000
      FROM generate_series(1, %s) AS n"""

WRITE = """
    INSERT INTO api_requests (request_id, timestamp, domain, method, path, headers, model)
    VALUES (%s, now(), 'writer.example.com', 'POST', '/v1/messages', '{}', 'claude-sonnet-4')
    ON CONFLICT (request_id) DO NOTHING"""

# Rows as they were, whatever columns a migration adds: the 000 columns only.
CHECKSUM = """
    SELECT count(*), md5(string_agg(concat_ws('|', request_id, timestamp, domain, method, path, headers,
                                              body, model, request_type, input_tokens, output_tokens,
                                              duration_ms), ',' ORDER BY request_id))
      FROM api_requests"""


def seed(conn, rows: int) -> None:
    with conn.cursor() as cur:
        cur.execute(SEED, (rows,))
        cur.execute("VACUUM ANALYZE api_requests")


def checksum(conn) -> tuple[int, str]:
    with conn.cursor() as cur:
        cur.execute(CHECKSUM)
        return cur.fetchone()


class Writer(threading.Thread):
    """Inserts a request every few milliseconds, as the proxy does, until
    stopped. An insert blocked for longer than statement_timeout fails and is
    counted: a migration that holds the proxy's writes shows up there."""

    def __init__(self, url: str, every: float = 0.005, statement_timeout: str = "2s"):
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(url, options=f"-c statement_timeout={statement_timeout}")
        self.conn.autocommit = True
        self.every, self.stop = every, threading.Event()
        self.done: list[float] = []  # when each insert completed
        self.failed: list[str] = []

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.wait(self.every):
                try:
                    cur.execute(WRITE, (str(uuid.uuid4()),))
                    self.done.append(time.monotonic())
                except psycopg2.Error as exc:
                    self.failed.append(str(exc).strip())

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()
        self.conn.close()

    def completed_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.done)


def start_migrate(*args: str, **env: str) -> subprocess.Popen:
    return start_script(PROJECT_ROOT, "migrate", *args, **env)


def hold_old_snapshot(url: str):
    """An open transaction with a snapshot: CREATE INDEX CONCURRENTLY waits for it."""
    conn = psycopg2.connect(url)
    conn.set_session(isolation_level="REPEATABLE READ")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    return conn


def hold_read_lock(url: str, table: str = "api_requests"):
    """An open read of table: its ACCESS SHARE lock keeps ALTER TABLE out."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
    return conn


WAITING_BUILD = "SELECT pid FROM pg_stat_progress_create_index WHERE phase LIKE 'waiting for%'"
