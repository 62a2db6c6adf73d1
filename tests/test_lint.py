"""scripts/lint: squawk finds nothing to say about the migrations as they run,
and does flag what would block the proxy, so a bad step cannot slip through."""

from __future__ import annotations

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.steps import Index

from .conftest import run_script
from .migrations import MIGRATIONS


def index_steps():
    for migration in MIGRATIONS:
        migration.load()
        yield from (s for s in migration.module.steps if isinstance(s, Index))


def test_every_migration_step_passes_the_lint():
    result = run_script(PROJECT_ROOT, "lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no warnings" in result.stdout


def test_the_original_blocking_index_builds_are_flagged(tmp_path):
    """The same builds without CONCURRENTLY, as the original scripts ran them."""
    builds = list(index_steps())
    for n, step in enumerate(builds):
        (tmp_path / f"{n:02d}-{step.name}.sql").write_text(step.blocking_sql + ";\n")
    result = run_script(PROJECT_ROOT, "lint", *sorted(str(p) for p in tmp_path.iterdir()))
    assert result.returncode != 0
    flagged = [line for line in result.stdout.splitlines() if "require-concurrent-index-creation" in line]
    assert len(flagged) == len(builds), result.stdout


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    result = run_script(PROJECT_ROOT, "lint", str(tmp_path / "nothing.sql"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no such file: {tmp_path / 'nothing.sql'}"]
