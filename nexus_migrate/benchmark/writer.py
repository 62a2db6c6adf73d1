"""The writer: a process of its own (so that its timings do not share our
GIL) that writes as the proxy does while a migration applies, and a sampler
of what its statements wait on.

The writer inserts a request every `every` seconds with the older proxy's
INSERT (the columns of 003 and later do not exist until they do, and an older
proxy runs on during a rolling upgrade). With respond_after, a second session
of it records each request's response that many seconds after the request
was due (UPDATE_RESPONSE), as the proxy does when the response has streamed:
an UPDATE blocks no insert, but one whose row another transaction locked
waits until that one commits. A statement's latency counts from when it was
due, so statements queued behind a blocked one count their wait, and a
response whose request was late is late too.

Asked to, a third session commits alone beside them every
LONE_COMMIT_EVERY seconds (COMMIT_ALONE): one WAL record and its commit, no
table, no lock, no page. Its time counts from when it was sent, since
nothing queues in front of it: it is what any commit waits for the WAL to
reach the disk, and what the writer's latency has beyond it is the writer's
own queue. It is not there unless asked for: a backfill's throttle counts
the sessions waiting for the WAL, and would count it too.
"""

from __future__ import annotations

import collections
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2

from ..proxy.statements import INSERT_REQUEST_002, UPDATE_RESPONSE
from . import traffic
from .checkpointer import CHECKPOINTER_STATE, ended, record
from .scratch import connect, sampling_every

WRITER_STATEMENT_TIMEOUT = "30s"
SETTLE_SECONDS = 1.0  # the writer runs this long before and after each apply
WRITER = "nexus-benchmark-writer"  # the application_name of its sessions
WAIT_SAMPLE_SECONDS = 0.01
NEW_CONVERSATION_EVERY = 64  # requests, when the writer starts conversations of its own
WRITER_DOMAIN = "writer.example.com"
FLUSH_WAIT_SECONDS = 10.0
LONE_COMMIT = "nexus-benchmark-lone-commit"  # the application_name of the session that commits alone
LONE_COMMIT_EVERY = 0.05
COMMIT_ALONE = f"SELECT pg_logical_emit_message(true, '{LONE_COMMIT}', '')"


@dataclass
class Written:
    """What a writer did, known once it stopped: (due, latency s, ok) of each
    insert, each response update and each lone commit (due: when it was
    sent), on the system-wide monotonic clock."""

    inserts: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    commits: list = field(default_factory=list)
    conversations: list | None = None  # where the conversations it continued stand

    def chart_series(self, origin: float) -> dict:
        """Each kind of statement's chart points (plot.SERIES_COLORS names them)."""
        return {"inserts": chart_points(self.inserts, origin), "response updates": chart_points(self.updates, origin),
                "lone commits": chart_points(self.commits, origin)}


class _Due:
    """The responses waiting for their moment, in the order they fall due."""

    def __init__(self):
        self.items: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.closed = self.flush_asked = False

    def put(self, due: float, request_id: str) -> None:
        with self.ready:
            self.items.append((due, request_id))
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()

    def ask_flush(self) -> None:
        with self.ready:
            self.flush_asked = True
            self.ready.notify()

    def take(self):
        """The next response once it is due, "flush" when asked, None when closed and done."""
        with self.ready:
            while True:
                if self.flush_asked:
                    self.flush_asked = False
                    return "flush"
                if self.items:
                    wait = self.items[0][0] - time.monotonic()
                    if wait <= 0:
                        return self.items.popleft()
                    self.ready.wait(wait)
                elif self.closed:
                    return None
                else:
                    self.ready.wait()


def _session(url: str, application_name: str = WRITER):
    return connect(url, options=f"-c statement_timeout={WRITER_STATEMENT_TIMEOUT}", application_name=application_name)


def _flush_statistics(cur) -> None:
    """This session's statistics (its row updates, its WAL) reported when the
    statement ends, not up to a second later (PostgreSQL 15+; before, they
    are not exact)."""
    try:
        cur.execute("SELECT pg_stat_force_next_flush()")
    except psycopg2.Error:
        pass


