"""The project as a package: what `pip install -r requirements.txt` installs,
its pins, the nexus-migrate command, and plain yoyo in a fresh venv."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.commands.plain_yoyo import PLAN, listed

from .conftest import run_script, script_env
from .migrations import ALL

PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)(\s*;.*)?$")


def pins(requirements: str) -> dict[str, str]:
    """{name: version} of the pinned lines of a requirements file's text."""
    found = {}
    for line in requirements.splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            match = PIN.match(line)
            assert match, f"not pinned exactly: {line}"
            found[match.group(1).lower()] = match.group(3)
    return found


def test_the_package_pins_what_requirements_txt_pins_and_no_plotting():
    """pyproject.toml's dependencies (as installed) are requirements.txt's pins;
    its extra `benchmark` pins what requirements-dev.txt pins for the chart."""
    operator = pins((PROJECT_ROOT / "requirements.txt").read_text())
    dev = pins((PROJECT_ROOT / "requirements-dev.txt").read_text())
    base, extra = {}, {}
    for requirement in metadata.requires("nexus-migrate"):
        match = PIN.match(requirement.replace(" ", ""))
        assert match, f"not pinned exactly: {requirement}"
        (extra if "extra==" in (match.group(4) or "") else base)[match.group(1).lower()] = match.group(3)
    assert base == operator
    assert extra == {"matplotlib": dev["matplotlib"]}
    assert "matplotlib" not in operator
    assert "-e ." in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()


def test_nexus_migrate_is_scripts_migrate_from_any_directory(database_url):
    command = Path(sys.executable).parent / "nexus-migrate"
    with tempfile.TemporaryDirectory() as elsewhere:
        env = script_env(DATABASE_URL=database_url, PYTHONPATH=None)
        applied = subprocess.run([str(command), "apply", "--batch"], cwd=elsewhere, env=env,
                                 capture_output=True, text=True)
        assert applied.returncode == 0, applied.stderr
        shown = subprocess.run([str(command), "list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert listed(shown.stdout) == dict.fromkeys(ALL, "A")
    assert shown.stdout == run_script(PROJECT_ROOT, "migrate", "list", DATABASE_URL=database_url).stdout


def test_requirements_txt_alone_serves_plain_yoyo_in_a_fresh_venv(project_copy):
    """What .ci/run proves with scripts/check-plain-yoyo, here on a copy."""
    result = run_script(project_copy, "check-plain-yoyo")
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("ok    yoyo ")]
    assert len(commands) == len(PLAN)
    assert commands[-1].endswith(f"{len(ALL)} of {len(ALL)} applied") and "-c " in commands[-1]
    assert "Traceback" not in result.stdout + result.stderr


def test_the_check_fails_where_requirements_txt_does_not_install_the_project(project_copy):
    """The bug it guards against: migration files that import nexus_migrate."""
    requirements = project_copy / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("\n-e .\n", "\n"))
    result = run_script(project_copy, "check-plain-yoyo")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("FAIL  yoyo apply --batch")
    assert "No module named 'nexus_migrate'" in result.stdout
