"""--backup DIR of scripts/migrate apply, rollback and reapply: a pg_dump of the
database before anything touches it.

The dump is PostgreSQL's custom format (pg_dump -Fc), which pg_restore reads
(see docs/operating.md, "Safety rails"). It is written under a temporary name and renamed
once pg_dump has succeeded, so a file with the final name is always complete.
Any failure stops the command before a migration runs.

A dump holds every prompt and response the proxy recorded: it is created
readable by its owner only (pgclient runs pg_dump with umask 077), and so is a
folder made for it (0700). A folder that exists already is left as it is.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from ..database import pgclient
from ..errors import OperatorError, mask_password

OPTION = "--backup"
COMMANDS = {"apply", "rollback", "reapply"}  # those that change the schema


def take_option(argv: list[str]) -> tuple[list[str], Path | None]:
    """argv without `--backup DIR` (or `--backup=DIR`), and DIR."""
    rest, directory = [], None
    args = iter(argv)
    for arg in args:
        if arg == OPTION:
            directory = next(args, None)
            if not directory or directory.startswith("-"):
                raise OperatorError(f"{OPTION} needs a folder: {OPTION} DIR")
        elif arg.startswith(OPTION + "="):
            directory = arg.split("=", 1)[1]
            if not directory:
                raise OperatorError(f"{OPTION} needs a folder: {OPTION}=DIR")
        else:
            rest.append(arg)
    if directory is not None and (not rest or rest[0] not in COMMANDS):
        raise OperatorError(f"{OPTION} goes with {', '.join(sorted(COMMANDS))}")
    return rest, None if directory is None else Path(directory)


def dump_name(dbname: str, when: datetime) -> str:
    return f"{dbname}_{when:%Y%m%dT%H%M%SZ}.dump"


def backup(url: str, directory: Path) -> Path:
    """Dump the database at url into directory; return the dump's path."""
    conn = pgclient.read_only_connection(url)
    try:
        major = pgclient.server_major(conn)
    finally:
        conn.close()
    pg_dump = pgclient.find_client("pg_dump", major)

    directory = directory.expanduser()
    try:
        for folder in [*directory.parents][::-1] + [directory]:
            if not folder.is_dir():
                folder.mkdir(mode=0o700, exist_ok=True)  # (mkdir's parents=True would make them 0755)
    except OSError as exc:
        raise OperatorError(f"backup: cannot create {directory} ({exc.strerror}); nothing was changed") from None
    target = directory / dump_name(pgclient.database_name(url), datetime.now(timezone.utc))
    if target.exists():
        raise OperatorError(f"backup: {target} exists already; nothing was changed")
    partial = target.with_name(target.name + ".partial")

    print(f"backup: dumping {mask_password(url, url)} with {pg_dump.path} ...", flush=True)
    started = time.monotonic()
    result = pgclient.run(pg_dump, ["--format=custom", f"--file={partial}"], url)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OperatorError(f"backup failed, nothing was changed: {mask_password(pgclient.first_error_line(result), url)}")
    partial.rename(target)
    size = target.stat().st_size
    print(f"backup: wrote {target} ({_size(size)}, {time.monotonic() - started:.1f} s)", flush=True)
    return target


def _size(octets: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if octets < 1024 or unit == "GB":
            return f"{octets:.0f} {unit}" if unit == "bytes" else f"{octets:.1f} {unit}"
        octets /= 1024
    return ""
