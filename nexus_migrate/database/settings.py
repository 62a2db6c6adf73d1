"""Where the database comes from: DATABASE_URL, .env, the local database, yoyo.ini."""

from __future__ import annotations

import configparser
import os
import sys
from urllib.parse import urlsplit

from dotenv import load_dotenv

from .. import PROJECT_ROOT, YOYO_CONFIG
from ..errors import OperatorError, mask_password
from .local import running_local_database, using_local_database

ENV_FILE = PROJECT_ROOT / ".env"
URL_SCHEMES = ("postgresql", "postgres")
HOW_TO_SET = (
    "export DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME, "
    f"or put that line in {ENV_FILE.name} (see .env.example)"
)


def load_env() -> None:
    """Read .env from the project root; variables already exported win."""
    load_dotenv(ENV_FILE, override=False)


def database_url() -> str:
    """DATABASE_URL, checked enough that yoyo will understand it. When it is
    not set, the project's local database while its server runs (said in one
    line on stderr)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
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


def migration_table() -> str:
    """The table where yoyo records applied migrations, as yoyo.ini names it."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(YOYO_CONFIG)
    return config.get("DEFAULT", "migration_table", fallback="_yoyo_migration")
