"""scripts/quickstart: apply every migration and show the state, to DATABASE_URL
when it is set (environment or .env), otherwise to the project's local PostgreSQL."""

from __future__ import annotations

import os

from ..database.local import start_local_database, using_local_database
from ..database.settings import database_url, load_env
from ..errors import mask_password, run_cli
from .migrate import guarded


def main(argv: list[str]) -> int:
    load_env()
    if os.environ.get("DATABASE_URL"):
        url = database_url()
        print(f"Applying to DATABASE_URL {mask_password(url)}")
    else:
        url = os.environ["DATABASE_URL"] = start_local_database()
        print(using_local_database(url))
        print("  (scripts/localdb stop to stop it, scripts/localdb remove to delete it)")
    # as scripts/migrate runs them: in turn with other runs, faults in one line
    return guarded("apply", ["apply", "--batch"]) or guarded("list", ["list"])


if __name__ == "__main__":
    run_cli(main)
