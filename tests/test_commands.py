"""The commands as an operator runs them: exit codes, messages, .env, the local
database of the quick start."""

from __future__ import annotations

import os
import pty
import pwd
import re
import select
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.commands.migrate import ASKING_COMMANDS, OWN_COMMANDS
from nexus_migrate.commands.plain_yoyo import listed
from nexus_migrate.database import pgclient
from nexus_migrate.database.catalog import applied_migrations
from nexus_migrate.database.localpg import LocalServer

from .conftest import SECRET, assert_one_line_error, mode, run_script, script_env, wait_until
from .migrations import ALL, logged

OTHER_USER = "daemon"  # an unprivileged account that is neither the operator nor the server's


def test_missing_database_url_is_one_line_with_the_fix(project_copy):
    result = run_script(project_copy, "migrate", "apply", "--batch")
    assert_one_line_error(result, "DATABASE_URL is not set", "export DATABASE_URL=", ".env")
    assert result.returncode == 2


def test_without_the_requirements_installed_the_scripts_say_how(project_copy, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    (project_copy / ".venv").unlink()
    for script in ("migrate", "localdb"):
        result = run_script(project_copy, script, "list", PATH=f"{bare / 'bin'}:/usr/bin:/bin")
        assert_one_line_error(result, "scripts/venv", "requirements.txt")


def test_help_needs_no_database(project_copy):
    result = run_script(project_copy, "migrate", "apply", "--help")
    assert result.returncode == 0 and "--revision" in result.stdout


def yoyos_own_commands() -> list[str]:
    """The sub-commands that the installed yoyo's own --help names: {init,apply,...}."""
    shown = subprocess.run([str(Path(sys.executable).parent / "yoyo"), "--no-config-file", "--help"],
                           capture_output=True, text=True)
    return re.search(r"\{([a-z,-]+)\}", shown.stdout).group(1).split(",")


def test_help_lists_every_command_and_our_options_one_line_each():
    yoyos = yoyos_own_commands()
    assert {"apply", "rollback", "reapply", "list", "develop", "mark", "unmark", "break-lock", "new", "init"} <= set(yoyos)
    for args, code in ((["--help"], 0), (["-h"], 0), ([], 2)):
        result = run_script(PROJECT_ROOT, "migrate", *args)
        assert result.returncode == code and result.stderr == ""
        first_words = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"  \S", line)]
        assert first_words == [*yoyos, *OWN_COMMANDS, "--backup", "--allow-data-loss"]
        assert "usage: scripts/migrate COMMAND" in result.stdout and "README.md" in result.stdout


def test_every_command_has_help_naming_what_we_add():
    for command in [*yoyos_own_commands(), *OWN_COMMANDS]:
        result = run_script(PROJECT_ROOT, "migrate", command, "--help")
        assert result.returncode == 0 and result.stderr == "", command
        assert f"usage: {'scripts/migrate' if command in OWN_COMMANDS else 'yoyo'} {command}" in result.stdout
        assert ("--backup DIR" in result.stdout) == (command in {"apply", "rollback", "reapply"}), command
        assert ("--allow-data-loss" in result.stdout) == (command in {"rollback", "reapply"}), command
        assert ("--batch" in result.stdout.split("usage:")[0]) == (command in ASKING_COMMANDS), command


def test_an_unknown_command_is_one_line():
    assert_one_line_error(run_script(PROJECT_ROOT, "migrate", "aply", "--batch"), "unknown command 'aply'", "--help")


def test_without_a_terminal_a_command_that_would_ask_stops_before_it_connects(project_copy):
    never = f"postgresql://nexus:{SECRET}@127.0.0.1:1/claude_nexus"  # connecting would fail otherwise
    for command in ("apply", "rollback", "reapply", "mark", "unmark"):
        backup = ["--backup", "backups"] if command in {"apply", "rollback", "reapply"} else []
        result = run_script(project_copy, "migrate", command, *backup, DATABASE_URL=never)
        assert_one_line_error(result, f"scripts/migrate {command}", "not a terminal", "add --batch")
        assert result.returncode == 2
    result = run_script(project_copy, "migrate", "new", "-m", "something")
    assert_one_line_error(result, "scripts/migrate new", "add --batch")
    assert not (project_copy / "backups").exists()
    assert sorted(p.name for p in (project_copy / "migrations").iterdir()) == [f"{m}.py" for m in ALL]


