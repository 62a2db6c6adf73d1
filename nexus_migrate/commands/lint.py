"""scripts/lint: squawk, the PostgreSQL migration linter, over the SQL of every
migration step (apply and rollback), written out as the runner sends it.

The rules left out, and why, are in .squawk.toml beside each one. Paths given
on the command line are linted too, with the same rules (to try a statement).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from yoyo import read_migrations

from .. import MIGRATIONS_DIR, PROJECT_ROOT
from ..errors import OperatorError, run_cli
from ..steps import rendered_sql

SQUAWK_CONFIG = PROJECT_ROOT / ".squawk.toml"


def squawk_binary() -> str:
    beside_python = Path(sys.executable).parent / "squawk"  # the venv's, from requirements-dev.txt
    found = str(beside_python) if beside_python.exists() else shutil.which("squawk")
    if not found:
        raise OperatorError("squawk is not installed: run scripts/venv (requirements-dev.txt pins squawk-cli)")
    return found


def write_steps(folder: Path) -> list[Path]:
    """One file per statement of every step, named migration.step.direction.sql."""
    written = []
    for migration in read_migrations(str(MIGRATIONS_DIR)):
        migration.load()
        for number, step in enumerate(migration.module.steps):
            for direction in ("apply", "rollback"):
                sql = rendered_sql(step, direction)
                if sql:
                    path = folder / f"{migration.id}.{number:02d}.{direction}.sql"
                    path.write_text(sql + "\n")
                    written.append(path)
    return written


def lint(extra: list[Path]) -> int:
    squawk = squawk_binary()
    missing = [str(p) for p in extra if not p.is_file()]
    if missing:
        raise OperatorError(f"no such file: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="nexus-lint-") as tmp:
        files = write_steps(Path(tmp))
        copies = []
        for n, path in enumerate(extra):  # copied beside the steps so messages name them alike
            copy = Path(tmp) / f"given-{n}-{path.name}"
            shutil.copyfile(path, copy)
            copies.append(copy)
        result = subprocess.run([squawk, "--config", str(SQUAWK_CONFIG), "--reporter", "gcc",
                                 *[p.name for p in files + copies]], cwd=tmp, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output)
    if result.returncode == 0:
        print(f"squawk: no warnings in {len(files)} step statements" + (f" and {len(extra)} given files" if extra else ""))
    return result.returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/lint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="more .sql files to lint with the same rules")
    return lint(parser.parse_args(argv).files)


if __name__ == "__main__":
    run_cli(main)
