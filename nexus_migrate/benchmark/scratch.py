"""The server the benchmark runs on, and its scratch databases: created from
a template by copying files, dropped at the end. The database in the URL is
only connected to; its tables are never read or written. And the samplers'
connections, which read the server while a part runs."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from ..errors import OperatorError, mask_password

# Every scratch database's name starts so; a run replaces what a previous one left.
PREFIX = "nexus_benchmark_"


class Server:
    def __init__(self, url: str):
        self.url = url
        try:
            self.conn = psycopg2.connect(url, connect_timeout=10)
        except psycopg2.Error as exc:
            raise OperatorError(f"cannot connect to {mask_password(url, url)}: "
                                f"{mask_password(str(exc).strip().splitlines()[0], url)}") from None
        self.conn.autocommit = True
        self.version = self.conn.server_version // 10000
        self.created: list[str] = []

    def url_of(self, name: str) -> str:
        return urlunsplit(urlsplit(self.url)._replace(path="/" + name))

    def execute(self, statement, args=None):
        with self.conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else None

    def exists(self, name: str) -> bool:
        return bool(self.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    def create(self, name: str, template: str | None = None) -> str:
        """A new database name (replacing one of that name), empty or a copy of template."""
        self.drop(name)
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            # FILE_COPY (PostgreSQL 15+) copies the files after a checkpoint: much
            # faster for a large template than the default block-by-block WAL copy.
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if self.version >= 15:
                statement += sql.SQL(" STRATEGY FILE_COPY")
        try:
            self.execute(statement)
        except psycopg2.errors.InsufficientPrivilege:
            raise OperatorError("the benchmark creates scratch databases: connect as a role with CREATEDB") from None
        if name not in self.created:
            self.created.append(name)
        return self.url_of(name)

    def drop(self, name: str) -> None:
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_scratch(self) -> None:
        """Every scratch database on the server, whichever run made it (never
        the one connected to)."""
        for (name,) in self.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s) "
                                    "AND datname <> current_database()", (PREFIX,)):
            self.drop(name)

    def drop_created(self) -> None:
        for name in reversed(self.created):
            self.drop(name)
        self.created.clear()

    def size(self, name: str) -> str:
        return self.execute("SELECT pg_size_pretty(pg_database_size(%s))", (name,))[0][0]

    def wait_for_no_sessions(self, name: str, timeout: float = 30) -> None:
        """Until no session but ours is connected to name: a session's
        statistics reach the shared counters at the latest when it ends, and a
        template must have none."""
        give_up = time.monotonic() + timeout
        while self.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                           "AND backend_type = 'client backend'", (name,))[0][0]:
            if time.monotonic() > give_up:
                raise OperatorError(f"sessions still connected to {name} after {timeout:g} s")
            time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()


def connect(url: str, **kwargs):
    """An autocommit connection: each statement a transaction of its own."""
    conn = psycopg2.connect(url, **kwargs)
    conn.autocommit = True
    return conn


@contextmanager
def every_seconds(every: float, sample, what: str):
    """For the duration, sample() every `every` seconds in a thread of its
    own. Should it fail, the samples stop and, when the duration ends, one
    line says what failed: numbers missing for part of a run are not passed
    off as a whole run's."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.wait(every):
                sample()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failed:
        raise OperatorError(f"{what} failed: {str(failed[0]).strip().splitlines()[0]}")


@contextmanager
def sampling_every(url: str, every: float, sample, application_name: str):
    """For the duration, sample(cursor) every `every` seconds in a thread of
    its own, on a connection of its own to url."""
    conn = connect(url, application_name=application_name)
    try:
        with conn.cursor() as cur, every_seconds(every, lambda: sample(cur), f"sampling ({application_name})"):
            yield
    finally:
        conn.close()