def test_without_a_terminal_commands_that_ask_nothing_run(project_copy, database_url, db):
    """list and develop never ask; --batch or yoyo.ini's batch_mode = on stop the asking."""
    assert run_script(project_copy, "migrate", "list", DATABASE_URL=database_url).returncode == 0
    assert run_script(project_copy, "migrate", "-b", "apply", "-r", ALL[0], DATABASE_URL=database_url).returncode == 0
    config = project_copy / "yoyo.ini"
    config.write_text(config.read_text().replace("batch_mode = off", "batch_mode = on"))
    assert run_script(project_copy, "migrate", "apply", "-r", ALL[1], DATABASE_URL=database_url).returncode == 0
    assert run_script(project_copy, "migrate", "develop", DATABASE_URL=database_url).returncode == 0
    assert applied_migrations(db) == ALL


def test_on_a_terminal_apply_still_asks(database_url, db):
    """yoyo's questions, answered on a pseudo-terminal: 'a' (all the rest), then 'y'."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(PROJECT_ROOT / "scripts" / "migrate"), "apply"], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=script_env(DATABASE_URL=database_url),
                               cwd=PROJECT_ROOT, start_new_session=True)
    os.close(terminal)
    screen = []

    def shown(text: str) -> bool:
        if select.select([controller], [], [], 0.05)[0]:
            screen.append(os.read(controller, 4096).decode(errors="replace"))
        return text in "".join(screen)

    try:
        for question, answer in (("Shall I apply this migration?", "a"), (f"Apply these {len(ALL)} migrations", "y")):
            wait_until(lambda: shown(question), f"yoyo asked {question!r}", deadline=60)
            os.write(controller, answer.encode())
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    assert applied_migrations(db) == ALL


def test_malformed_urls_are_named_without_their_password(project_copy):
    for url in (f"postgresql://nexus:{SECRET}@db:port/claude", f"mysql://nexus:{SECRET}@db/claude",
                f"postgresql://nexus:{SECRET}@db:5432"):
        result = run_script(project_copy, "migrate", "list", DATABASE_URL=url)
        assert_one_line_error(result, "DATABASE_URL")


def test_an_unreachable_server_is_one_line_without_the_password(project_copy):
    result = run_script(project_copy, "migrate", "apply", "--batch",
                        DATABASE_URL=f"postgresql://nexus:{SECRET}@127.0.0.1:1/x")
    assert_one_line_error(result, "127.0.0.1")


def test_database_url_from_dot_env_and_the_environment_wins(project_copy, database_url):
    (project_copy / ".env").write_text(f"DATABASE_URL={database_url}\n")
    assert set(listed(run_script(project_copy, "migrate", "list").stdout).values()) == {"U"}
    assert run_script(project_copy, "migrate", "apply", "--batch").returncode == 0
    assert listed(run_script(project_copy, "migrate", "list").stdout) == dict.fromkeys(ALL, "A")

    (project_copy / ".env").write_text(f"DATABASE_URL=postgresql://nexus:{SECRET}@127.0.0.1:1/x\n")
    assert run_script(project_copy, "migrate", "list", DATABASE_URL=database_url).returncode == 0


def test_plain_yoyo_works_from_the_project_root_with_database_url_exported(database_url):
    yoyo = Path(sys.executable).parent / "yoyo"
    env = script_env(DATABASE_URL=database_url)
    assert subprocess.run([str(yoyo), "apply", "--batch"], cwd=PROJECT_ROOT, env=env).returncode == 0
    result = subprocess.run([str(yoyo), "list"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert listed(result.stdout) == dict.fromkeys(ALL, "A")


def test_a_failed_post_check_exits_non_zero_and_records_nothing(project_copy, database_url, db):
    """A conversation_id that is already there as text: ADD COLUMN IF NOT EXISTS
    keeps it, 001's post-check refuses it, and yoyo does not record 001."""
    assert run_script(project_copy, "migrate", "apply", "--batch", "-r", ALL[0],
                      DATABASE_URL=database_url).returncode == 0
    with db.cursor() as cur:
        cur.execute("ALTER TABLE api_requests ADD COLUMN conversation_id text")
    result = run_script(project_copy, "migrate", "apply", "--batch", DATABASE_URL=database_url)
    assert_one_line_error(result, "001", "conversation_id text", "uuid")
    assert applied_migrations(db) == ALL[:1]


