"""Connecting to DATABASE_URL as yoyo does, and what a failed connection or a
missing right means to the operator: one line naming the problem and the fix.

The password never appears here: messages name the role, host, port and
database only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg2
from yoyo.connections import parse_uri

from .settings import OperatorError

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


# (SQLSTATE, pattern of the message, what went wrong and what to do). A failed
# connection carries no SQLSTATE in psycopg2 (the server's FATAL comes before
# any result), so the server's and libpq's English messages are matched as well.
# First match wins.
RULES: list[tuple[str | None, str, str]] = [
    ("28P01", r"password authentication failed",
     "{server} refused the password of role {user}: check the password in DATABASE_URL "
     "(percent-encode characters such as @ : / % in it)"),
    ("28000", r"role \".*\" does not exist",
     "role {user} does not exist on {server}: fix the user name in DATABASE_URL, "
     "or have the role created (CREATE ROLE {user} LOGIN PASSWORD '...')"),
    ("3D000", r"database \".*\" does not exist",
     "database {dbname} does not exist on {server}: fix the database name in DATABASE_URL, "
     "or create it (CREATE DATABASE {dbname} OWNER <the role that runs the migrations>)"),
    ("28000", r"no pg_hba\.conf entry",
     "{server} does not let role {user} connect to database {dbname} from this machine "
     "(no pg_hba.conf entry): have an entry added, or check sslmode in DATABASE_URL"),
    ("42501", r"permission denied for database",
     "role {user} may not connect to database {dbname} on {server}: "
     "GRANT CONNECT ON DATABASE {dbname} TO {user}"),
    (None, r"could not translate host name",
     "the host name {host} does not resolve: check the host in DATABASE_URL"),
    (None, r"Connection refused",
     "nothing accepts connections at {server}: check the host and port in DATABASE_URL, "
     "and that PostgreSQL runs there"),
    (None, r"timeout expired",
     "no answer from {server} within the connect timeout: check the host and port in DATABASE_URL, "
     "and any firewall in between"),
    ("42501", r"",
     "role {user} lacks a right this needs ({detail}): run scripts/migrate as the role that owns "
     f"the schema ({LEAST_PRIVILEGE})"),
]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def explain(exc: psycopg2.Error, url: str) -> OperatorError | None:
    """The one-line OperatorError for a database error the operator can fix,
    or None when it is none of those."""
    text = str(exc)
    for code, pattern, advice in RULES:
        if exc.pgcode is not None:
            matches = exc.pgcode == code and re.search(pattern, text)
        else:
            matches = pattern and re.search(pattern, text)
        if matches:
            target = Target.of(url)
            return OperatorError(advice.format(**vars(target), server=target.server,
                                               detail=_first_line(exc)))
    return None


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
        conn.autocommit = True
        if schema:
            with conn.cursor() as cur:
                cur.execute(f"SET search_path TO {schema}")  # as yoyo does
    except psycopg2.Error as exc:
        raise (explain(exc, url) or OperatorError(
            f"cannot connect to {Target.of(url).server} ({_first_line(exc)}): check DATABASE_URL")) from None
    return conn
