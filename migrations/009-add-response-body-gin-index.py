"""
009 add response body GIN index: nothing to build.

Upstream's 009 builds a GIN index over every response body, for the Task
look-ups' containment tests and for JSONPath queries. The proxy tests
response_body->'content' @> ..., which an index over response_body cannot
serve (only response_body @> ... could), and runs its JSONPath through
jsonb_path_exists(), a function no index serves. It would be the largest index
on the largest column, updated by every response, for no query; 008's
(domain, timestamp) index serves the look-up. The file stays, so that the
chain keeps upstream's numbers.
"""

from nexus_migrate.steps import migration

__depends__ = {"008-subtask-updates-and-task-indexes"}
__transactional__ = False

steps = migration()