def test_quickstart_starts_reuses_and_removes_its_own_database(project_copy):
    first = run_script(project_copy, "quickstart")
    assert first.returncode == 0, first.stderr
    assert listed(first.stdout) == dict.fromkeys(ALL, "A")
    url = run_script(project_copy, "localdb", "url").stdout.strip()
    assert url.startswith(f"postgresql://postgres@/claude_nexus?host={project_copy / '.local-pg'}&port=")

    again = run_script(project_copy, "quickstart")
    assert again.returncode == 0 and url in again.stdout  # the same server, nothing to apply
    conn = psycopg2.connect(url)
    assert applied_migrations(conn) == ALL
    assert logged(conn, "apply") == ALL  # each applied once
    major = pgclient.server_major(conn)
    conn.close()

    # The printed URL as the operator uses it: scripts/migrate (and with it yoyo), pg_dump, psql.
    assert listed(run_script(project_copy, "migrate", "list", DATABASE_URL=url).stdout) == dict.fromkeys(ALL, "A")
    dumped = run_script(project_copy, "migrate", "apply", "--batch", "--backup", "dumps", DATABASE_URL=url)
    assert dumped.returncode == 0 and len(list((project_copy / "dumps").iterdir())) == 1, dumped.stderr
    psql = pgclient.run(pgclient.find_client("psql", major), ["-X", "-Atc", "SELECT current_database()"], url)
    assert psql.stdout.strip() == "claude_nexus", psql.stderr

    assert run_script(project_copy, "localdb", "stop").returncode == 0
    assert run_script(project_copy, "localdb", "status").returncode == 3
    assert run_script(project_copy, "localdb", "remove").returncode == 0
    assert not (project_copy / ".local-pg").exists()


def test_without_database_url_the_running_local_database_is_the_default(project_copy):
    assert run_script(project_copy, "quickstart").returncode == 0
    url = run_script(project_copy, "localdb", "url").stdout.strip()
    for command in ("list", "verify"):
        result = run_script(project_copy, "migrate", command)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines() == [f"No DATABASE_URL set: using the local PostgreSQL at {url}"]
    assert listed(run_script(project_copy, "migrate", "list").stdout) == dict.fromkeys(ALL, "A")

    assert run_script(project_copy, "localdb", "stop").returncode == 0
    assert_one_line_error(run_script(project_copy, "migrate", "list"), "DATABASE_URL is not set")


def test_the_local_database_is_private_to_its_operator(project_copy, common_umask):
    """It trusts whoever reaches it, so only its socket reaches it: in a folder
    only the operator may enter, and no TCP at all. Its data and log (the
    proxy's traffic, once tried there) are the operator's alone."""
    started = run_script(project_copy, "localdb", "start")
    assert started.returncode == 0, started.stderr
    home = project_copy / ".local-pg"
    assert {path.name: mode(path) for path in (home, home / "data", home / "server.log")} == {
        ".local-pg": 0o700, "data": 0o700, "server.log": 0o600}
    [socket] = [path for path in home.iterdir() if path.is_socket()]
    assert mode(socket) == 0o700
    conn = psycopg2.connect(started.stdout.strip())
    with conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == ""  # no TCP: nobody connects from 127.0.0.1 or elsewhere
    conn.close()


def test_another_user_of_the_machine_cannot_reach_the_local_database(project_copy):
    if os.geteuid() != 0:
        pytest.skip("needs root, to try as another account of the machine")
    try:
        other = pwd.getpwnam(OTHER_USER)
    except KeyError:
        pytest.skip(f"this machine has no account {OTHER_USER!r} to try as")
    started = run_script(project_copy, "localdb", "start")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    psql = pgclient.find_client("psql", LocalServer(project_copy / ".local-pg").binaries.major)
    attempt = [str(psql.path), "-X", "-Atc", "SELECT 1", url]
    assert subprocess.run(attempt, capture_output=True, text=True).stdout.strip() == "1"  # the operator is let in
    refused = subprocess.run(attempt, capture_output=True, text=True, user=other.pw_uid, group=other.pw_gid,
                             extra_groups=[], env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    log = project_copy / ".local-pg" / "server.log"
    read = subprocess.run(["cat", str(log)], capture_output=True, user=other.pw_uid, group=other.pw_gid,
                          extra_groups=[], cwd="/")
    assert read.returncode != 0


def test_a_project_path_too_long_for_a_socket_is_one_line(project_copy):
    deep = project_copy.parent / ("a-folder-with-a-rather-long-name-" * 3)
    project_copy.rename(deep)
    try:
        result = run_script(deep, "localdb", "start")
        assert_one_line_error(result, str(deep / ".local-pg"), "at most 107", "shorter path", "DATABASE_URL")
        assert not (deep / ".local-pg" / "data").exists()
    finally:
        deep.rename(project_copy)


def test_quickstart_applies_to_database_url_when_it_is_set(project_copy, database_url, db):
    result = run_script(project_copy, "quickstart", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert applied_migrations(db) == ALL
    assert not (project_copy / ".local-pg").exists()
