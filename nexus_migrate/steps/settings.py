"""The steps' numeric settings, read from the environment when a step runs:
NEXUS_LOCK_TIMEOUT_MS (default 100), NEXUS_LOCK_ATTEMPTS (default 10),
NEXUS_PROGRESS_SECONDS (default 5)."""

from __future__ import annotations

import os

from ..errors import OperatorError


def number_setting(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise OperatorError(f"{name}={value!r} is not a number") from None


def positive_setting(name: str, default: float, *, zero_ok: bool = False) -> float:
    value = number_setting(name, default)
    if value < 0 or (value == 0 and not zero_ok):
        raise OperatorError(f"{name}={value:g} must be {'zero or more' if zero_ok else 'more than zero'}")
    return value


def lock_timeout_ms() -> int:
    return int(number_setting("NEXUS_LOCK_TIMEOUT_MS", 100))


def lock_attempts() -> int:
    return max(1, int(number_setting("NEXUS_LOCK_ATTEMPTS", 10)))


def backoff_seconds(attempt: int) -> float:
    """Sleep after the attempt-th failure to get a lock: 0.2 s doubling to 5 s,
    so the default ten attempts span about half a minute."""
    return min(0.2 * 2 ** (attempt - 1), 5.0)


def progress_seconds() -> float:
    """How often a long index build or backfill prints how far it is."""
    return positive_setting("NEXUS_PROGRESS_SECONDS", 5)
