"""NEXUS_ACCOUNT_MAP, 005's mapping of domains to accounts: a file of
domain,account_id lines or the proxy's credentials directory. A malformed one
is one line naming the file (and line); the credentials' keys and tokens are
never shown, not even in an error."""

from __future__ import annotations

import json

import pytest

from nexus_migrate import PROJECT_ROOT
from nexus_migrate.proxy.accounts import account_map

from .conftest import SECRET, assert_one_line_error, run_script
from .history import read
from .test_backfill import stored  # noqa: F401 (a fixture)


def credentials(folder, domain: str, **fields) -> None:
    (folder / f"{domain}.credentials.json").write_text(json.dumps(
        {"type": "oauth", "accessToken": SECRET, "refreshToken": SECRET, **fields}))


def test_a_mapping_file_skips_comments_and_blank_lines(tmp_path, monkeypatch):
    path = tmp_path / "map.csv"
    path.write_text("# who pays\n\n a.example , acc_1\nlocalhost:3000,acc_2\n  # done\n")
    monkeypatch.setenv("NEXUS_ACCOUNT_MAP", str(path))
    assert account_map() == {"a.example": "acc_1", "localhost:3000": "acc_2"}


def test_a_credentials_directory_gives_each_domain_its_account_id(tmp_path, monkeypatch):
    credentials(tmp_path, "a.example", accountId="acc_1")
    credentials(tmp_path, "localhost:3000", accountId="acc_2")
    credentials(tmp_path, "no-account.example")  # the proxy writes no account for it either
    (tmp_path / "notes.txt").write_text("not a credentials file")
    monkeypatch.setenv("NEXUS_ACCOUNT_MAP", str(tmp_path))
    assert account_map() == {"a.example": "acc_1", "localhost:3000": "acc_2"}


@pytest.mark.parametrize("content,words", [
    ("a.example,acc_1\nb.example\n", ["line 2", "domain,account_id"]),
    ("a.example,acc_1,extra\n", ["line 1"]),
    ("a.example,\n", ["line 1"]),
    ("a.example,acc_1\na.example,acc_2\n", ["line 2", "a second account"]),
    (f'{{"accessToken": "{SECRET}"}}\n', ["line 1"]),  # a credentials file given by mistake
])
def test_a_malformed_mapping_file_is_one_line_naming_the_file_and_line(content, words, tmp_path, database_url):
    path = tmp_path / "map.csv"
    path.write_text(content)
    result = run_script(PROJECT_ROOT, "migrate", "backfill", "005", DATABASE_URL=database_url,
                        NEXUS_ACCOUNT_MAP=str(path))
    assert_one_line_error(result, "NEXUS_ACCOUNT_MAP", str(path), *words)


@pytest.mark.parametrize("content", [f'{{"accessToken": "{SECRET}", ', f'{{"accountId": 5, "key": "{SECRET}"}}'])
def test_a_bad_credentials_file_is_named_and_its_secrets_never_shown(content, tmp_path, database_url):
    (tmp_path / "a.example.credentials.json").write_text(content)
    result = run_script(PROJECT_ROOT, "migrate", "backfill", "005", DATABASE_URL=database_url,
                        NEXUS_ACCOUNT_MAP=str(tmp_path))
    assert_one_line_error(result, "NEXUS_ACCOUNT_MAP", "a.example.credentials.json")


def test_a_missing_path_is_one_line(database_url, tmp_path):
    result = run_script(PROJECT_ROOT, "migrate", "backfill", "005", DATABASE_URL=database_url,
                        NEXUS_ACCOUNT_MAP=str(tmp_path / "nowhere"))
    assert_one_line_error(result, "NEXUS_ACCOUNT_MAP", "no such file or directory")


def test_005_fills_accounts_from_the_credentials_directory(stored, db, database_url, tmp_path):  # noqa: F811
    folder = tmp_path / "credentials"
    folder.mkdir()
    credentials(folder, "a.example", accountId="acc_from_file")
    assert run_script(PROJECT_ROOT, "migrate", "apply", "--batch", DATABASE_URL=database_url).returncode == 0
    result = run_script(PROJECT_ROOT, "migrate", "backfill", "005", DATABASE_URL=database_url,
                        NEXUS_ACCOUNT_MAP=str(folder))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    got = read(db)
    for row in stored.rows:
        want = row["account_id"] or ("acc_from_file" if row["domain"] == "a.example" else None)
        assert got[row["request_id"]]["account_id"] == want
