"""migration(*steps): a migration's steps registered with yoyo; rendered_sql:
what a step sends to the server, as scripts/migrate sql and lint show it."""

from __future__ import annotations

from yoyo import group, step

from ..errors import one_line_when_uncaught
from .data_loss import DataLossGuard
from .lock_retries import set_lock_timeout
from .settings import lock_timeout_ms


def migration(*steps) -> list:
    """Register steps with yoyo, in order, as one group guarded against data loss."""
    one_line_when_uncaught()  # a refusal under plain yoyo: one line, as under scripts/migrate
    group([step(s.apply, s.rollback) for s in steps] + [step(None, DataLossGuard(steps))])
    return list(steps)


def rendered_sql(step, direction: str) -> str:
    """The SQL that step sends to the server in direction ('apply' or
    'rollback'), as it sends it: what runs in a transaction inside its own
    BEGIN ... COMMIT under the lock_timeout in force; what runs outside one as a
    bare statement. Empty when the step runs nothing that way. (Not shown: the
    retries after a lock timeout, and the catalog look-ups a step makes first.)"""
    rendered = []
    for statement in step.statements(direction):
        sql = statement.sql.lstrip("\r\n").rstrip().rstrip(";").rstrip()
        if statement.in_transaction:
            rendered.append(f"BEGIN;\n{set_lock_timeout(lock_timeout_ms())};\n{sql};\nCOMMIT;")
        else:
            rendered.append(f"{sql};")
    return "\n".join(rendered)
