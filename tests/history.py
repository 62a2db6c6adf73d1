"""Proxy history with known answers, for the backfills of 003, 005, 007 and 008.

history() builds a few hundred rows as proxies of different times wrote them:
conversations with branches and retries (duplicate hashes), responses with
several Task calls, sub-task conversations started 5 s, 45 s, 2 h and 25 h
after their parent, with system-reminder blocks in string and array content,
the same prompt in another domain, sub-tasks today's proxy already linked and
numbered, one that a proxy of 003's time linked without moving it.

expected() computes, in Python and from the rows alone, what each backfilled
column must hold once the migrations ran: the rules of docs/design.md
("Backfills") written again, independently of the migrations' SQL.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from psycopg2.extras import Json, execute_values

# What the backfills write, and where the proxy's own values must survive.
BACKFILLED = ("task_tool_invocation", "parent_task_request_id", "is_subtask", "parent_request_id",
              "conversation_id", "branch_id", "account_id")
START = datetime(2026, 10, 1, 9, 0, tzinfo=timezone.utc)
ACCOUNT_MAP = {"a.example": "acc_alpha", "c.example:3000": "acc_gamma"}  # b.example has none
REMINDER = "<system-reminder>\nThe date is 2026-10-01.\n</system-reminder>"


def sha(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    named: dict[str, uuid.UUID] = field(default_factory=dict)  # scenario name -> request id
    rng: random.Random = field(default_factory=lambda: random.Random(2026))

    def add(self, *, at: datetime, domain: str, messages: list, conversation=None, branch="main",
            content=None, response=True, name: str | None = None, request_id=None, **written) -> uuid.UUID:
        """A request as the proxy stored it: messages alternate user and
        assistant texts (or content objects); hashes chain the turns."""
        request_id = request_id or uuid.UUID(int=self.rng.getrandbits(128), version=4)
        body_messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": m} for i, m in enumerate(messages)]
        if isinstance(response, dict) or response is None:
            response_body = response
        else:
            response_body = {"content": content if content is not None else [{"type": "text", "text": "ok"}]}
        row = {"request_id": request_id, "timestamp": at, "domain": domain,
               "body": {"model": "claude-sonnet-4", "messages": body_messages},
               "response_body": response_body,
               "current_message_hash": sha(messages),
               "parent_message_hash": sha(messages[:-2]) if len(messages) > 1 else None,
               "conversation_id": conversation, "branch_id": branch, "message_count": len(messages),
               "account_id": None, "parent_task_request_id": None, "is_subtask": False,
               "task_tool_invocation": None, "parent_request_id": None}
        row.update(written)
        self.rows.append(row)
        if name:
            self.named[name] = request_id
        return request_id


def task_call(prompt: str, n: int, **more) -> dict:
    return {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "Task",
            "input": {"description": f"sub-task {n}", "prompt": prompt, "subagent_type": "general", **more}}


def conversation(h: History, *, at, domain, turns: int, name: str, **kwargs) -> list[uuid.UUID]:
    """A plain conversation of turns requests, a minute apart."""
    conv = uuid.UUID(int=h.rng.getrandbits(128), version=4)
    messages, ids = [], []
    for k in range(turns):
        messages = messages + ([f"answer {k} of {name}"] if k else []) + [f"question {k} of {name}"]
        ids.append(h.add(at=at + timedelta(minutes=k), domain=domain, messages=messages, conversation=conv,
                         name=f"{name}.{k}", **kwargs))
    return ids


def subtask(h: History, *, at, domain, first_content, name: str, follow_ups: int = 1, conversation_id="own",
            **written) -> uuid.UUID:
    """A sub-task's conversation as a proxy before 003 wrote it: its first
    request is one user message, in a conversation of its own."""
    conv = uuid.UUID(int=h.rng.getrandbits(128), version=4) if conversation_id == "own" else conversation_id
    messages = [first_content]
    start = h.add(at=at, domain=domain, messages=messages, conversation=conv, name=name, **written)
    for k in range(follow_ups):
        messages = messages + [f"sub-task answer {k}", f"tool result {k} of {name}"]
        h.add(at=at + timedelta(seconds=20 * (k + 1)), domain=domain, messages=messages, conversation=conv,
              name=f"{name}.{k + 1}", **{key: v for key, v in written.items() if key != "parent_request_id"})
    return start


def history() -> History:
    h = History()
    t = START

    # Plain conversations in three domains, some with retries and branches.
    for n in range(12):
        conversation(h, at=t + timedelta(hours=n), domain=["a.example", "b.example", "c.example:3000"][n % 3],
                     turns=3 + n % 4, name=f"plain{n}")
    retried = conversation(h, at=t, domain="a.example", turns=3, name="retried")
    first = h.rows[[r["request_id"] for r in h.rows].index(retried[1])]
    # the second turn sent again (a retry: the same hashes), once later and once at the same moment
    h.add(at=first["timestamp"] + timedelta(seconds=5), domain="a.example",
          messages=[m["content"] for m in first["body"]["messages"]],
          conversation=first["conversation_id"], name="retry.later")
    h.add(at=first["timestamp"] + timedelta(seconds=5), domain="a.example",
          messages=[m["content"] for m in first["body"]["messages"]],
          conversation=first["conversation_id"], name="retry.same_time")
    third = h.rows[[r["request_id"] for r in h.rows].index(retried[2])]
    third["timestamp"] = first["timestamp"] + timedelta(seconds=30)  # its parent: the latest retry before it
    # a branch: another answer to the first turn
    h.add(at=t + timedelta(minutes=5), domain="a.example",
          messages=["question 0 of retried", "answer 1 of retried", "another question"],
          conversation=first["conversation_id"], branch="branch_1", name="branch")
    # a later row with the parent's hash (it must not be the parent), and one in another domain
    h.add(at=t + timedelta(hours=30), domain="a.example", messages=["question 0 of retried"],
          conversation=first["conversation_id"], name="same_hash_later")

    # Parents that call the Task tool, in a.example; the proxy of their time
    # did not store the calls (task_tool_invocation NULL).
    parent_conv = conversation(h, at=t + timedelta(days=1), domain="a.example", turns=4, name="parent")
    rows = {r["request_id"]: r for r in h.rows}
    prompts = {f"p{n}": f"Look for the bug number {n} in the repository and report it." for n in range(12)}
    calls_1 = [{"type": "text", "text": "I'll start two agents."}, task_call(prompts["p0"], 1),
               {"type": "tool_use", "id": "toolu_x", "name": "Read", "input": {"path": "a.py"}},
               task_call(prompts["p1"], 2), task_call(prompts["p2"], 3)]
    rows[parent_conv[1]]["response_body"] = {"content": calls_1}
    calls_2 = [task_call(prompts["p3"], 4), task_call(prompts["p4"], 5), task_call(prompts["p5"], 6),
               task_call("Part one\nPart two", 16)]
    rows[parent_conv[2]]["response_body"] = {"content": calls_2}
    parent_1, parent_2 = rows[parent_conv[1]], rows[parent_conv[2]]
    p1_at, p2_at = parent_1["timestamp"], parent_2["timestamp"]

    # Sub-task starts, each a conversation of its own.
    subtask(h, at=p1_at + timedelta(seconds=5), domain="a.example", first_content=prompts["p0"], name="st.5s",
            follow_ups=2)
    subtask(h, at=p1_at + timedelta(seconds=45), domain="a.example",  # array content, reminder block first
            first_content=[{"type": "text", "text": REMINDER}, {"type": "text", "text": prompts["p1"]}],
            name="st.45s")
    subtask(h, at=p1_at + timedelta(hours=2), domain="a.example",  # reminders after the text, any case
            first_content=prompts["p2"] + "\n" + REMINDER.upper() + " " + REMINDER, name="st.2h")
    subtask(h, at=p2_at + timedelta(seconds=3), domain="a.example",
            first_content=[{"type": "text", "text": prompts["p3"] + " " + REMINDER}, {"type": "image"}],
            name="st.p3", follow_ups=0)
    # two text items: joined by a newline (not the prompt: not linked)
    subtask(h, at=p2_at + timedelta(seconds=4), domain="a.example",
            first_content=[{"type": "text", "text": "Look for the bug"}, {"type": "text", "text": "number 4"}],
            name="st.two_texts", follow_ups=0)
    # two text items and a reminder item: the texts joined by a newline
    subtask(h, at=p2_at + timedelta(seconds=5), domain="a.example",
            first_content=[{"type": "text", "text": "Part one"}, {"type": "text", "text": "  " + REMINDER},
                           {"type": "text", "text": "Part two"}], name="st.joined", follow_ups=0)
    # a reminder first in string content: the newline after it stays, so no match
    subtask(h, at=p2_at + timedelta(seconds=6), domain="a.example",
            first_content=REMINDER + "\n" + prompts["p4"], name="st.reminder_first", follow_ups=0)
    subtask(h, at=p2_at + timedelta(hours=25), domain="a.example", first_content=prompts["p5"],
            name="st.25h", follow_ups=1)
    subtask(h, at=p2_at + timedelta(seconds=8), domain="b.example", first_content=prompts["p5"],
            name="st.other_domain", follow_ups=0)
    subtask(h, at=p2_at + timedelta(seconds=9), domain="a.example", first_content=prompts["p4"],
            name="st.no_conversation", follow_ups=0, conversation_id=None)
    # only a reminder: the user text is empty, not a start
    subtask(h, at=p2_at + timedelta(seconds=10), domain="a.example", first_content=REMINDER,
            name="st.empty", follow_ups=0)

    # The same prompt called 90 s and 30 s before one start: the earliest call is its parent.
    dup = conversation(h, at=t + timedelta(days=2), domain="c.example:3000", turns=3, name="dup")
    rows = {r["request_id"]: r for r in h.rows}
    rows[dup[0]]["response_body"] = {"content": [task_call(prompts["p6"], 7)]}
    rows[dup[1]]["response_body"] = {"content": [task_call(prompts["p6"], 8), task_call(prompts["p7"], 9)]}
    at_dup = rows[dup[0]]["timestamp"]
    subtask(h, at=at_dup + timedelta(seconds=90), domain="c.example:3000", first_content=prompts["p6"],
            name="st.dup", follow_ups=1)
    subtask(h, at=rows[dup[1]]["timestamp"] + timedelta(seconds=2), domain="c.example:3000",
            first_content=prompts["p7"], name="st.p7", follow_ups=0)
    # a call after the start holds its prompt too: never its parent
    rows[dup[2]]["response_body"] = {"content": [task_call(prompts["p6"], 10)]}

    # Today's proxy: a conversation whose parent stored its own calls and
    # linked its sub-tasks (subtask_1, subtask_2 in its own conversation);
    # then history sub-tasks of the same conversation, numbered after them.
    live = conversation(h, at=t + timedelta(days=3), domain="a.example", turns=3, name="live",
                        account_id="acc_proxy")
    rows = {r["request_id"]: r for r in h.rows}
    live_conv = rows[live[0]]["conversation_id"]
    live_calls = [task_call(prompts["p8"], 11), task_call(prompts["p9"], 12)]
    rows[live[0]].update(response_body={"content": live_calls},
                         task_tool_invocation=[{k: c[k] for k in ("id", "name", "input")} for c in live_calls])
    for n, prompt in enumerate(("p8", "p9"), 1):
        subtask(h, at=rows[live[0]]["timestamp"] + timedelta(seconds=n), domain="a.example",
                first_content=prompts[prompt], name=f"live.sub{n}", conversation_id=live_conv,
                branch=f"subtask_{n}", parent_task_request_id=live[0], is_subtask=True,
                parent_request_id=live[0], account_id="acc_proxy", follow_ups=1)
    # the proxy's habit: a later turn of a conversation with a sub-task marked as one
    rows[live[2]].update(is_subtask=True, parent_task_request_id=live[0])
    # a history call of the same conversation: its sub-tasks join it as subtask_3 and subtask_4
    rows[live[1]]["response_body"] = {"content": [task_call(prompts["p10"], 13), task_call(prompts["p11"], 14)]}
    subtask(h, at=rows[live[1]]["timestamp"] + timedelta(seconds=30), domain="a.example",
            first_content=prompts["p11"], name="st.live_second", follow_ups=1)
    subtask(h, at=rows[live[1]]["timestamp"] + timedelta(seconds=2), domain="a.example",
            first_content=prompts["p10"], name="st.live_first", follow_ups=0)

    # A proxy of 003's time linked this one but left it in its own conversation.
    subtask(h, at=p2_at + timedelta(seconds=12), domain="a.example", first_content="an older link",
            name="st.linked_003", parent_task_request_id=parent_conv[2], is_subtask=True, follow_ups=1)

    # Shapes left alone: content that is not an array, no response, and a
    # Task call stored in upstream's flat shape, which is kept as it is.
    misc = conversation(h, at=t + timedelta(days=4), domain="b.example", turns=3, name="misc")
    rows = {r["request_id"]: r for r in h.rows}
    rows[misc[0]]["response_body"] = {"content": "just text"}
    rows[misc[1]]["response_body"] = None
    rows[misc[2]].update(response_body={"content": [task_call("flat", 15)]},
                         task_tool_invocation=[{"id": "toolu_0015", "name": "Task", "prompt": "flat",
                                                "description": ""}])
    return h


COLUMNS = ("request_id", "timestamp", "domain", "method", "path", "headers", "body", "response_body",
           "current_message_hash", "parent_message_hash", "conversation_id", "branch_id", "message_count",
           "account_id", "parent_task_request_id", "is_subtask", "task_tool_invocation", "parent_request_id")


def store(conn, h: History) -> None:
    """The rows into api_requests, which must have the backfilled columns."""
    def value(row, column):
        if column == "method":
            return "POST"
        if column == "path":
            return "/v1/messages"
        if column == "headers":
            return Json({"content-type": "application/json"})
        v = row[column]
        if isinstance(v, uuid.UUID):
            return str(v)
        return Json(v) if isinstance(v, (dict, list)) else v
    with conn.cursor() as cur:
        execute_values(cur, f"INSERT INTO api_requests ({', '.join(COLUMNS)}) VALUES %s",
                       [tuple(value(r, c) for c in COLUMNS) for r in h.rows])


def read(conn) -> dict[uuid.UUID, dict]:
    """Every row's backfilled columns, by request id."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT request_id, {', '.join(BACKFILLED)} FROM api_requests")
        return {uuid.UUID(r[0]): _normal(dict(zip(BACKFILLED, r[1:]))) for r in cur.fetchall()}


