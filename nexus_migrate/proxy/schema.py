"""The schema each migration promises, written as data.

This is the contract that the proxy and the dashboard rely on, written as data
rather than SQL, so that it is a witness of what the migrations build that is
independent of them. verify.py holds a live database against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    type: str  # as format_type() renders it
    not_null: bool = False
    default: str | None = None  # as pg_get_expr() renders it


@dataclass(frozen=True)
class Index:
    table: str
    keys: tuple[str, ...]  # as pg_get_indexdef(index, n, true) renders each key, then DESC if so
    include: tuple[str, ...] = ()
    where: str | None = None  # as pg_get_expr() renders the predicate
    unique: bool = False
    method: str = "btree"  # pg_am.amname

    def served_by(self, other: Index) -> bool:
        """other answers every query this index does, as cheaply: same table,
        same key columns in the same order (in either direction), same included
        columns, unique if this one is, and the same predicate. A whole-table
        index also serves a partial one that only leaves out its first key's
        NULLs, which no look-up on that key finds anyway."""
        only_nulls_left_out = (self.where == f"{_columns(self.keys)[0]} IS NOT NULL" and other.where is None
                               and not self.unique)
        return (other.table == self.table and other.method == self.method and _columns(other.keys) == _columns(self.keys)
                and set(other.include) == set(self.include) and (other.where == self.where or only_nulls_left_out)
                and (other.unique or not self.unique))


def _columns(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(key.removesuffix(" DESC") for key in keys)


@dataclass(frozen=True)
class Trigger:
    table: str
    function: str  # as regprocedure renders it
    timing: str  # e.g. "BEFORE UPDATE FOR EACH ROW"


@dataclass(frozen=True)
class Promise:
    columns: dict[str, dict[str, Column]] = field(default_factory=dict)  # table -> column -> Column
    # table -> constraint name -> pg_get_constraintdef(); another name with the same definition counts
    constraints: dict[str, dict[str, str]] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    retires: tuple[str, ...] = ()  # indexes of earlier migrations that this one drops
    views: dict[str, dict[str, Column]] = field(default_factory=dict)  # materialized view -> column -> Column
    functions: tuple[str, ...] = ()  # as regprocedure renders the signature
    triggers: dict[str, Trigger] = field(default_factory=dict)
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type -> its labels, in order
    comments: tuple[str, ...] = ()  # "table" or "table.column"


INT = "integer"
TSTZ = "timestamp with time zone"


def varchar(n: int) -> str:
    return f"character varying({n})"


PROMISES: dict[str, Promise] = {
    "000-init-database": Promise(
        columns={
            "api_requests": {
                "request_id": Column("uuid", not_null=True),
                "timestamp": Column(TSTZ, not_null=True),
                "domain": Column(varchar(255), not_null=True),
                "method": Column(varchar(10), not_null=True),
                "path": Column(varchar(1024), not_null=True),
                "headers": Column("jsonb", not_null=True),
                "body": Column("jsonb"),
                "request_type": Column(varchar(50)),
                "api_key_id": Column(varchar(50)),
                "api_key_hash": Column(varchar(50)),
                "model": Column(varchar(100)),
                "ip_address": Column(varchar(45)),
                "response_status": Column(INT),
                "response_headers": Column("jsonb"),
                "response_body": Column("jsonb"),
                "response_streaming": Column("boolean", default="false"),
                "duration_ms": Column(INT),
                "first_token_ms": Column(INT),
                "input_tokens": Column(INT),
                "output_tokens": Column(INT),
                "total_tokens": Column(INT, default="0"),
                "cache_creation_input_tokens": Column(INT, default="0"),
                "cache_read_input_tokens": Column(INT, default="0"),
                "usage_data": Column("jsonb"),
                "tool_call_count": Column(INT, default="0"),
                "error": Column("text"),
                "completed_at": Column(TSTZ),
                "created_at": Column(TSTZ, default="now()"),
            },
            "streaming_chunks": {
                "id": Column(INT, not_null=True, default="nextval('streaming_chunks_id_seq'::regclass)"),
                "request_id": Column("uuid", not_null=True),
                "chunk_index": Column(INT, not_null=True),
                "timestamp": Column(TSTZ, not_null=True),
                "data": Column("text", not_null=True),
                "token_count": Column(INT, default="0"),
                "created_at": Column(TSTZ, default="now()"),
            },
        },
        constraints={
            "api_requests": {"api_requests_pkey": "PRIMARY KEY (request_id)"},
            "streaming_chunks": {
                "streaming_chunks_pkey": "PRIMARY KEY (id)",
                "streaming_chunks_request_id_fkey":
                    "FOREIGN KEY (request_id) REFERENCES api_requests(request_id) ON DELETE CASCADE",
                "streaming_chunks_request_id_chunk_index_key": "UNIQUE (request_id, chunk_index)",
            },
        },
        indexes={
            "idx_api_requests_domain": Index("api_requests", ("domain",)),
            "idx_api_requests_timestamp": Index("api_requests", ("\"timestamp\"",)),
            "idx_api_requests_model": Index("api_requests", ("model",)),
            "idx_api_requests_request_type": Index("api_requests", ("request_type",)),
            "idx_hourly_stats_hour_domain": Index("hourly_stats", ("hour DESC", "domain")),
            "idx_hourly_stats_hour_domain_model": Index(
                "hourly_stats", ("hour", "domain", "model"), unique=True
            ),
        },
        views={
            "hourly_stats": {
                "hour": Column(TSTZ),
                "domain": Column(varchar(255)),
                "model": Column(varchar(100)),
                "request_count": Column("bigint"),
                "total_input_tokens": Column("bigint"),
                "total_output_tokens": Column("bigint"),
                "total_cache_creation_tokens": Column("bigint"),
                "total_cache_read_tokens": Column("bigint"),
                "avg_response_time": Column("numeric"),
                "total_tool_calls": Column("bigint"),
            },
        },
        functions=("refresh_hourly_stats()",),
        comments=(
            "api_requests",
            "api_requests.input_tokens",
            "api_requests.output_tokens",
            "api_requests.total_tokens",
            "api_requests.cache_creation_input_tokens",
            "api_requests.cache_read_input_tokens",
            "api_requests.usage_data",
            "streaming_chunks",
            "hourly_stats",
        ),
    ),
    "001-add-conversation-tracking": Promise(
        columns={
            "api_requests": {
                "current_message_hash": Column("character(64)"),
                "parent_message_hash": Column("character(64)"),
                "conversation_id": Column("uuid"),
                "branch_id": Column(varchar(255), default="'main'::character varying"),
                "message_count": Column(INT, default="0"),
            },
        },
        indexes={
            "idx_requests_current_message_hash": Index("api_requests", ("current_message_hash",)),
            "idx_requests_parent_message_hash": Index("api_requests", ("parent_message_hash",)),
            "idx_requests_conversation_id": Index("api_requests", ("conversation_id",)),
            "idx_requests_branch_id": Index("api_requests", ("branch_id",)),
            "idx_requests_conversation_branch": Index("api_requests", ("conversation_id", "branch_id")),
            "idx_requests_message_count": Index("api_requests", ("message_count",)),
        },
        comments=tuple(
            f"api_requests.{name}"
            for name in ("current_message_hash", "parent_message_hash", "conversation_id",
                         "branch_id", "message_count")
        ),
    ),
    "002-optimize-conversation-indexes": Promise(
        indexes={
            "idx_requests_conversation_timestamp": Index(
                "api_requests", ("conversation_id", "\"timestamp\""),
                where="conversation_id IS NOT NULL",
            ),
            "idx_requests_conversation_detail": Index(
                "api_requests", ("conversation_id", "\"timestamp\""),
                include=("request_id", "domain", "model", "total_tokens", "branch_id"),
                where="conversation_id IS NOT NULL",
            ),
        },
    ),
    "003-add-subtask-tracking": Promise(
        columns={
            "api_requests": {
                "parent_task_request_id": Column("uuid"),
                "is_subtask": Column("boolean", default="false"),
                "task_tool_invocation": Column("jsonb"),
            },
        },
        constraints={
            "api_requests": {
                "api_requests_parent_task_request_id_fkey": "FOREIGN KEY (parent_task_request_id) "
                                                            "REFERENCES api_requests(request_id) ON DELETE SET NULL",
            },
        },
        indexes={
            "idx_requests_parent_task_request_id": Index(
                "api_requests", ("parent_task_request_id",), where="parent_task_request_id IS NOT NULL"),
            "idx_requests_task_invocation_timestamp": Index(
                "api_requests", ("\"timestamp\"",), where="task_tool_invocation IS NOT NULL"),
        },
        comments=tuple(f"api_requests.{name}"
                       for name in ("parent_task_request_id", "is_subtask", "task_tool_invocation")),
    ),
    "004-optimize-conversation-window-functions": Promise(retires=("idx_requests_conversation_timestamp",)),
    "005-populate-account-ids": Promise(
        columns={"api_requests": {"account_id": Column(varchar(255))}},
        indexes={
            "idx_requests_account_timestamp": Index(
                "api_requests", ("account_id", "\"timestamp\" DESC"), where="account_id IS NOT NULL"),
        },
        comments=("api_requests.account_id",),
    ),
    "006-split-conversation-hashes": Promise(
        # api_key_hash is 000's column, widened here to hold a SHA-256 hex digest
        columns={"api_requests": {"system_hash": Column(varchar(64)), "api_key_hash": Column(varchar(64))}},
        comments=("api_requests.system_hash",),
    ),
    "007-add-parent-request-id": Promise(
        columns={"api_requests": {"parent_request_id": Column("uuid")}},
        constraints={
            "api_requests": {
                "api_requests_parent_request_id_fkey": "FOREIGN KEY (parent_request_id) "
                                                       "REFERENCES api_requests(request_id) ON DELETE SET NULL",
                "chk_parent_request_not_self": "CHECK ((parent_request_id <> request_id))",
            },
        },
        indexes={
            "idx_api_requests_parent_request_id": Index(
                "api_requests", ("parent_request_id",), where="parent_request_id IS NOT NULL"),
        },
        comments=("api_requests.parent_request_id",),
    ),
    "008-subtask-updates-and-task-indexes": Promise(
        columns={
            "api_requests_subtask_moves": {
                "request_id": Column("uuid", not_null=True),
                "conversation_id": Column("uuid"),
                "branch_id": Column(varchar(255)),
            },
        },
        constraints={"api_requests_subtask_moves": {"api_requests_subtask_moves_pkey": "PRIMARY KEY (request_id)"}},
        comments=("api_requests_subtask_moves",),
        indexes={"idx_api_requests_domain_newest_first": Index("api_requests", ("domain", "\"timestamp\" DESC"))},
    ),
    "009-add-response-body-gin-index": Promise(),
    "010-add-temporal-awareness-indexes": Promise(),
    "011-add-conversation-analyses": Promise(
        columns={
            "conversation_analyses": {
                "id": Column("bigint", not_null=True, default="nextval('conversation_analyses_id_seq'::regclass)"),
                "conversation_id": Column("uuid", not_null=True),
                "branch_id": Column(varchar(255), not_null=True, default="'main'::character varying"),
                "status": Column("conversation_analysis_status", not_null=True,
                                 default="'pending'::conversation_analysis_status"),
                "model_used": Column(varchar(255), default="'gemini-2.5-pro'::character varying"),
                "analysis_content": Column("text"),
                "analysis_data": Column("jsonb"),
                "raw_response": Column("jsonb"),
                "error_message": Column("text"),
                "retry_count": Column(INT, default="0"),
                "generated_at": Column(TSTZ),
                "processing_duration_ms": Column(INT),
                "prompt_tokens": Column(INT),
                "completion_tokens": Column(INT),
                "created_at": Column(TSTZ, not_null=True, default="now()"),
                "updated_at": Column(TSTZ, not_null=True, default="now()"),
                "completed_at": Column(TSTZ),
                "custom_prompt": Column("text"),
            },
            "analysis_audit_log": {
                "id": Column(INT, not_null=True, default="nextval('analysis_audit_log_id_seq'::regclass)"),
                "event_type": Column(varchar(50), not_null=True),
                "outcome": Column(varchar(50), not_null=True),
                "conversation_id": Column("uuid", not_null=True),
                "branch_id": Column(varchar(255), not_null=True),
                "domain": Column(varchar(255), not_null=True),
                "request_id": Column(varchar(255), not_null=True),
                "user_context": Column("jsonb", default="'{}'::jsonb"),
                "metadata": Column("jsonb", default="'{}'::jsonb"),
                "timestamp": Column(TSTZ, not_null=True, default="now()"),
            },
        },
        constraints={
            "conversation_analyses": {
                "conversation_analyses_pkey": "PRIMARY KEY (id)",
                "conversation_analyses_conversation_id_branch_id_key": "UNIQUE (conversation_id, branch_id)",
            },
            "analysis_audit_log": {"analysis_audit_log_pkey": "PRIMARY KEY (id)"},
        },
        indexes={
            "idx_conversation_analyses_status": Index(
                "conversation_analyses", ("status",), where="status = 'pending'::conversation_analysis_status"),
        },
        functions=("conversation_analyses_set_updated_at()",),
        triggers={"set_timestamp_on_conversation_analyses": Trigger(
            "conversation_analyses", "conversation_analyses_set_updated_at()", "BEFORE UPDATE FOR EACH ROW")},
        enums={"conversation_analysis_status": ("pending", "processing", "completed", "failed")},
        comments=("conversation_analyses", "conversation_analyses.custom_prompt", "analysis_audit_log"),
    ),
    "012-drop-unused-indexes": Promise(retires=(
        "idx_api_requests_domain", "idx_requests_conversation_id", "idx_api_requests_model",
        "idx_api_requests_request_type", "idx_requests_branch_id", "idx_requests_message_count")),
}

def promised_index(name: str) -> Index:
    for promise in PROMISES.values():
        if name in promise.indexes:
            return promise.indexes[name]
    raise KeyError(f"no migration promises an index named {name}")


def promised_constraint(name: str) -> tuple[str, str]:
    """(table, definition) of the constraint a migration promises under name."""
    for promise in PROMISES.values():
        for table, constraints in promise.constraints.items():
            if name in constraints:
                return table, constraints[name]
    raise KeyError(f"no migration promises a constraint named {name}")


def promised(migration_ids) -> Promise:
    """The union of what the given migrations promise, less the indexes that
    a later one of them retires."""
    columns: dict = {}
    constraints: dict = {}
    indexes: dict = {}
    views: dict = {}
    functions: tuple = ()
    triggers: dict = {}
    enums: dict = {}
    comments: tuple = ()
    for mid in migration_ids:
        p = PROMISES[mid]
        for table, cols in p.columns.items():
            columns[table] = {**columns.get(table, {}), **cols}
        for table, defs in p.constraints.items():
            constraints[table] = {**constraints.get(table, {}), **defs}
        indexes.update(p.indexes)
        for name in p.retires:
            indexes.pop(name, None)
        views.update(p.views)
        functions += p.functions
        triggers.update(p.triggers)
        enums.update(p.enums)
        comments += p.comments
    return Promise(columns=columns, constraints=constraints, indexes=indexes, views=views, functions=functions,
                   triggers=triggers, enums=enums, comments=comments)
