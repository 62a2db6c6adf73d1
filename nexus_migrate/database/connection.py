"""Connecting to DATABASE_URL as yoyo does, and what a failed connection or a
missing right means to the operator: one line naming the problem and the fix.
Failures are told apart by the SQLSTATE the server sends with each error, so a
server that writes its messages in another language (lc_messages) gets the
same lines.

The password never appears here: messages name the role, host, port and
database only.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import time
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from yoyo.connections import parse_uri

from ..errors import OperatorError

LEAST_PRIVILEGE = "docs/operating.md, Least privilege"


@dataclass(frozen=True)
class Target:
    """Who connects where, as read from the URL (the password left out)."""

    user: str
    host: str
    port: int | str
    dbname: str

    @classmethod
    def of(cls, url: str) -> Target:
        uri = parse_uri(url)
        # host and port may also come as parameters (?host=/socket/folder&port=5432)
        return cls(uri.username or "(your login name)", uri.hostname or uri.args.get("host") or "localhost",
                   uri.port or uri.args.get("port") or 5432, uri.database or "")

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


# What the operator is told, by SQLSTATE: the code the server sends with every
# error, the same in every language the server may be set to (lc_messages).
# "{detail}" is the server's own first line. A code not listed here gets the
# general "cannot connect" line.
AT_CONNECT = {
    "28P01": "{server} refused the password of role {user}: check the password in DATABASE_URL "
             "(percent-encode characters such as @ : / % in it)",
    "3D000": "database {dbname} does not exist on {server}: fix the database name in DATABASE_URL, "
             "or create it (CREATE DATABASE {dbname} OWNER <the role that runs the migrations>)",
    "42501": "role {user} may not connect to database {dbname} on {server}: "
             "GRANT CONNECT ON DATABASE {dbname} TO {user}",
}
# 28000 (invalid authorization) covers two refusals at connection. Every
# translation keeps the file name pg_hba.conf in the message of the one; the
# other is the role that does not exist.
NO_ROLE = ("role {user} does not exist on {server}: fix the user name in DATABASE_URL, "
           "or have the role created (CREATE ROLE {user} LOGIN PASSWORD '...')")
NO_HBA_ENTRY = ("{server} does not let role {user} connect to database {dbname} from this machine "
                "(no pg_hba.conf entry): have an entry added, or check sslmode in DATABASE_URL")
# Within a session, 42501 is a right the role lacks.
IN_SESSION = {
    "42501": "role {user} lacks a right this needs ({detail}): run scripts/migrate as the role that owns "
             f"the schema ({LEAST_PRIVILEGE})",
    # A statement_timeout (index builds, validations and ANALYZE run past it)
    # or an operator's pg_cancel_backend().
    "57014": "{detail}: a DDL statement or backfill batch ran past the statement_timeout of role {user} or its "
             "database, or someone cancelled it; what was committed is kept and the next run goes on from there "
             "(to lift the timeout for one run: PGOPTIONS='-c statement_timeout=0')",
    # A lock_timeout of the role's or database's, where no step set its own.
    "55P03": "{detail}: a statement waited past the lock_timeout of role {user} or its database for a lock "
             "another session holds; what was committed is kept and the next run goes on from there (to lift "
             "the timeout for one run: PGOPTIONS='-c lock_timeout=0')",
}
# Failures on the client's side (libpq's own messages): no server answered, so
# there is no SQLSTATE, only libpq's English text.
CLIENT_SIDE = [
    (r"could not translate host name", "the host name {host} does not resolve: check the host in DATABASE_URL"),
    (r"Connection refused", "nothing accepts connections at {server}: check the host and port in DATABASE_URL, "
                            "and that PostgreSQL runs there"),
    (r"timeout expired", "no answer from {server} within the connect timeout: check the host and port in "
                         "DATABASE_URL, and any firewall in between"),
]
# The server's English messages at connection, for when its SQLSTATE cannot be
# read (see sqlstate_of_refusal); a server in another language then gets the
# general line.
ENGLISH_AT_CONNECT = [
    (r"password authentication failed", "28P01"),
    (r"role \".*\" does not exist", "28000"),
    (r"database \".*\" does not exist", "3D000"),
    (r"no pg_hba\.conf entry", "28000"),
    (r"permission denied for database", "42501"),
]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _advice(advice: str, exc: Exception, url: str) -> OperatorError:
    target = Target.of(url)
    return OperatorError(advice.format(**vars(target), server=target.server, detail=_first_line(exc)))


def explain(exc: psycopg2.Error, url: str) -> OperatorError | None:
    """The one-line OperatorError for an error the operator can fix, or None
    when it is none of those. Within a session, by its SQLSTATE alone."""
    if exc.pgcode is None:  # a connection that failed (yoyo's own, say): psycopg2 gives it no code
        return explain_refusal(exc, url)
    advice = IN_SESSION.get(exc.pgcode)
    return _advice(advice, exc, url) if advice else None


def explain_refusal(exc: psycopg2.Error, url: str, params: dict | None = None) -> OperatorError | None:
    """The one-line OperatorError for a connection that failed, or None when
    it is none the operator is told how to fix. With the connection's params,
    by the SQLSTATE of the server's refusal (sqlstate_of_refusal); without them,
    or where that cannot be had, by the server's English text."""
    text = str(exc)
    for pattern, advice in CLIENT_SIDE:
        if re.search(pattern, text):  # no second attempt then: for a silent host it would double the wait
            return _advice(advice, exc, url)
    sqlstate = sqlstate_of_refusal(params) if params is not None else None
    if sqlstate is None:
        sqlstate = next((code for pattern, code in ENGLISH_AT_CONNECT if re.search(pattern, text)), None)
    if sqlstate == "28000":
        return _advice(NO_HBA_ENTRY if "pg_hba.conf" in text else NO_ROLE, exc, url)
    advice = AT_CONNECT.get(sqlstate or "")
    return _advice(advice, exc, url) if advice else None


