"""Shared pieces of the Claude Nexus Proxy schema migrations: settings, the local
PostgreSQL server, catalog snapshots and schema checks, used by scripts/ and tests/."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
YOYO_CONFIG = PROJECT_ROOT / "yoyo.ini"
