"""What the checkpointer was doing while the writer waited.

A checkpoint writes the buffers dirtied since the last one, spread over its
interval (Timeout:CheckpointWriteDelay between writes, IO:DataFileWrite and
IO:DataFileFlush in them), then fsyncs every file it wrote
(IO:DataFileSync); between checkpoints it waits (Activity:CheckpointerMain).
A standby's checkpointer does the same for what its replay dirtied, in a
restartpoint that begins as it replays a checkpoint. Sampled beside the
writer's waits, their states tell whether the proxy's slow commits fall in
one phase: the fsyncs of the pages a backfill dirtied (on a disk the WAL
shares), or the writes spread before them.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from contextlib import contextmanager

from .scratch import sampling_every

IDLE_CHECKPOINTER = "Activity:CheckpointerMain"
FSYNCING = "IO:DataFileSync"

# The checkpointer's state. A role that may not read other sessions' activity
# (pg_read_all_stats; a superuser may) sees their backend_type as null: no
# row, and nothing is sampled.
CHECKPOINTER_STATE = """
    SELECT 'checkpointer', coalesce(wait_event_type || ':' || wait_event, 'CPU')
      FROM pg_stat_activity WHERE backend_type = 'checkpointer'"""


def record(states: list, at: float, state: str | None) -> None:
    """Add a sample to states, a list of (time, state) at each change of
    state; None ends it (sampling stopped)."""
    if not states or states[-1][1] != state:
        states.append((at, state))


@contextmanager
def ended(states: list | None):
    """For the duration of a sampling into states: at its end, the last
    state seen ends too (record's None), so that it does not last for ever."""
    try:
        yield states
    finally:
        if states:
            record(states, time.monotonic(), None)


@contextmanager
def sampling(url: str, states: list, every: float):
    """For the duration, the checkpointer's state on the server at url (a
    standby's: its restartpoints) every `every` seconds, into states."""
    def sample(cur) -> None:
        cur.execute(CHECKPOINTER_STATE)
        for _, state in cur.fetchall():
            record(states, time.monotonic(), state)

    with ended(states), sampling_every(url, every, sample, "nexus-benchmark-checkpointer-sampler"):
        yield states


def merged(spans) -> list[tuple[float, float]]:
    """The (start, end) spans, sorted, overlapping ones joined."""
    joined: list[list[float]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return [(a, b) for a, b in joined]


def seconds_in(states: list, spans) -> Counter:
    """How long the checkpointer spent in each state within the spans, from
    states as record() keeps them (the time between samples counts for the
    state seen first)."""
    times = [at for at, _ in states]
    spent: Counter = Counter()
    for start, end in merged(spans):
        i = max(bisect.bisect_right(times, start) - 1, 0)
        while i < len(states) - 1 and times[i] < end:
            state = states[i][1]
            overlap = min(times[i + 1], end) - max(times[i], start)
            if state is not None and overlap > 0:
                spent[state] += overlap
            i += 1
    return spent


# Bins of the time from a moment to the end of the checkpoint under way (s):
# the last BEFORE_END[0] s of one, the next ones, and the rest (no end followed).
BEFORE_END = (1.0, 2.0, 4.0)


def ends(states: list) -> list[float]:
    """When each checkpoint (or a standby's restartpoint) ended: the
    checkpointer went back to waiting for the next."""
    return [at for (_, before), (at, after) in zip(states, states[1:])
            if before not in (None, IDLE_CHECKPOINTER) and after == IDLE_CHECKPOINTER]


def before_end(states: list, moments) -> list[float]:
    """The share of the moments in each bin of BEFORE_END by how long before
    the next end of a checkpoint they fell, and last the share further from one."""
    finished = ends(states)
    bins = [0] * (len(BEFORE_END) + 1)
    for at in moments:
        i = bisect.bisect_left(finished, at)
        left = finished[i] - at if i < len(finished) else float("inf")
        bins[bisect.bisect_left(BEFORE_END, left)] += 1
    total = sum(bins)
    return [round(n / total, 4) for n in bins] if total else []


def shares(spent: Counter) -> dict[str, float]:
    """Each state's share of the time, largest first."""
    total = sum(spent.values())
    return {state: round(seconds / total, 4) for state, seconds in spent.most_common()} if total else {}
