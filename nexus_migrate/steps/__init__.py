"""How the migrations' SQL runs against a table the proxy writes every second.

A migration file lists its statements, each beside its undoing, through these
kinds of step (a module each; this package's face is all a migration imports):

- ddl(apply, rollback): a short transaction of its own, under a lock_timeout.
  A statement that needs a strong lock (ALTER TABLE, COMMENT, DROP, a foreign
  key) waits at most LOCK_TIMEOUT for it, so the proxy's writes queue behind it
  for no longer than that; then it gives up, sleeps and tries again, a bounded
  number of times, and finally stops with a message that says to re-run.
- index(create, drop): CREATE / DROP INDEX CONCURRENTLY, outside any
  transaction, so writes go on while the index builds. An INVALID index that an
  interrupted build left under the same name is dropped and built again; a valid
  index of the same structure under any name counts as present. A build that
  runs for a while prints its phase and progress from
  pg_stat_progress_create_index.
- constraint(add, drop): ALTER TABLE ... ADD CONSTRAINT ... NOT VALID under the
  lock_timeout (a catalog change: new rows are checked at once), then VALIDATE
  CONSTRAINT in a transaction of its own, which reads the whole table under a
  lock that blocks no read or write. A constraint of the same definition under
  any name counts as present; one of our name but another definition is
  replaced by ours in one statement.
- retired_index(drop, replaced_by=...): DROP INDEX CONCURRENTLY of an index an
  earlier migration built, once the index that serves its queries is valid (or
  at once, where no query uses it); the rollback builds it again with that
  migration's own statement.
- check(sql): a condition (a DO block that raises); nothing to undo. After the
  steps it checks what the migration promises; before them it can refuse a
  database that the migration must not touch.
- widen_varchar(table, column, length): raises a VARCHAR's limit where it is
  lower, which rewrites nothing; no undo (a wider column loses nothing).
- backfill(name, find=, update=, keep=, undo=): a rule applied to the rows
  of api_requests that still need it, in short batches by primary key, each
  its own transaction under the lock_timeout (see backfill.py); undo, where
  the rollback must restore what it overwrote, from what keep saved.

migration(*steps) registers them with yoyo as one group, which changes two
things in how yoyo treats a migration that runs outside a transaction:
- when a step fails, yoyo does not run the rollbacks of the steps before it.
  Every step is idempotent, so a re-run completes the migration; an undo would
  throw away finished index builds and could drop a table that held data.
- before any rollback statement runs, a guard refuses a rollback that would drop
  a table holding rows, a column holding values (or change its type), or a
  schema whose tables hold rows, unless the operator allows data loss in so
  many words (ALLOW_DATA_LOSS). It reads the rollbacks with PostgreSQL's own
  parser (sql_tree.py), so any spelling the server accepts is seen, and looks at
  every migration the run rolls back, so a refusal leaves all of them applied.

The lock retries that ddl steps and backfill batches share are in
lock_retries.py; the settings (NEXUS_LOCK_TIMEOUT_MS, NEXUS_LOCK_ATTEMPTS,
NEXUS_PROGRESS_SECONDS) in settings.py.
"""

from .backfill import Backfill, Rule, backfill, backfill_undo
from .check import Check, check
from .constraint import Constraint, constraint
from .data_loss import ALLOW_DATA_LOSS, ALLOW_DATA_LOSS_OPTION, DataLossRefused
from .ddl import Ddl, Widening, ddl, widen_varchar, widenings
from .index import Index, RetiredIndex, index, retired_index
from .lock_retries import LockNotGranted
from .migration import migration, rendered_sql
from .settings import lock_attempts, lock_timeout_ms

__all__ = [
    # what a migration is written with
    "migration", "ddl", "index", "constraint", "retired_index", "check", "widen_varchar", "backfill",
    "backfill_undo",
    # the step kinds themselves, for the commands that show or rehearse them
    "Ddl", "Index", "Constraint", "RetiredIndex", "Check", "Widening", "Backfill", "Rule", "widenings",
    "rendered_sql", "lock_timeout_ms", "lock_attempts", "LockNotGranted",
    "ALLOW_DATA_LOSS", "ALLOW_DATA_LOSS_OPTION", "DataLossRefused",
]
