"""Where the database comes from, and how a failure is told to the operator."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from dotenv import load_dotenv

from . import PROJECT_ROOT

ENV_FILE = PROJECT_ROOT / ".env"
URL_SCHEMES = ("postgresql", "postgres")
HOW_TO_SET = (
    "export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME, "
    f"or put that line in {ENV_FILE.name} (see .env.example)"
)


class OperatorError(Exception):
    """A problem the operator can fix; str() is the one line to show."""


def load_env() -> None:
    """Read .env from the project root; variables already exported win."""
    load_dotenv(ENV_FILE, override=False)


def database_url() -> str:
    """DATABASE_URL, checked enough that yoyo will understand it. When it is
    not set, the project's local database while its server runs (said in one
    line on stderr)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        from .localdb import running_local_database, using_local_database  # localdb imports this module

        url = running_local_database()
        if url is None:
            raise OperatorError(f"DATABASE_URL is not set: {HOW_TO_SET}")
        print(using_local_database(url), file=sys.stderr)
        os.environ["DATABASE_URL"] = url  # yoyo.ini reads it from there; and later calls say nothing
        return url
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a port that is not a number
    except ValueError as exc:
        raise OperatorError(f"DATABASE_URL is malformed ({exc}): {HOW_TO_SET}") from None
    if parts.scheme not in URL_SCHEMES or not parts.path.strip("/"):
        raise OperatorError(
            f"DATABASE_URL {mask_password(url)} is not a PostgreSQL URL with a database name: {HOW_TO_SET}"
        )
    return url


def mask_password(text: str, url: str | None = None) -> str:
    """text with the password of url (by default DATABASE_URL) replaced by ***,
    as written in the URL and as decoded from it."""
    url = os.environ.get("DATABASE_URL", "") if url is None else url
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for form in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(form, "***")
    return text


def run_cli(main: Callable[[list[str]], int | None]) -> None:
    """Run a command's main(argv) and exit with its code; a failure becomes one
    line on stderr (password masked) and a non-zero exit, never a traceback."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    except OperatorError as exc:
        print(f"error: {mask_password(str(exc))}", file=sys.stderr)
        code = 2
    except Exception as exc:  # anything else still gets one line, not a trace
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {mask_password(first_line)}", file=sys.stderr)
        code = 1
    sys.exit(code or 0)