# The SQLSTATE of a refused connection. psycopg2 gives a failed connection no
# pgcode (the server's FATAL comes before any result), but libpq writes the
# code into the message when its error verbosity is VERBOSE, which can be set
# on a connection still being made: one started with async_=True, whose PGconn
# is conn.pgconn_ptr. PQsetErrorVerbosity is found through psycopg2's own
# module, which is linked to the libpq it uses.
PQERRORS_VERBOSE = 2
VERBOSE_CODE = re.compile(r":  ([0-9A-Z]{5}): ")  # "FATAL:  3D000: ..." (the severity word may be translated)


def sqlstate_of_refusal(params: dict) -> str | None:
    """Connect once more with params, with libpq's error verbosity VERBOSE, and
    read the SQLSTATE from the refusal; None when the trick is unavailable, the
    attempt succeeds, or its error carries no code (a client-side failure)."""
    try:
        set_verbosity = ctypes.CDLL(psycopg2._psycopg.__file__).PQsetErrorVerbosity
        set_verbosity.argtypes, set_verbosity.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
        conn = psycopg2.connect(**params, async_=True)
    except (AttributeError, OSError, psycopg2.Error):
        return None
    deadline = time.monotonic() + _connect_timeout(params)
    try:
        set_verbosity(conn.pgconn_ptr, PQERRORS_VERBOSE)
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return None
            wait = max(deadline - time.monotonic(), 0)
            if state == psycopg2.extensions.POLL_READ:
                ready = select.select([conn.fileno()], [], [], wait)[0]
            else:
                ready = select.select([], [conn.fileno()], [], wait)[1]
            if not ready:
                return None
    except psycopg2.Error as exc:
        match = VERBOSE_CODE.search(str(exc))
        return match.group(1) if match else None
    except AttributeError:  # a psycopg2 without pgconn_ptr (before 2.8)
        return None
    finally:
        conn.close()


def _connect_timeout(params: dict) -> int:
    """libpq leaves connect_timeout to the caller of a connection made with
    async_=True: the seconds it would wait (at least 2, as libpq; 10 when unset)."""
    value = str(params.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT") or "")
    seconds = int(value) if value.strip().isdigit() else 0
    return max(seconds, 2) if seconds > 0 else 10


def connect(url: str):
    """A psycopg2 connection (autocommit) with the same settings yoyo uses for
    url; a failure raises OperatorError with the fix."""
    uri = parse_uri(url)
    kwargs = {key: value for key, value in {
        "dbname": uri.database, "user": uri.username, "password": uri.password,
        "host": uri.hostname, "port": uri.port}.items() if value is not None}
    args = dict(uri.args)
    schema = args.pop("schema", None)  # yoyo's own parameter: it sets search_path
    try:
        conn = psycopg2.connect(**kwargs, **args)
    except psycopg2.Error as exc:
        raise (explain_refusal(exc, url, {**kwargs, **args}) or OperatorError(
            f"cannot connect to {Target.of(url).server} ({_first_line(exc)}): check DATABASE_URL")) from None
    conn.autocommit = True
    if schema:
        with conn.cursor() as cur:
            cur.execute(f"SET search_path TO {schema}")  # as yoyo does
    return conn


def session_parameters(conn) -> dict:
    """What psycopg2.connect needs to open another session like conn (its
    server, database and role), read while conn is idle: for a watcher beside
    it while it is busy."""
    params = {**conn.get_dsn_parameters(), "password": conn.info.password}
    return {key: value for key, value in params.items() if value}