def _normal(row: dict) -> dict:
    return {k: uuid.UUID(str(v)) if k in ("parent_task_request_id", "parent_request_id", "conversation_id")
            and v is not None else v for k, v in row.items()}


# ---- the rules, in Python -------------------------------------------------

REMINDER_BLOCK = re.compile(r"\s*<system-reminder>.*?</system-reminder>", re.I | re.S)


def user_text(body) -> str | None:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict) \
            or messages[0].get("role") != "user":
        return None
    content = messages[0].get("content")
    if isinstance(content, str):
        return REMINDER_BLOCK.sub("", content)
    if isinstance(content, list):
        texts = [REMINDER_BLOCK.sub("", item.get("text") or "") for item in content
                 if isinstance(item, dict) and item.get("type") == "text"]
        texts = [text for text in texts if text.strip()]
        return "\n".join(texts) if texts else None
    return None


def expected(h: History, account_map: dict[str, str] | None = ACCOUNT_MAP) -> dict[uuid.UUID, dict]:
    rows = {r["request_id"]: {k: (r[k] if k != "conversation_id" else r[k]) for k in r} for r in h.rows}
    key = lambda r: (r["timestamp"], r["request_id"])  # noqa: E731

    # 003: Task calls
    for r in rows.values():
        content = (r["response_body"] or {}).get("content") if isinstance(r["response_body"], dict) else None
        if r["task_tool_invocation"] is None and isinstance(content, list):
            calls = [{"id": c.get("id"), "name": c.get("name"), "input": c.get("input")} for c in content
                     if isinstance(c, dict) and c.get("type") == "tool_use" and c.get("name") == "Task"]
            if calls:
                r["task_tool_invocation"] = calls

    def first_of_conversation(r) -> bool:
        return r["conversation_id"] is None or not any(
            o["conversation_id"] == r["conversation_id"] and key(o) < key(r) for o in rows.values())

    # 003: sub-task links
    links = []
    for s in rows.values():
        text = user_text(s["body"])
        if s["parent_task_request_id"] is not None or not text or not first_of_conversation(s):
            continue
        parents = [p for p in rows.values()
                   if p["domain"] == s["domain"] and s["timestamp"] - timedelta(hours=24) < p["timestamp"] < s["timestamp"]
                   and isinstance(p["task_tool_invocation"], list)
                   and any(isinstance(c, dict) and isinstance(c.get("input"), dict) and c["input"].get("prompt") == text
                           for c in p["task_tool_invocation"])]
        if parents:
            links.append((s, min(parents, key=key)))
    for s, p in links:
        for r in rows.values():
            if r["parent_task_request_id"] is None and (r is s or (s["conversation_id"] is not None
                                                                    and r["conversation_id"] == s["conversation_id"])):
                r["parent_task_request_id"], r["is_subtask"] = p["request_id"], True

    # 005: accounts
    for r in rows.values():
        if r["account_id"] is None and account_map:
            r["account_id"] = account_map.get(r["domain"])

    # 007: parent requests
    found = {}
    for r in rows.values():
        if r["parent_request_id"] is not None:
            continue
        if r["parent_message_hash"] is not None:
            candidates = [p for p in rows.values()
                          if p["domain"] == r["domain"] and p["conversation_id"] is not None
                          and p["conversation_id"] == r["conversation_id"] and p["request_id"] != r["request_id"]
                          and p["timestamp"] <= r["timestamp"] and p["current_message_hash"] == r["parent_message_hash"]]
            if candidates:
                found[r["request_id"]] = max(candidates, key=key)["request_id"]
        elif r["parent_task_request_id"] is not None and len(r["body"]["messages"]) == 1 \
                and r["body"]["messages"][0]["role"] == "user":
            found[r["request_id"]] = r["parent_task_request_id"]
    for request_id, parent in found.items():
        rows[request_id]["parent_request_id"] = parent

    # 008: sub-tasks into their parent's conversation
    pending = [s for s in rows.values() if s["parent_task_request_id"] is not None
               and rows[s["parent_task_request_id"]]["conversation_id"] is not None
               and s["conversation_id"] != rows[s["parent_task_request_id"]]["conversation_id"]
               and first_of_conversation(s)]
    targets = {}
    for s in sorted(pending, key=key):
        targets.setdefault(rows[s["parent_task_request_id"]]["conversation_id"], []).append(s)
    moves = []
    for target, starts in targets.items():
        numbers = [int(m.group(1)) for r in rows.values() if r["conversation_id"] == target
                   for m in [re.match(r"subtask_(\d+)", r["branch_id"] or "")] if m]
        base = max(numbers, default=0)
        for n, s in enumerate(starts, 1):
            group = [r for r in rows.values() if r is s or (s["conversation_id"] is not None
                                                             and r["conversation_id"] == s["conversation_id"])]
            moves += [(r, target, f"subtask_{base + n}") for r in group]
    for r, target, branch in moves:
        r["conversation_id"], r["branch_id"] = target, branch

    return {request_id: {k: r[k] for k in BACKFILLED} for request_id, r in rows.items()}


def originals(h: History) -> dict[uuid.UUID, tuple]:
    """Each request's conversation and branch as the proxy wrote them."""
    return {r["request_id"]: (r["conversation_id"], r["branch_id"]) for r in h.rows}