@dataclass
class _FlushAsked:
    """The responder asks another of the writer's sessions (the inserts', the
    lone commit's) to report its statistics too, and waits for it."""

    asked: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def ask_and_wait(self) -> None:
        self.done.clear()
        self.asked.set()
        self.done.wait(FLUSH_WAIT_SECONDS)  # an insert held by a lock cannot answer: go on without it

    def answer(self, cur) -> None:
        if self.asked.is_set():
            self.asked.clear()
            _flush_statistics(cur)
            self.done.set()


def _respond(url: str, due: _Due, updates: list, control, others: tuple[_FlushAsked, ...]) -> None:
    conn = _session(url)
    updated = 0
    with conn.cursor() as cur:
        while (item := due.take()) is not None:
            if item == "flush":
                # The benchmark subtracts our row updates from the table's
                # count, and our WAL from the server's, at this moment.
                _flush_statistics(cur)
                for other in others:
                    other.ask_and_wait()
                control.send(updated)
                continue
            at, request_id = item
            try:
                cur.execute(UPDATE_RESPONSE, traffic.response(uuid.UUID(request_id)))
                ok = cur.rowcount == 1  # none: its request was never recorded
            except psycopg2.Error:
                ok = False
            updated += ok
            updates.append((at, time.monotonic() - at, ok))
    conn.close()


def _commit_alone(url: str, stop, commits: list, flush: _FlushAsked) -> None:
    """COMMIT_ALONE every LONE_COMMIT_EVERY seconds until stopped, each timed from when it was sent."""
    conn = _session(url, LONE_COMMIT)
    with conn.cursor() as cur:
        while True:
            flush.answer(cur)
            sent = time.monotonic()
            try:
                cur.execute(COMMIT_ALONE)  # autocommit: the statement is its transaction
                ok = True
            except psycopg2.Error:
                ok = False
            commits.append((sent, time.monotonic() - sent, ok))
            if stop.wait(max(0.0, sent + LONE_COMMIT_EVERY - time.monotonic())):
                break
    conn.close()


def _listen(control, due: _Due) -> None:
    try:
        while control.recv() == "flush":
            due.ask_flush()
    except EOFError:
        pass


def _write(url: str, every: float, respond_after: float | None, conversations: list | None, lone_commit: bool,
           stop, stopped_at, control, results) -> None:
    written = Written(conversations=conversations)
    due_responses = _Due()
    inserts_flush, lone_flush = _FlushAsked(), _FlushAsked()
    lone = None
    if lone_commit:
        lone = threading.Thread(target=_commit_alone, args=(url, stop, written.commits, lone_flush))
        lone.start()
    responder = None
    if respond_after is not None:
        others = (inserts_flush, lone_flush) if lone else (inserts_flush,)
        responder = threading.Thread(target=_respond, args=(url, due_responses, written.updates, control, others))
        responder.start()
        threading.Thread(target=_listen, args=(control, due_responses), daemon=True).start()
    conn = _session(url)
    own = None
    with conn.cursor() as cur:
        due = time.monotonic()
        n = 0
        # Stopping, it still issues the inserts that fell due before the stop,
        # so a backlog left by a blocked insert is measured, not dropped.
        while not (stop.is_set() and due > stopped_at.value):
            inserts_flush.answer(cur)
            pause = due - time.monotonic()
            if pause > 0:
                stop.wait(pause)  # a stop during the pause ends the run unless this insert fell due first
                continue
            if conversations:
                conversation = conversations[n % len(conversations)]
            else:
                if n % NEW_CONVERSATION_EVERY == 0:
                    own = traffic.Conversation(str(uuid.uuid4()), WRITER_DOMAIN)
                conversation = own
            request_id = uuid.uuid4()
            try:
                cur.execute(INSERT_REQUEST_002, traffic.older_insert(request_id, conversation))
                ok = True
            except psycopg2.Error:
                ok = False
            written.inserts.append((due, time.monotonic() - due, ok))
            if ok:
                traffic.advance(conversation, request_id)
            if responder:
                due_responses.put(due + respond_after, str(request_id))
            due += every
            n += 1
    conn.close()
    due_responses.close()
    if responder:
        responder.join()
    if lone:
        lone.join()
    results.send(written)
    results.close()


