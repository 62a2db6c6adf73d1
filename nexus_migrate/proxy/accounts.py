"""The operator's mapping of domains to accounts, for 005's backfill of account_id.

NEXUS_ACCOUNT_MAP names either
- a file of `domain,account_id` lines (blank lines and lines starting with #
  are skipped; spaces around each field are dropped), or
- the proxy's credentials directory: each `<domain>.credentials.json` there
  holds that domain's `accountId`. Those files also hold API keys and OAuth
  tokens: only accountId is read, and no message ever quotes a file's content
  (nor, for a malformed line of a mapping file, the line: a credentials file
  given by mistake must not end up on a terminal or in a CI log).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OperatorError

SETTING = "NEXUS_ACCOUNT_MAP"
CREDENTIALS_SUFFIX = ".credentials.json"
MIGRATION = "005-populate-account-ids"


def account_map() -> dict[str, str] | None:
    """{domain: account_id} from NEXUS_ACCOUNT_MAP; None when it is not set."""
    value = os.environ.get(SETTING, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        return _from_credentials(path)
    if path.is_file():
        return _from_file(path)
    raise OperatorError(f"{SETTING}={value}: no such file or directory (a file of domain,account_id lines, "
                        f"or the proxy's credentials directory)")


def _from_file(path: Path) -> dict[str, str]:
    mapping: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"{SETTING}: cannot read {path}: {type(exc).__name__}") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != 2 or not all(fields) or any(c.isspace() for c in fields[0]):
            raise OperatorError(f"{SETTING}: {path} line {number} is not `domain,account_id`")
        domain, account = fields
        if mapping.get(domain, account) != account:
            raise OperatorError(f"{SETTING}: {path} line {number} gives {domain} a second account")
        mapping[domain] = account
    return mapping


def _from_credentials(folder: Path) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for path in sorted(folder.glob(f"*{CREDENTIALS_SUFFIX}")):
        domain = path.name[:-len(CREDENTIALS_SUFFIX)]
        try:
            credentials = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            # The exception's text could quote the file: only its kind is told.
            raise OperatorError(f"{SETTING}: {path} is not a readable JSON credentials file "
                                f"({type(exc).__name__})") from None
        account = credentials.get("accountId") if isinstance(credentials, dict) else None
        if account is None:
            continue  # the proxy writes no account for such a domain either
        if not isinstance(account, str) or not account.strip():
            raise OperatorError(f"{SETTING}: the accountId of {path} is not a text")
        mapping[domain] = account.strip()
    return mapping


def params() -> dict:
    """The mapping as the rule's parameters: two arrays, domains and their accounts."""
    mapping = account_map() or {}
    return {"domains": list(mapping), "accounts": list(mapping.values())}


def without_map(conn) -> str | None:
    """None when a mapping is given (the backfill runs); otherwise the one
    line that says how many rows have no account and how to fill them."""
    if account_map() is not None:
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_requests WHERE account_id IS NULL")
        missing = cur.fetchone()[0]
    return (f"005 accounts: not filled, {SETTING} is not set; {missing:,} rows have no account_id. To fill them: "
            f"{SETTING}=FILE (domain,account_id lines) or DIR (the proxy's credentials) "
            f"scripts/migrate backfill {MIGRATION}")
