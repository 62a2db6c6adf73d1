"""The parameters of the proxy's statements (nexus_migrate/proxy/statements.py) for
the requests the benchmark writes while it measures: bodies of about 3 KB and
responses of about 1 KB, as the seeded rows have."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from psycopg2.extras import Json

SYSTEM_PROMPT = "You are a coding assistant working in a terminal. " * 20
MODEL = "claude-sonnet-4-20250514"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01",
           "user-agent": "claude-cli/1.0.0 (external, cli)", "x-api-key": "[redacted]"}
# The older proxy's key hash fits the VARCHAR(50) that 006 widens; today's
# proxy stores a SHA-256 hex digest, 64 characters.
OLDER_API_KEY_HASH = hashlib.md5(b"benchmark key").hexdigest()
API_KEY_HASH = hashlib.sha256(b"benchmark key").hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uuid_of(text: str) -> uuid.UUID:
    """The uuid that md5(text)::uuid gives in SQL."""
    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


@dataclass
class Conversation:
    """Where a conversation stands: the next request continues it."""

    conversation_id: str
    domain: str
    branch_id: str = "main"
    current_hash: str | None = None  # of its last request; None before the first
    message_count: int = 0  # of its last request
    last_request_id: str | None = None

    @property
    def next_message_count(self) -> int:
        return self.message_count + 2 if self.current_hash else 1  # a reply, and the next question


def request_body(request_id: uuid.UUID, model: str = MODEL) -> dict:
    text = (request_id.hex + " ") * 18
    return {"model": model, "max_tokens": 8192, "system": SYSTEM_PROMPT,
            "messages": [{"role": role, "content": text} for role in ("user", "assistant", "user")]}


def older_insert(request_id: uuid.UUID, conversation: Conversation) -> dict:
    """INSERT_REQUEST_002's parameters: the next request of conversation, as
    the proxy of 002's time wrote it."""
    return {"request_id": str(request_id), "timestamp": "now", "domain": conversation.domain,
            "headers": Json(HEADERS), "body": Json(request_body(request_id)), "api_key_hash": OLDER_API_KEY_HASH,
            "model": MODEL, "request_type": "inference", "current": sha256(request_id.bytes),
            "parent": conversation.current_hash, "conversation_id": conversation.conversation_id,
            "branch_id": conversation.branch_id, "message_count": conversation.next_message_count}


def todays_insert(request_id: uuid.UUID, conversation: Conversation, account_id: str) -> dict:
    """INSERT_REQUEST's parameters: the next request of conversation, as
    today's proxy writes it (21 columns)."""
    return {**older_insert(request_id, conversation), "account_id": account_id, "api_key_hash": API_KEY_HASH,
            "system_hash": sha256(SYSTEM_PROMPT.encode()), "parent_task_request_id": None, "is_subtask": False,
            "task_tool_invocation": None, "parent_request_id": conversation.last_request_id}


def advance(conversation: Conversation, request_id: uuid.UUID) -> None:
    """The conversation after its request request_id was recorded."""
    conversation.message_count = conversation.next_message_count
    conversation.current_hash = sha256(request_id.bytes)
    conversation.last_request_id = str(request_id)


def task_calls(request_id: uuid.UUID) -> list[dict]:
    """The Task tool call a response makes, as the proxy stores it."""
    return [{"id": f"toolu_{request_id.hex[:24]}", "name": "Task",
             "input": {"description": "Look into it", "prompt": f"Find where {request_id.hex} is handled"}}]


def response(request_id: uuid.UUID, calls: list[dict] | None = None) -> dict:
    """UPDATE_RESPONSE's parameters: a response of about 1 KB, with the
    Task calls given."""
    n = int(request_id.hex[:6], 16)
    input_tokens, output_tokens = 500 + n % 20000, 20 + n % 2000
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    content = [{"type": "text", "text": (request_id.hex[::-1] + " ") * 24}]
    content += [{"type": "tool_use", **call} for call in calls or ()]
    return {"request_id": str(request_id), "status": 200,
            "headers": Json({"content-type": "application/json", "request-id": f"req_{request_id.hex}"}),
            "body": Json({"id": f"msg_{request_id.hex}", "type": "message", "role": "assistant", "model": MODEL,
                          "content": content, "usage": usage}),
            "streaming": False, "input": input_tokens, "output": output_tokens, "first_token_ms": 100 + n % 900,
            "duration_ms": 300 + n % 30000, "error": None, "tools": len(calls or ()),
            "cache_creation": n % 2000, "cache_read": n % 40000, "usage": Json(usage)}