class Writer:
    """The main process's handle on a running writer."""

    def __init__(self, control):
        self.control = control
        self.written = Written()

    def rows_updated(self) -> int:
        """How many rows the writer's response updates changed so far, after
        making sure the server's statistics count all of them, and all the
        WAL of its sessions."""
        self.control.send("flush")
        return self.control.recv()


@contextmanager
def writing(url: str, every: float, respond_after: float | None = None, conversations: list | None = None,
            lone_commit: bool = False):
    """A writer for the duration: an insert every `every` seconds, continuing
    conversations (else starting its own), with respond_after each request's
    response, and with lone_commit a commit alone every LONE_COMMIT_EVERY
    seconds. Yields a Writer; its .written holds what was written once the
    block is left."""
    context = multiprocessing.get_context("spawn")
    stop, stopped_at = context.Event(), context.Value("d", 0.0)
    receive, send = context.Pipe(duplex=False)
    ours, theirs = context.Pipe()
    process = context.Process(target=_write, args=(url, every, respond_after, conversations, lone_commit, stop,
                                                   stopped_at, theirs, send), daemon=True)
    process.start()
    writer = Writer(ours)
    try:
        time.sleep(SETTLE_SECONDS)
        yield writer
        time.sleep(SETTLE_SECONDS)
    finally:
        stopped_at.value = time.monotonic()
        stop.set()
        if receive.poll(120 + (respond_after or 0)):
            writer.written = receive.recv()
        process.join(10)
        ours.close()


# What the writer's sessions are doing while they run a statement: the kind
# of statement, and the wait event it is in (CPU when none).
WRITER_WAIT = """
    SELECT CASE WHEN query ~* '^\\s*INSERT' THEN 'insert' WHEN query ~* '^\\s*UPDATE' THEN 'update' ELSE 'other' END,
           coalesce(wait_event_type || ':' || wait_event, 'CPU')
      FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"""


@contextmanager
def sampling_waits(url: str, every: float = WAIT_SAMPLE_SECONDS, checkpointer: list | None = None):
    """For the duration, a Counter of what the writer's statements were
    waiting on, as "insert Lock:relation" (pg_stat_activity, sampled every
    `every` seconds, idle moments not counted): a Lock wait there is a write
    held by a lock, an IO or LWLock one a write waiting for the disk or the
    WAL like any commit. Given a list, the checkpointer's state is sampled
    with them into it (checkpointer.record)."""
    counts: Counter = Counter()
    # one round trip a sample, with the checkpointer or without it
    query = WRITER_WAIT if checkpointer is None else f"{WRITER_WAIT} UNION ALL {CHECKPOINTER_STATE}"

    def sample(cur) -> None:
        cur.execute(query, (WRITER,))
        at = time.monotonic()
        for kind, event in cur.fetchall():
            if kind == "checkpointer":
                record(checkpointer, at, event)
            else:
                counts[f"{kind} {event}"] += 1

    with ended(checkpointer), sampling_every(url, every, sample, "nexus-benchmark-sampler"):
        yield counts


def lock_waits(waits: dict, kind: str) -> int:
    """How many samples found a statement of kind ("insert", "update") waiting for a lock."""
    return sum(n for key, n in waits.items() if key.startswith(f"{kind} Lock:"))


def latency_stats(samples, start: float, end: float, excluded=()) -> dict:
    """p50, p99 and max latency (ms) and failures of the statements due in
    [start, end], leaving out those due in an excluded (start, end) interval."""
    window = [(lat, ok) for due, lat, ok in samples
              if start <= due <= end and not any(a <= due <= b for a, b in excluded)]
    latencies = sorted(lat * 1000 for lat, ok in window if ok)

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

    return {"count": len(window), "failed": sum(not ok for _, ok in window),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(latencies[-1], 2) if latencies else None}


def chart_points(samples, origin: float) -> list:
    """(seconds since origin, latency ms, ok) of each statement, for the chart and the JSON."""
    return [(round(due - origin, 4), round(lat * 1000, 3), ok) for due, lat, ok in samples]
