"""scripts/check-plain-yoyo: proves that `pip install -r requirements.txt` in a
fresh virtual environment is all plain `yoyo` needs, as in a container.

It makes a venv in a temporary folder, installs requirements.txt alone into it
(from the project root, as pip needs for its "-e ."), starts a throw-away
PostgreSQL, and runs yoyo's apply, list, rollback and reapply with nothing but
DATABASE_URL exported: no PYTHONPATH, no scripts/, from the project root and,
with `-c /absolute/path/yoyo.ini`, from another folder. Each `list` must show
the migrations applied that should be. Everything it made is removed at the
end. Exit status 0 when every command did its part, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from yoyo import read_migrations
from yoyo.migrations import topological_sort

from .. import MIGRATIONS_DIR, PROJECT_ROOT, YOYO_CONFIG
from ..database.localpg import LocalServer
from ..errors import run_cli

DATABASE = "claude_nexus"


class CheckFailed(Exception):
    """A step of the check did not do its part; str() says which and why."""


def listed(output: str) -> dict[str, str]:
    """`yoyo list`'s table as {migration id: status}, status A (applied) or U."""
    return {parts[1]: parts[0] for parts in map(str.split, output.splitlines()) if parts and parts[0] in "AU"}


def migration_ids() -> list[str]:
    """The migrations' ids, in the order yoyo applies them."""
    return [m.id for m in topological_sort(read_migrations(str(MIGRATIONS_DIR)))]


@dataclass(frozen=True)
class Run:
    """One plain yoyo command; `applied` is how many migrations, from the
    first, a `list` must show as applied (-1: all but the last)."""
    args: tuple[str, ...]
    elsewhere: bool = False  # from another folder, with -c /absolute/path/yoyo.ini
    applied: int | None = None

    def argv(self) -> list[str]:
        return ["yoyo", *(["-c", str(YOYO_CONFIG)] if self.elsewhere else []), *self.args]


ALL = len(migration_ids())
PLAN = (
    Run(("apply", "--batch")),
    Run(("list",), applied=ALL),
    Run(("rollback", "--batch")),                   # the last applied migration only
    Run(("list",), elsewhere=True, applied=ALL - 1),
    Run(("apply", "--batch"), elsewhere=True),
    Run(("reapply", "--batch")),                    # every applied migration, rolled back and applied again
    Run(("list",), elsewhere=True, applied=ALL),
)


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator who activated venv: nothing of this
    process's own Python setup (scripts/_python's PYTHONPATH in particular)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return {**env, **extra}


def fresh_venv(venv: Path) -> None:
    """A new venv at venv with `pip install -r requirements.txt`, run from the
    project root, and nothing else."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", "-r", "requirements.txt"],
                         cwd=PROJECT_ROOT, env=clean_env(venv), capture_output=True, text=True)
    if pip.returncode != 0:
        errors = [line for line in pip.stderr.splitlines() if line.startswith("ERROR")] or pip.stderr.splitlines()
        raise CheckFailed(f"pip install -r requirements.txt failed: {(errors or ['exit code %d' % pip.returncode])[-1]}")


def run_plan(venv: Path, url: str, elsewhere: Path, report=print) -> None:
    """Run PLAN with venv's yoyo on url; report one line per command; raise
    CheckFailed at the first that fails or lists the wrong migrations."""
    env = clean_env(venv, DATABASE_URL=url)
    ids = migration_ids()
    for run in PLAN:
        where = elsewhere if run.elsewhere else PROJECT_ROOT
        shown = f"{' '.join(run.argv())}  (in {where})"
        result = subprocess.run(run.argv(), cwd=where, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            raise CheckFailed(f"{shown}: exit code {result.returncode}: {last}")
        if run.applied is not None:
            expected = {m: "A" if n < run.applied else "U" for n, m in enumerate(ids)}
            if listed(result.stdout) != expected:
                raise CheckFailed(f"{shown}: listed {listed(result.stdout)}, expected {expected}")
            shown += f": {run.applied} of {len(ids)} applied"
        report(f"ok    {shown}")


def check(report=print) -> None:
    """The whole check, in temporary folders it removes."""
    top = Path(tempfile.mkdtemp(prefix="nexus-plain-yoyo-"))
    top.chmod(0o755)  # under root the server runs as 'nobody', who must reach its folder
    server = LocalServer(top / "pg")
    try:
        started = time.monotonic()
        report(f"fresh venv {top / 'venv'}: pip install -r requirements.txt ...")
        fresh_venv(top / "venv")
        report(f"ok    installed in {time.monotonic() - started:.1f} s")
        server.start()
        url = server.ensure_database(DATABASE)
        report(f"ok    throw-away {server.binaries} at {url}")
        elsewhere = top / "elsewhere"
        elsewhere.mkdir()
        run_plan(top / "venv", url, elsewhere, report)
    finally:
        server.remove()
        shutil.rmtree(top, ignore_errors=True)


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="scripts/check-plain-yoyo", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        check()
    except CheckFailed as exc:
        print(f"FAIL  {exc}")
        return 1
    print("plain yoyo works with requirements.txt alone")
    return 0


if __name__ == "__main__":
    run_cli(main)
